"""DigitalOcean's paging: `page` / `per_page`, `links.pages` and `meta.total`.

`links.pages` holds only the links that make sense, as absolute URLs that
keep the request's filters and `per_page`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yarl import URL

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class PageRequest:
    """Which page was asked for, after defaults and the cap."""

    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    def slice(self, items: Sequence[Any]) -> list[Any]:
        """The items on this page; empty beyond the last page."""
        start = (self.page - 1) * self.per_page
        return list(items[start : start + self.per_page])

    def pages(self, total: int) -> int:
        """How many pages `total` items fill (at least one)."""
        return max(1, math.ceil(total / self.per_page))


def page_request(query: Mapping[str, str]) -> PageRequest:
    """Read `page` and `per_page`; bad or missing values fall back to defaults.

    What DO does with `per_page` > 200, 0 or junk is unconfirmed: junk and
    values below 1 get the default, and anything above 200 is capped.
    """
    page = _positive(query.get("page"), 1)
    per_page = min(_positive(query.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
    return PageRequest(page, per_page)


def _positive(raw: str | None, default: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if value >= 1 else default


def page_links(
    url: URL,
    request: PageRequest,
    total: int,
    carry: Mapping[str, str],
    repeat_next: bool = False,
) -> dict[str, str]:
    """The `links.pages` object for one page of `total` items at `url`."""
    last = request.pages(total)
    page = request.page
    targets: dict[str, int] = {}
    if page > 1:
        targets["first"] = 1
        targets["prev"] = min(page - 1, last)
    if page < last:
        targets["next"] = page + 1
        targets["last"] = last
    if repeat_next and "next" in targets and page == min(3, last - 1):
        # Fault: this page's `next` points back at a page already served.
        targets["next"] = max(1, page - 1)
    return {
        name: str(_page_url(url, target, request.per_page, carry))
        for name, target in targets.items()
    }


def _page_url(url: URL, page: int, per_page: int, carry: Mapping[str, str]) -> URL:
    return url.with_query({"page": str(page), "per_page": str(per_page), **carry})


def page_body(
    key: str,
    items: Sequence[Any],
    url: URL,
    request: PageRequest,
    carry: Mapping[str, str],
    repeat_next: bool = False,
) -> dict[str, Any]:
    """A whole list response: the page's items, `links` and `meta`."""
    links = page_links(url, request, len(items), carry, repeat_next)
    return {
        key: request.slice(items),
        "links": {"pages": links},
        "meta": {"total": len(items)},
    }
