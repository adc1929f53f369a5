"""The DigitalOcean API client: aiohttp, paging, retries and rate pacing.

HTTP-library errors are translated here, once, into the project's own; the
token goes only into the Authorization header, and only to the base URL's host.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from inventory import __version__, logs
from inventory.config import Settings
from inventory.errors import (
    APIError,
    AuthError,
    IncompleteListingError,
    NotFoundError,
)
from inventory.ratelimit import Budget, Headers, RateLimiter

logger = logging.getLogger(__name__)

_ID_SEGMENT = re.compile(r"/[0-9]+(?=/|$)")
MAX_RATE_LIMITED = 30  # 429s one request may meet before the run gives up


@dataclass(frozen=True)
class Page:
    """One page of a listing: its items and the `meta.total` it announced."""

    items: list[Any]
    total: int | None
    url: str


class RetryableError(APIError):
    """A failure worth another try: 429, 5xx, a dropped connection, a timeout."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        headers: Headers | None = None,
        sequence: int | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.headers = headers
        self.sequence = sequence  # the limiter's number for the refused request


class DigitalOceanClient:
    """Reads images and image actions; counts what it sent and received."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        limiter: RateLimiter,
    ) -> None:
        self._session = session
        self._base = urlsplit(settings.api.url)
        self._api = settings.api
        self.limiter = limiter
        self.requests = 0
        self.responses: Counter[tuple[str, int | str]] = Counter()

    def __repr__(self) -> str:
        return f"DigitalOceanClient(url={self._api.url!r})"

    async def fetch_image_pages(
        self, filters: Mapping[str, str] | None = None
    ) -> AsyncIterator[Page]:
        """Walk `GET /v2/images` page by page; see `iter_pages`."""
        async for page in self.iter_pages("/v2/images", "images", filters or {}):
            yield page

    async def fetch_image_actions(self, image_id: int) -> list[Any]:
        """Every action of one image, all pages; NotFoundError if it is gone."""
        actions: list[Any] = []
        path = f"/v2/images/{image_id}/actions"
        async for page in self.iter_pages(path, "actions", {}):
            actions.extend(page.items)
        return actions

    async def iter_pages(
        self, path: str, key: str, filters: Mapping[str, str]
    ) -> AsyncIterator[Page]:
        """Follow `links.pages.next` until a page has none.

        A short page does not end the walk (a server may cap `per_page`); a
        `next` naming a page already fetched raises IncompleteListingError.
        Filters missing from a `next` link are added back.
        """
        params = {**filters, "per_page": str(self._api.per_page)}
        url = self._url(path, params)
        fetched: set[str] = set()
        while True:
            body = await self.get_json(url)
            yield _parse_page(body, key, url)
            following = self._next_url(body, params)
            if following is None:
                return
            # Most lists are one page: identities are worked out only past it.
            fetched.add(_page_identity(url))
            if _page_identity(following) in fetched:
                raise IncompleteListingError(
                    f"The listing of {path} links back to a page already fetched "
                    f"({following}); it was stopped there, incomplete."
                )
            url = following

    async def get_json(self, url: str) -> Any:
        """GET a URL of the API with retries; return the decoded JSON body.

        The first try runs bare: tenacity's machinery cost a fifth of a
        request's time, and most requests need no retry. A failed first try
        is replayed to tenacity as its attempt 1.
        """
        failed: RetryableError | None = None
        try:
            return await self._get_once(url)
        except RetryableError as error:
            failed = error
        async for attempt in self._retrying():
            with attempt:
                if failed is not None:
                    replayed, failed = failed, None
                    raise replayed
                return await self._get_once(url)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _retrying(self) -> AsyncRetrying:
        """Retries with backoff; 429s do not use them up: the limiter paces them."""
        refusals = 0

        def should_stop(state: RetryCallState) -> bool:
            nonlocal refusals
            if _is_429(state):
                refusals += 1
                return refusals > MAX_RATE_LIMITED
            return state.attempt_number - refusals > self._api.max_retries

        return AsyncRetrying(
            retry=retry_if_exception_type(RetryableError),
            stop=should_stop,
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )

    async def _get_once(self, url: str) -> Any:
        sequence = await self.limiter.acquire()
        self.requests += 1
        endpoint = _endpoint(url)
        try:
            async with self._session.get(url) as response:
                headers = Headers.parse(response.headers)
                if response.status != 429:  # on_429 reads a refusal's headers
                    self.limiter.observe(headers, sequence)
                self.responses[(endpoint, response.status)] += 1
                body = await response.read()
                if response.status >= 400:
                    raise _http_error(url, response.status, body, headers, sequence)
        except aiohttp.ClientResponseError as exc:
            self.limiter.observe(Headers.empty(), sequence)  # out of flight
            self.responses[(endpoint, exc.status)] += 1
            raise RetryableError(
                f"GET {url} failed: {exc.message}.", status=exc.status
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.limiter.observe(Headers.empty(), sequence)  # out of flight
            self.responses[(endpoint, "error")] += 1
            reason = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
            raise RetryableError(
                f"GET {url} failed without an answer ({reason or 'timeout'}).",
                status=None,
            ) from exc
        try:
            return logs.scrubbed(body, json.loads(body))
        except ValueError as exc:
            raise RetryableError(
                f"GET {url} answered 200 with a body that is not JSON.", status=200
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.status == 429:
            headers = error.headers or Headers.empty()
            self.limiter.on_429(headers, state.attempt_number, error.sequence)
            return 0.0  # the limiter now holds every request back
        if isinstance(error, RetryableError) and error.headers is not None:
            if error.headers.retry_after_s is not None:
                return min(error.headers.retry_after_s, self._api.backoff_max_s)
        # Full jitter: a random wait up to backoff_s * 2**attempt, capped.
        backoff = wait_random_exponential(
            multiplier=self._api.backoff_s, max=self._api.backoff_max_s
        )
        return float(backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if isinstance(error, RetryableError) and error.status == 429:
            return  # the limiter logs its pause
        # INFO: a retry that works is no concern; one that does not ends in
        # the caller's warning (an image's actions not fetched, a listing).
        logger.info(
            "%s Retrying (attempt %d of %d) in %.1f s.",
            error,
            state.attempt_number + 1,
            self._api.max_retries + 1,
            wait,
        )

    def _url(self, path: str, params: Mapping[str, str]) -> str:
        query = urlencode(params)
        return f"{self._api.url}{path}" + (f"?{query}" if query else "")

    def _next_url(self, body: Any, params: Mapping[str, str]) -> str | None:
        """The next page on our own base URL, so the token never leaves it."""
        links = body.get("links") if isinstance(body, dict) else None
        pages = links.get("pages") if isinstance(links, dict) else None
        target = pages.get("next") if isinstance(pages, dict) else None
        if not isinstance(target, str) or not target:
            return None
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        for key, value in params.items():
            query.setdefault(key, value)
        # A base URL with a path (a proxy's /do) is in the link's path already.
        path = parts.path
        base_path = urlsplit(self._api.url).path.rstrip("/")
        if base_path and path.startswith(base_path + "/"):
            path = path[len(base_path) :]
        return f"{self._api.url}{path}?{urlencode(query)}"


@asynccontextmanager
async def open_client(
    settings: Settings, limiter: RateLimiter | None = None
) -> AsyncIterator[DigitalOceanClient]:
    """A client with its own aiohttp session; proxies come from the environment."""
    timeout = aiohttp.ClientTimeout(
        total=settings.api.total_timeout_s,
        connect=settings.api.connect_timeout_s,
        sock_read=settings.api.read_timeout_s,
    )
    token = settings.token()  # read anew each run: a token file may rotate
    logs.keep_secret(token)
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": f"inventory/{__version__}",
    }
    connector = aiohttp.TCPConnector(limit=max(settings.sync.concurrency * 2, 10))
    async with aiohttp.ClientSession(
        headers=headers,
        timeout=timeout,
        connector=connector,
        proxy=proxy_for(settings.api.url),
    ) as session:
        yield DigitalOceanClient(session, settings, limiter or limiter_for(settings))


def proxy_for(url: str) -> str | None:
    """The proxy for the API's URL, from HTTPS_PROXY, HTTP_PROXY and NO_PROXY.

    Resolved once, with the standard library's reading of those variables:
    aiohttp's trust_env looks them (and ~/.netrc) up again on every request,
    which tripled the cost of a request here. A loopback host (a local
    simulator) is never proxied, as Go's net/http, and so godo, does: a proxy
    cannot reach this machine's own loopback.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_loopback(host) or proxy_bypass(host):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def limiter_for(settings: Settings) -> RateLimiter:
    """A RateLimiter for the configured budgets."""
    budget = Budget(
        per_minute=settings.rate_limit.per_minute,
        per_hour=settings.rate_limit.per_hour,
        time_scale=settings.rate_limit.time_scale,
    )
    # A request unanswered after the total timeout is over, one way or another.
    return RateLimiter(budget, in_flight_max_s=settings.api.total_timeout_s)


def _is_429(state: RetryCallState) -> bool:
    error = state.outcome.exception() if state.outcome else None
    return isinstance(error, RetryableError) and error.status == 429


def _parse_page(body: Any, key: str, url: str) -> Page:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise APIError(f"GET {url} answered without a {key!r} list.")
    meta = body.get("meta")
    total = meta.get("total") if isinstance(meta, dict) else None
    return Page(body[key], total if isinstance(total, int) else None, url)


def _page_identity(url: str) -> str:
    """A page's identity: its path and sorted query, a missing page being 1."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("page", "1")
    return f"{parts.path.rstrip('/')}?{urlencode(sorted(query.items()))}"


def _endpoint(url: str) -> str:
    """The URL's route with ids folded, for per-endpoint counts."""
    path = url.split("?", 1)[0]
    path = path[path.find("/v2/") :].rstrip("/")
    return _ID_SEGMENT.sub("/{id}", path)


def _http_error(
    url: str, status: int, body: bytes, headers: Headers, sequence: int
) -> APIError:
    detail = _error_message(body)
    if status in (401, 403):
        return AuthError(
            f"DigitalOcean refused the token (HTTP {status}: {detail}). The token is "
            "missing, wrong, expired, or lacks the image:read scope.",
            status=status,
        )
    if status == 404:
        return NotFoundError(f"GET {url} found nothing (HTTP 404).", status=status)
    message = f"GET {url} answered HTTP {status}: {detail}"
    if status == 429 or status >= 500 or status == 408:
        return RetryableError(
            message, status=status, headers=headers, sequence=sequence
        )
    return APIError(message, status=status)


def _error_message(body: bytes) -> str:
    """DigitalOcean's `message`, or a hint when the body is HTML or empty."""
    if not body.strip():
        return "an empty body."
    try:
        data = json.loads(body)
    except ValueError:
        return "a body that is not JSON (a proxy's error page?)."
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"]).rstrip(".") + "."
    return "an error body without a message."
