"""Build an account from a directory of captured DigitalOcean JSON responses.

Files holding `images` / `image` give images, deduplicated by id (the last
copy, in file-name order, wins). Files holding `actions` / `action` give
actions: an image action joins its image when that image exists, and every
action joins the account-wide feed. Anything else is skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from inventory.simulator import catalog
from inventory.simulator.account import FIRST_ACTION_ID, Account, Json

log = logging.getLogger(__name__)


def load_account(directory: Path) -> Account:
    """Read every `*.json` file under `directory` into a new account."""
    if not directory.is_dir():
        raise ValueError(f"Simulator data directory {directory} is not a directory.")
    images: dict[int, Json] = {}
    actions: dict[int, Json] = {}
    for path in sorted(directory.rglob("*.json")):
        payload = _read(path)
        for image in _objects(payload, "images", "image"):
            images[image["id"]] = image
        for action in _objects(payload, "actions", "action"):
            actions[action["id"]] = action

    account = Account()
    for image_id in sorted(images):
        account.add_image(images[image_id], image_kind(images[image_id]))
    for action_id in sorted(actions):
        action = actions[action_id]
        account.add_action(action, _image_id(action, account))
    account.next_action_id = max(account.next_action_id, FIRST_ACTION_ID)
    log.info(
        "Loaded %d images and %d actions from %s", len(images), len(actions), directory
    )
    return account


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
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.debug("Skipping %s: %s", path, exc)
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


def _image_id(action: Json, account: Account) -> int | None:
    if action.get("resource_type") not in (None, "image"):
        return None
    resource_id = action.get("resource_id")
    if isinstance(resource_id, int) and resource_id in account.images:
        return resource_id
    return None
