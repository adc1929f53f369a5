"""The simulated account: images, their actions and the account-wide feed.

Images and actions are kept as API-shaped dicts, exactly as they are served.
Side tables hold what the API never shows: whether a public image is a
distribution or an application, and the target region of each transfer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from inventory.simulator import catalog

log = logging.getLogger(__name__)

Json = dict[str, Any]

FIRST_ACTION_ID = 3_100_000_000
NOT_AVAILABLE = "The specified action type is not available."


class ActionRejected(Exception):
    """Raised when an image action request is refused, with DO's status and id."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


@dataclass(frozen=True)
class Pending:
    """An action started through the API that finishes at a monotonic deadline.

    `completed_at` is stamped when it starts: its start plus its duration, as
    DigitalOcean would report it, whenever the next request happens to come.
    """

    deadline: float
    errored: bool
    completed_at: str


@dataclass(frozen=True)
class ImageFilter:
    """The `GET /v2/images` filters; None means the filter was not given."""

    kind: str | None = None
    private: bool = False
    tag_name: str | None = None


@dataclass(eq=False, repr=False)
class Account:
    """One DigitalOcean account's images and actions, mutated in place."""

    images: dict[int, Json] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    actions: dict[int, Json] = field(default_factory=dict)
    image_actions: dict[int, list[int]] = field(default_factory=dict)
    owners: dict[int, int] = field(default_factory=dict)
    targets: dict[int, str] = field(default_factory=dict)
    pending: dict[int, Pending] = field(default_factory=dict)
    next_action_id: int = FIRST_ACTION_ID
    clock: datetime = datetime(2026, 6, 1, tzinfo=UTC)
    _feed: list[int] | None = field(default=None, init=False)
    _listings: dict[ImageFilter, list[Json]] = field(default_factory=dict, init=False)

    def touch(self) -> None:
        """Forget cached listings after images were added, removed or edited."""
        self._listings.clear()

    def listing(self, image_filter: ImageFilter) -> list[Json]:
        """The images `GET /v2/images` lists for these filters, by id ascending."""
        cached = self._listings.get(image_filter)
        if cached is None:
            cached = [
                self.images[image_id]
                for image_id in sorted(self.images)
                if self._matches(image_id, image_filter)
            ]
            self._listings[image_filter] = cached
        return cached

    def _matches(self, image_id: int, image_filter: ImageFilter) -> bool:
        image = self.images[image_id]
        if image_filter.private and image.get("public") is True:
            return False
        if image_filter.kind is not None and self.kinds.get(image_id) != (
            image_filter.kind
        ):
            return False
        if image_filter.tag_name is not None:
            return image_filter.tag_name in (image.get("tags") or [])
        return True

    def listing_all(self) -> list[Json]:
        """Every image, as an unfiltered `GET /v2/images` lists them."""
        return self.listing(ImageFilter())

    def actions_of(self, image_id: int, newest_first: bool = True) -> list[Json]:
        """An image's actions in the order served; KeyError for an unknown image."""
        if image_id not in self.images:
            raise KeyError(image_id)
        ids = self.image_actions.get(image_id, [])
        ordered = reversed(ids) if newest_first else iter(ids)
        return [self.actions[action_id] for action_id in ordered]

    def feed(self, newest_first: bool = True) -> list[Json]:
        """Every action of the account, image or not, ordered by id."""
        if self._feed is None:
            self._feed = sorted(self.actions)
        ordered = reversed(self._feed) if newest_first else iter(self._feed)
        return [self.actions[action_id] for action_id in ordered]

    def add_image(self, image: Json, kind: str | None = None) -> None:
        """Add or replace an image; `kind` marks a public one for the type filter."""
        image_id = int(image["id"])
        self.images[image_id] = image
        self.image_actions.setdefault(image_id, [])
        if kind is not None:
            self.kinds[image_id] = kind
        self.touch()

    def remove_image(self, image_id: int) -> None:
        """Remove an image; its actions stay in the account-wide feed."""
        self.images.pop(image_id, None)
        self.kinds.pop(image_id, None)
        self.image_actions.pop(image_id, None)
        self.touch()

    def add_action(self, action: Json, image_id: int | None) -> None:
        """Record an action, attached to `image_id` when it is an image action."""
        action_id = int(action["id"])
        if action_id not in self.actions:
            self._feed = None
        self.actions[action_id] = action
        self.next_action_id = max(self.next_action_id, action_id + 1)
        if image_id is not None and image_id in self.images:
            ids = self.image_actions.setdefault(image_id, [])
            if action_id not in ids:
                ids.append(action_id)
                ids.sort()
            self.owners[action_id] = image_id

    def start_action(
        self, image_id: int, body: object, started_at: str, pending: Pending
    ) -> Json:
        """Start a transfer or convert, as `POST /v2/images/{id}/actions` does."""
        image = self._actionable_image(image_id)
        action_type, region = _parse_action_body(body)
        _check_allowed(image, action_type, region)

        slug = region or _first_region(image)
        action: Json = {
            "id": self.next_action_id,
            "status": "in-progress",
            "type": action_type,
            "started_at": started_at,
            "completed_at": None,
            "resource_id": image_id,
            "resource_type": "image",
            "region": catalog.region_object(slug) if slug else None,
            "region_slug": slug,
        }
        self.add_action(action, image_id)
        if action_type == "transfer" and region is not None:
            self.targets[action["id"]] = region
        self.pending[action["id"]] = pending
        log.debug(
            "Started %s action %s on image %s", action_type, action["id"], image_id
        )
        return action

    def _actionable_image(self, image_id: int) -> Json:
        image = self.images.get(image_id)
        if image is None or image.get("public") is True:
            raise ActionRejected(
                404, "not_found", "The resource you requested could not be found."
            )
        return image

    def settle(self, now: float) -> int:
        """Finish the API-started actions whose deadline has passed."""
        due = [aid for aid, item in self.pending.items() if item.deadline <= now]
        for action_id in due:
            item = self.pending.pop(action_id)
            self.finish(action_id, item.errored, item.completed_at)
        return len(due)

    def finish(self, action_id: int, errored: bool, completed_at: str) -> None:
        """Complete or error an action; a completed one takes effect on its image."""
        action = self.actions[action_id]
        action["status"] = "errored" if errored else "completed"
        action["completed_at"] = completed_at
        self.pending.pop(action_id, None)
        if not errored:
            self._take_effect(action_id, action)

    def _take_effect(self, action_id: int, action: Json) -> None:
        image_id = self.owners.get(action_id)
        image = None if image_id is None else self.images.get(image_id)
        if image is None:
            return
        if action.get("type") == "transfer":
            target = self.targets.get(action_id) or action.get("region_slug")
            regions = image.setdefault("regions", [])
            if target and target not in regions:
                regions.append(target)
        elif action.get("type") == "convert" and image.get("type") == "backup":
            image["type"] = "snapshot"
        self.touch()

    def in_progress(self) -> list[int]:
        """Ids of actions still in progress that no API deadline will finish."""
        return [
            action_id
            for action_id, action in self.actions.items()
            if action.get("status") == "in-progress" and action_id not in self.pending
        ]


def snapshot(items: Iterable[Json]) -> list[Json]:
    """Deep copies, so callers cannot change the served data by accident."""
    return [copy.deepcopy(item) for item in items]


def _parse_action_body(body: object) -> tuple[str, str | None]:
    if not isinstance(body, dict):
        raise ActionRejected(
            422, "unprocessable_entity", "The request body must be a JSON object."
        )
    action_type = body.get("type")
    if action_type not in ("transfer", "convert"):
        # A missing type gives this 404 too (a 2017 field report, doctl#196).
        raise ActionRejected(404, "not_found", NOT_AVAILABLE)
    region = body.get("region")
    if not isinstance(region, str) or region not in catalog.REGIONS:
        if action_type == "transfer":
            raise ActionRejected(
                422,
                "unprocessable_entity",
                "You specified an invalid region for Image Transfer.",
            )
        region = None
    return str(action_type), region


def _check_allowed(image: Json, action_type: str, region: str | None) -> None:
    if str(image.get("status", "")).lower() != "available":
        raise ActionRejected(
            422, "unprocessable_entity", "The image is not available yet."
        )
    if action_type == "convert" and image.get("type") != "backup":
        raise ActionRejected(
            422, "unprocessable_entity", "Only backups can be converted to snapshots."
        )
    if action_type == "transfer" and region in (image.get("regions") or []):
        raise ActionRejected(
            422,
            "unprocessable_entity",
            "The image is already available in that region.",
        )


def _first_region(image: Json) -> str | None:
    regions = image.get("regions") or []
    return str(regions[0]) if regions else None


def now_stamp(after_s: float = 0.0) -> str:
    """The wall clock, `after_s` from now, as DigitalOcean writes it: RFC 3339,
    whole seconds, `Z`."""
    at = datetime.now(UTC) + timedelta(seconds=after_s)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
