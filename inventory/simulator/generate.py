"""Deterministic generation of an account: images, image actions, droplet actions.

The same seed gives the same account. The shapes follow DigitalOcean's own
quirks (see do-api.md, section 7): nullable and missing fields, duplicate
regions, NEW custom images, ids above 2**31 and a few fractional timestamps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from inventory.simulator import catalog
from inventory.simulator.account import FIRST_ACTION_ID, Account, Json

EARLIEST = datetime(2014, 6, 1, tzinfo=UTC)
LATEST = datetime(2026, 6, 1, tzinfo=UTC)
BIG_ID = 2**31
BIG_ID_SHARE = 0.1
UP_REGIONS = [slug for slug, (_, up) in catalog.REGIONS.items() if up]


@dataclass(frozen=True)
class Planned:
    """An action waiting for its id: ids are handed out in order of start time."""

    started: datetime
    action: Json
    image_id: int | None
    target: str | None


def generate_account(
    images: int, seed: int, actions_per_image: float, private_share: float
) -> Account:
    """Build the whole account for `images` images from `seed`."""
    rng = random.Random(seed)
    account = Account(clock=LATEST)
    image_ids = _image_ids(rng, images)
    public = set(rng.sample(range(images), round(images * (1 - private_share))))
    slugs = _public_slugs()

    plans: list[Planned] = []
    for rank, image_id in enumerate(image_ids):
        created = EARLIEST + (LATEST - EARLIEST) * (rank + rng.random()) / max(
            images, 1
        )
        if rank in public:
            kind, image = public_image(rng, image_id, created, slugs)
            account.add_image(image, kind)
            continue
        image = private_image(rng, image_id, created)
        account.add_image(image)
        count = round(rng.uniform(0, 2 * actions_per_image))
        plans.extend(image_history(rng, image, created, count, LATEST))
    droplet_count = len(plans) // 4 + (1 if images else 0)
    plans.extend(droplet_history(rng, droplet_count, EARLIEST, LATEST))
    record(account, rng, plans)
    return account


def record(account: Account, rng: random.Random, plans: list[Planned]) -> None:
    """Give planned actions ids in start order, with gaps, and store them."""
    next_id = max(account.next_action_id, FIRST_ACTION_ID)
    for plan in sorted(plans, key=lambda item: item.started):
        plan.action["id"] = next_id
        account.add_action(plan.action, plan.image_id)
        if plan.target is not None:
            account.targets[next_id] = plan.target
        next_id += rng.randint(1, 40)


def _image_ids(rng: random.Random, count: int) -> list[int]:
    """Unique ascending ids: most near 10**7..10**8, the newest above 2**31."""
    big = max(1, round(count * BIG_ID_SHARE)) if count else 0
    small_ids = rng.sample(range(5_000_000, 500_000_000), count - big)
    big_ids = rng.sample(range(BIG_ID + 1, BIG_ID + 400_000_000), big)
    return sorted(small_ids) + sorted(big_ids)


def _public_slugs() -> dict[str, Iterator[tuple[str, str, str]]]:
    return {"distribution": _distribution_slugs(), "application": _app_slugs()}


def _distribution_slugs() -> Iterator[tuple[str, str, str]]:
    round_ = 0
    while True:
        for distribution, stem, versions, name_format in catalog.DISTRIBUTIONS:
            for version in versions:
                slug = f"{stem}-{version}-x64" + (f"-r{round_}" if round_ else "")
                yield distribution, slug, name_format.format(version.replace("-", "."))
        round_ += 1


def _app_slugs() -> Iterator[tuple[str, str, str]]:
    round_ = 0
    while True:
        for app in catalog.APPLICATIONS:
            for base in catalog.APPLICATION_BASES:
                slug = f"{app}-{base}" + (f"-r{round_}" if round_ else "")
                name = f"{app.replace('-', ' ').title()} on Ubuntu {base}"
                yield "Ubuntu", slug, name
        round_ += 1


def public_image(
    rng: random.Random,
    image_id: int,
    created: datetime,
    slugs: dict[str, Iterator[tuple[str, str, str]]],
) -> tuple[str, Json]:
    """A public distribution or application image, with a real-looking slug."""
    kind = "distribution" if rng.random() < 0.65 else "application"
    distribution, slug, name = next(slugs[kind])
    image_type = "base" if kind == "distribution" and rng.random() < 0.3 else "snapshot"
    count = rng.randint(len(UP_REGIONS) - 4, len(UP_REGIONS))
    image: Json = {
        "id": image_id,
        "name": name,
        "distribution": distribution,
        "slug": slug,
        "public": True,
        "regions": rng.sample(UP_REGIONS, count),
        "created_at": stamp(rng, created),
        "type": image_type,
        "min_disk_size": rng.choice((10, 15, 20, 25, 50)),
        "size_gigabytes": round(rng.uniform(0.8, 6.0), 2),
        "description": rng.choice(("", f"{name} ({distribution})")),
        "tags": [],
        "status": "available",
        "error_message": "",
    }
    return kind, image


def private_image(rng: random.Random, image_id: int, created: datetime) -> Json:
    """A user's snapshot, backup or custom image (sometimes a NEW custom one)."""
    image_type = rng.choices(("snapshot", "backup", "custom"), (55, 25, 20))[0]
    if image_type == "custom" and rng.random() < 0.25:
        return _new_custom_image(rng, image_id, created)

    regions = rng.sample(catalog.REGION_SLUGS, rng.choice((1, 1, 1, 2, 3)))
    if rng.random() < 0.03:
        regions.append(regions[0])
    image: Json = {
        "id": image_id,
        "name": _private_name(rng, image_type, created),
        "distribution": rng.choice(catalog.PRIVATE_DISTRIBUTIONS),
        "slug": None,
        "public": False,
        "regions": regions,
        "created_at": stamp(rng, created),
        "type": image_type,
        "min_disk_size": rng.choice((20, 25, 50, 80, 160)),
        "size_gigabytes": round(rng.uniform(0.5, 60.0), 2),
        "description": "",
        "tags": _tags(rng),
        "status": "available",
        "error_message": "",
    }
    _blur(rng, image)
    return image


def _new_custom_image(rng: random.Random, image_id: int, created: datetime) -> Json:
    """Shaped like the spec's new custom image: no slug, public or sizes."""
    return {
        "created_at": stamp(rng, created),
        "description": rng.choice(catalog.DESCRIPTIONS),
        "distribution": rng.choice(("Ubuntu", "Debian", "Unknown")),
        "error_message": "",
        "id": image_id,
        "name": rng.choice(("ubuntu-18.04-minimal", "alpine-3.20", "talos-1.8")),
        "regions": [],
        "type": "custom",
        "tags": _tags(rng) or [],
        "status": rng.choice(("NEW", "NEW", "NEW", "new")),
    }


def _private_name(rng: random.Random, image_type: str, created: datetime) -> str:
    host = f"{rng.choice(catalog.HOSTS)}-{rng.randint(1, 12):02d}"
    if image_type == "backup":
        return f"{host} {created:%Y-%m-%d %H:%M}"
    if image_type == "custom":
        return f"{host}-custom-{created:%Y%m%d}"
    return f"{host}-{int(created.timestamp())}"


def _tags(rng: random.Random) -> list[str] | None:
    draw = rng.random()
    if draw < 0.1:
        return None
    if draw < 0.6:
        return []
    return sorted(rng.sample(catalog.TAGS, rng.randint(1, 2)))


def _blur(rng: random.Random, image: Json) -> None:
    """Null or drop optional fields in realistic shares."""
    if rng.random() < 0.05:
        image["min_disk_size"] = None
    if rng.random() < 0.05:
        image["size_gigabytes"] = None
    draw = rng.random()
    if draw < 0.1:
        del image["description"]
    elif draw < 0.15:
        image["description"] = None
    elif draw < 0.35:
        image["description"] = rng.choice(catalog.DESCRIPTIONS)
    draw = rng.random()
    if draw < 0.08:
        del image["error_message"]
    elif draw < 0.12:
        image["error_message"] = " "
    if rng.random() < 0.03:
        del image["type"]


def image_history(
    rng: random.Random, image: Json, created: datetime, count: int, until: datetime
) -> list[Planned]:
    """`count` past actions of a private image; only the newest may be running."""
    if count == 0 or str(image.get("status", "")).lower() != "available":
        return []
    span = max((until - created).total_seconds(), 60.0)
    starts = sorted(
        created + timedelta(seconds=rng.uniform(0, span)) for _ in range(count)
    )
    plans = []
    for index, started in enumerate(starts):
        newest = index == count - 1
        status = _status(rng, running_allowed=newest)
        plans.append(image_action(rng, image, started, status))
    return plans


def _status(rng: random.Random, running_allowed: bool) -> str:
    draw = rng.random()
    if running_allowed and draw < 0.12:
        return "in-progress"
    return "errored" if draw > 0.9 else "completed"


def image_action(
    rng: random.Random, image: Json, started: datetime, status: str
) -> Planned:
    """One transfer or convert action of an image, with DO's region quirks."""
    convertible = image.get("type") in ("snapshot", "backup")
    action_type = "convert" if convertible and rng.random() < 0.25 else "transfer"
    regions = image.get("regions") or []
    if status == "completed" and regions:
        target = str(rng.choice(regions))
    else:
        target = rng.choice(catalog.REGION_SLUGS)

    action: Json = {
        "id": 0,
        "status": status,
        "type": action_type,
        "started_at": stamp(rng, started),
        "completed_at": _completed_at(rng, started, status),
        "resource_id": None if rng.random() < 0.02 else image["id"],
        "resource_type": "image",
    }
    if status == "in-progress" and rng.random() < 0.3:
        del action["completed_at"]
    action.update(_region_fields(rng, target))
    return Planned(started, action, int(image["id"]), target)


def _completed_at(rng: random.Random, started: datetime, status: str) -> str | None:
    if status == "in-progress":
        return None
    return stamp(rng, started + timedelta(seconds=rng.randint(20, 900)))


def _region_fields(rng: random.Random, slug: str) -> dict[str, Any]:
    """`region` as a full object, `{}`, null or absent; `region_slug` or null."""
    draw = rng.random()
    if draw < 0.75:
        return {
            "region": catalog.region_object(slug),
            "region_slug": slug if rng.random() < 0.95 else None,
        }
    if draw < 0.87:
        return {"region": {}, "region_slug": rng.choice((slug, None))}
    if draw < 0.97:
        return {"region": None, "region_slug": None}
    return {}


def droplet_history(
    rng: random.Random, count: int, earliest: datetime, latest: datetime
) -> list[Planned]:
    """Non-image actions that share the account-wide feed."""
    plans = []
    for _ in range(count):
        started = earliest + (latest - earliest) * rng.random()
        slug = rng.choice(catalog.REGION_SLUGS)
        action: Json = {
            "id": 0,
            "status": "completed",
            "type": rng.choice(catalog.DROPLET_ACTION_TYPES),
            "started_at": stamp(rng, started),
            "completed_at": stamp(rng, started + timedelta(seconds=rng.randint(5, 90))),
            "resource_id": rng.randint(3_000_000, 500_000_000),
            "resource_type": "droplet",
            "region": catalog.region_object(slug),
            "region_slug": slug,
        }
        plans.append(Planned(started, action, None, None))
    return plans


def stamp(rng: random.Random, moment: datetime) -> str:
    """RFC 3339 in UTC: mostly whole seconds with `Z`, a few with a fraction."""
    whole = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if rng.random() < 0.04:
        return f"{whole}.{rng.randint(0, 999_999_999):09d}Z"
    return f"{whole}Z"
