"""Build an account from a directory of captured DigitalOcean JSON responses.

Files holding `images` / `image` give images, deduplicated by id (the last
copy, in file-name order, wins). Files holding `actions` / `action` give
actions; every action joins the account-wide feed, and an image action joins
its image's list when that image exists. Which image's list a capture answered
is read from its `links` URLs (`/v2/images/{id}/actions?page=2`), else from its
path (`images/{id}/actions.json`, `image-{id}-actions-1.json`), else from the
action's `resource_id`, which can be null. Anything else is skipped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inventory.simulator import catalog
from inventory.simulator.account import FIRST_ACTION_ID, Account, Json

log = logging.getLogger(__name__)

# `/v2/images/7555620/actions` in a link; `images/7555620/actions` or
# `image-7555620-actions` in a capture's path.
IMAGE_ACTIONS_URL = re.compile(r"/v2/images/(\d+)/actions")
IMAGE_ACTIONS_PATH = re.compile(r"images?[/_-](\d+)[/_-]actions", re.IGNORECASE)


def load_account(directory: Path) -> Account:
    """Read every `*.json` file under `directory` into a new account."""
    if not directory.is_dir():
        raise ValueError(f"Simulator data directory {directory} is not a directory.")
    captures = _Captures()
    for path in sorted(directory.rglob("*.json")):
        captures.add(_read(path), path.relative_to(directory))
    if captures.files == 0:
        raise ValueError(
            f"No *.json file under {directory} holds DigitalOcean images (an "
            '"images" list or an "image" object); point --from-dir at captured '
            "GET /v2/images responses."
        )
    images, actions = captures.images, captures.actions
    account = Account()
    for image_id in sorted(images):
        account.add_image(images[image_id], image_kind(images[image_id]))
    for action_id in sorted(actions):
        action = actions[action_id]
        owner = captures.listed_under.get(action_id)
        if owner not in account.images:
            owner = _image_id(action, account)
        account.add_action(action, owner)
    account.next_action_id = max(account.next_action_id, FIRST_ACTION_ID)
    log.info(
        "Loaded %d images and %d actions from %s", len(images), len(actions), directory
    )
    return account


@dataclass
class _Captures:
    """What the captured responses hold, by id (a later file's copy wins)."""

    images: dict[int, Json] = field(default_factory=dict)
    actions: dict[int, Json] = field(default_factory=dict)
    listed_under: dict[int, int] = field(default_factory=dict)  # action -> image
    files: int = 0  # files holding an image or a listing of them

    def add(self, payload: object, path: Path) -> None:
        if isinstance(payload, dict) and ("images" in payload or "image" in payload):
            self.files += 1
        for image in _objects(payload, "images", "image"):
            self.images[image["id"]] = image
        owner = _listing_image_id(payload, path)
        for action in _objects(payload, "actions", "action"):
            self.actions[action["id"]] = action
            if owner is not None:
                self.listed_under[action["id"]] = owner


def image_kind(image: Json) -> str | None:
    """Which `type` filter a public image answers to; None for a private one."""
    if image.get("public") is not True:
        return None
    slug = str(image.get("slug") or "").lower()
    if not slug or slug.startswith(catalog.DISTRIBUTION_PREFIXES):
        return "distribution"
    return "application"


def _read(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        log.warning("Skipping %s, which is not readable JSON: %s", path, exc)
        return None


def _objects(payload: object, many: str, one: str) -> Iterator[Json]:
    """The objects with an integer id under `many` (a list) or `one` (an object)."""
    if not isinstance(payload, dict):
        return
    found = payload.get(many)
    items = found if isinstance(found, list) else [payload.get(one)]
    for item in items:
        if isinstance(item, dict) and _has_int_id(item):
            yield item


def _has_int_id(item: Json) -> bool:
    value = item.get("id")
    return isinstance(value, int) and not isinstance(value, bool)


def _listing_image_id(payload: object, path: Path) -> int | None:
    """The image whose action list this capture answered, when it tells."""
    links = payload.get("links") if isinstance(payload, dict) else None
    pages = links.get("pages") if isinstance(links, dict) else None
    if isinstance(pages, dict):
        for url in pages.values():
            match = IMAGE_ACTIONS_URL.search(str(url))
            if match:
                return int(match.group(1))
    match = IMAGE_ACTIONS_PATH.search(path.as_posix())
    return int(match.group(1)) if match else None


def _image_id(action: Json, account: Account) -> int | None:
    if action.get("resource_type") not in (None, "image"):
        return None
    resource_id = action.get("resource_id")
    if isinstance(resource_id, int) and resource_id in account.images:
        return resource_id
    return None
