"""Typed records for DigitalOcean images and actions, parsed without I/O.

The API's model marks no field required, so every field but `id` may be null or
absent; parsing tolerates that and keeps the whole object in `raw`.
"""

from __future__ import annotations

import logging
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

JSON = Any
T = TypeVar("T")


class PayloadError(ValueError):
    """An API object lacks what we cannot do without (an integer `id`)."""


@dataclass(frozen=True, slots=True)
class Image:
    """One entry of `GET /v2/images`."""

    id: int
    name: str | None
    type: str | None
    distribution: str | None
    slug: str | None
    public: bool | None
    regions: list[str]
    created_at: datetime | None
    min_disk_size: int | None
    size_gigabytes: float | None
    description: str | None
    tags: list[str] | None
    status: str | None
    error_message: str | None
    raw: dict[str, JSON]

    @property
    def region_slugs(self) -> list[str]:
        """The image's regions, duplicates removed, in their first order."""
        return list(dict.fromkeys(self.regions))


@dataclass(frozen=True, slots=True)
class Action:
    """One entry of `GET /v2/images/{image_id}/actions` or `GET /v2/actions`."""

    id: int
    status: str | None
    type: str | None
    started_at: datetime | None
    completed_at: datetime | None
    resource_id: int | None
    resource_type: str | None
    region: JSON
    region_slug: str | None
    raw: dict[str, JSON]


def parse_image(obj: object) -> Image:
    """Build an Image from one API object; raise PayloadError if it has no id."""
    data = _require_object(obj, "image")
    return Image(
        id=_require_id(data, "image"),
        name=_optional(data, "name", str),
        type=_optional(data, "type", str),
        distribution=_optional(data, "distribution", str),
        slug=_optional(data, "slug", str),
        public=_optional(data, "public", bool),
        regions=_strings(data, "regions") or [],
        created_at=parse_timestamp(data.get("created_at")),
        min_disk_size=_checked(data, "min_disk_size", _int32),
        size_gigabytes=_checked(data, "size_gigabytes", _optional_float),
        description=_optional(data, "description", str),
        tags=_strings(data, "tags"),
        status=_optional(data, "status", str),
        error_message=_optional(data, "error_message", str),
        raw=data,
    )


def parse_action(obj: object) -> Action:
    """Build an Action from one API object; raise PayloadError if it has no id."""
    data = _require_object(obj, "action")
    return Action(
        id=_require_id(data, "action"),
        status=_optional(data, "status", str),
        type=_optional(data, "type", str),
        started_at=parse_timestamp(data.get("started_at")),
        completed_at=parse_timestamp(data.get("completed_at")),
        resource_id=_checked(data, "resource_id", _int64),
        resource_type=_optional(data, "resource_type", str),
        region=data.get("region"),
        region_slug=_optional(data, "region_slug", str),
        raw=data,
    )


def parse_timestamp(value: object) -> datetime | None:
    """Parse RFC 3339 (fractions, `Z` or an offset) or Unix seconds, as UTC.

    A value that is not a timestamp gives None: the raw object still holds it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # far out of range, or NaN
            logger.warning("Kept an unreadable timestamp %r only in raw", value)
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        logger.warning("Kept an unreadable timestamp %r only in raw", value)
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _require_object(obj: object, kind: str) -> dict[str, JSON]:
    if not isinstance(obj, dict):
        raise PayloadError(f"An {kind} in the API's answer is not a JSON object.")
    return obj


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # a BIGINT column's range


def _require_id(data: dict[str, JSON], kind: str) -> int:
    value = _optional_int(data.get("id"))
    if value is None:
        raise PayloadError(
            f"An {kind} in the API's answer has no integer id: {data.get('id')!r}."
        )
    if not INT64_MIN <= value <= INT64_MAX:
        raise PayloadError(
            f"An {kind} in the API's answer has an id beyond 64 bits: {value}."
        )
    return value


def _optional(data: dict[str, JSON], key: str, kind: type[T]) -> T | None:
    value = data.get(key)
    if isinstance(value, kind):
        return value
    _odd(key, value)
    return None


def _checked(
    data: dict[str, JSON], key: str, convert: Callable[[object], T | None]
) -> T | None:
    value = data.get(key)
    converted = convert(value)
    if converted is None:
        _odd(key, value)
    return converted


_warned: set[tuple[str, str]] = set()


def _odd(key: str, value: object) -> None:
    """Say once per field and type that a value was not what the API documents;
    the column is left NULL and `raw` keeps the value as it came."""
    if value is None:
        return
    seen = (key, type(value).__name__)
    if seen not in _warned:
        _warned.add(seen)
        logger.warning(
            "Field %r came as %s %s, not the documented type: raw keeps it as "
            "it came, its column does not (said once per field and type)",
            key,
            type(value).__name__,
            reprlib.repr(value),
        )


def _optional_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int32(value: object) -> int | None:
    """An INTEGER column's value; one beyond its range stays only in raw."""
    number = _optional_int(value)
    return number if number is not None and -(2**31) <= number < 2**31 else None


def _int64(value: object) -> int | None:
    """A BIGINT column's value; one beyond its range stays only in raw."""
    number = _optional_int(value)
    return number if number is not None and INT64_MIN <= number <= INT64_MAX else None


def _optional_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _strings(data: dict[str, JSON], key: str) -> list[str] | None:
    value = data.get(key)
    if not isinstance(value, list):
        _odd(key, value)
        return None
    strings = [item for item in value if isinstance(item, str)]
    if len(strings) < len(value):
        _odd(f"{key}[]", next(item for item in value if not isinstance(item, str)))
    return strings
