"""One deterministic step of change: the account moves on between two syncs.

Each step advances the account's own clock, finishes some running actions,
adds and removes images, starts new actions and edits a few images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from inventory.simulator import catalog
from inventory.simulator.account import Account
from inventory.simulator.generate import (
    Planned,
    droplet_history,
    image_action,
    image_history,
    private_image,
    record,
    stamp,
)

STEP = timedelta(minutes=10)


@dataclass(frozen=True)
class ChurnReport:
    """What one churn step changed."""

    images_added: int
    images_removed: int
    images_updated: int
    actions_added: int
    actions_finished: int


def churn_account(
    account: Account, rng: random.Random, action_error_share: float
) -> ChurnReport:
    """Apply one step of change to `account`, drawing only from `rng`."""
    account.clock += STEP
    finished = _finish_running(account, rng, action_error_share)
    removed = _remove_images(account, rng)
    added, plans = _add_images(account, rng)
    plans.extend(_start_actions(account, rng))
    if rng.random() < 0.3:
        plans.extend(droplet_history(rng, 1, account.clock - STEP, account.clock))
    record(account, rng, plans)
    updated = _edit_images(account, rng)
    account.touch()

    return ChurnReport(
        images_added=added,
        images_removed=removed,
        images_updated=updated,
        actions_added=len(plans),
        actions_finished=finished,
    )


def _finish_running(account: Account, rng: random.Random, error_share: float) -> int:
    running = sorted(account.in_progress())
    done = [action_id for action_id in running if rng.random() < 0.6]
    for action_id in done:
        errored = rng.random() < error_share
        account.finish(action_id, errored, stamp(rng, account.clock))
    return len(done)


def _private_ids(account: Account) -> list[int]:
    return sorted(
        image_id
        for image_id, image in account.images.items()
        if image.get("public") is not True
    )


def _remove_images(account: Account, rng: random.Random) -> int:
    candidates = _private_ids(account)
    count = min(len(candidates), rng.randint(0, max(1, len(account.images) // 100)))
    for image_id in rng.sample(candidates, count):
        account.remove_image(image_id)
    return count


def _add_images(account: Account, rng: random.Random) -> tuple[int, list[Planned]]:
    count = rng.randint(1, max(1, len(account.images) // 50))
    next_id = max(account.images, default=100_000_000)
    plans: list[Planned] = []
    for _ in range(count):
        next_id += rng.randint(1, 5_000)
        created = account.clock - timedelta(seconds=rng.randint(1, 500))
        image = private_image(rng, next_id, created)
        account.add_image(image)
        plans.extend(
            image_history(rng, image, created, rng.randint(0, 2), account.clock)
        )
    return count, plans


def _start_actions(account: Account, rng: random.Random) -> list[Planned]:
    candidates = [
        image_id
        for image_id in _private_ids(account)
        if str(account.images[image_id].get("status", "")).lower() == "available"
    ]
    count = min(len(candidates), rng.randint(1, max(1, len(account.images) // 50)))
    started = account.clock - timedelta(seconds=rng.randint(1, 300))
    return [
        image_action(rng, account.images[image_id], started, "in-progress")
        for image_id in rng.sample(candidates, count)
    ]


def _edit_images(account: Account, rng: random.Random) -> int:
    candidates = _private_ids(account)
    count = min(len(candidates), rng.randint(1, 3))
    for image_id in rng.sample(candidates, count):
        image = account.images[image_id]
        if rng.random() < 0.5:
            image["name"] = f"{image.get('name') or 'image'}-v{rng.randint(2, 9)}"
        else:
            image["tags"] = sorted(rng.sample(catalog.TAGS, rng.randint(0, 2)))
    return count
