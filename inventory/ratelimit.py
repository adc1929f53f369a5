"""Client-side pacing within DigitalOcean's per-token budgets.

DigitalOcean counts each request against a sliding minute (250) and a sliding
hour (5,000). One RateLimiter per token keeps the same two windows, learns from
`ratelimit-remaining` what other programs spend of that token, and pauses every
request of the run after a 429, so a sync slows down instead of being refused.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from inventory.errors import DeadlineExceeded

logger = logging.getLogger(__name__)

MINUTE_S = 60.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class Budget:
    """Requests allowed per sliding minute and hour; None means no limit."""

    per_minute: int | None = 250
    per_hour: int | None = 5000
    time_scale: float = 1.0

    @property
    def minute_s(self) -> float:
        return MINUTE_S / self.time_scale

    @property
    def hour_s(self) -> float:
        return HOUR_S / self.time_scale

    def duration_s(self, requests: int, used_hour: int = 0) -> float:
        """Least time `requests` more take when the hour already counts `used_hour`.

        Both windows slide, so each full minute's budget costs one minute, and
        each full hour's budget costs one hour: the bound a paced run can reach.
        """
        if requests <= 0:
            return 0.0
        hours, rest = 0, requests
        if self.per_hour is not None:
            free = max(self.per_hour - used_hour, 0)
            if rest > free:
                hours = 1 + (rest - free - 1) // self.per_hour
                rest = (rest - free - 1) % self.per_hour + 1
        minutes = 0 if self.per_minute is None else (rest - 1) // self.per_minute
        return hours * self.hour_s + minutes * self.minute_s


@dataclass(frozen=True)
class Headers:
    """The rate-limit headers of one response, read case-insensitively."""

    limit: int | None
    remaining: int | None
    reset_at: float | None
    retry_after_s: float | None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> Headers:
        lowered = {key.lower(): value for key, value in headers.items()}
        return cls(
            limit=_int(lowered.get("ratelimit-limit")),
            remaining=_int(lowered.get("ratelimit-remaining")),
            reset_at=_float(lowered.get("ratelimit-reset")),
            retry_after_s=_float(lowered.get("retry-after")),
        )


class RateLimiter:
    """Enforces a Budget for every request made with one token.

    `acquire()` before sending, `observe()` with each response's headers, and
    `on_429()` when refused. Waits longer than the deadline allows raise
    DeadlineExceeded instead of sleeping.
    """

    def __init__(
        self,
        budget: Budget,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._wall_clock = wall_clock
        self._sent: deque[float] = deque()
        self._foreign: deque[float] = deque()
        self._sequence = 0
        self._paused_until = 0.0
        self._deadline: float | None = None
        self._lock = asyncio.Lock()
        self.waited_s = 0.0
        self.rate_limited = 0
        self.last_remaining: int | None = None

    def set_deadline(self, deadline: float | None) -> None:
        """A monotonic time after which no wait may end."""
        self._deadline = deadline

    @property
    def used_hour(self) -> int:
        """Requests counted in the current hour window, ours and others'."""
        now = self._clock()
        self._prune(now)
        return len(self._sent) + len(self._foreign)

    async def acquire(self) -> int:
        """Wait until a request fits both windows; return its sequence number."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._wait_s(now)
                if wait <= 0:
                    self._sent.append(now)
                    self._sequence += 1
                    return self._sequence
                self._check_deadline(now + wait)
                self.waited_s += wait
                await asyncio.sleep(wait)

    def observe(self, headers: Headers, sequence: int) -> None:
        """Learn from a response what the server counted against the token.

        The server's count, less our requests sent up to and including this
        one, is what others spent; it is counted as spent now, so it weighs on
        the minute window too. A remaining of 0 may mean either budget.
        """
        if headers.remaining is None:
            return
        self.last_remaining = headers.remaining
        limit = headers.limit or self.budget.per_hour
        if limit is None:
            return
        now = self._clock()
        self._prune(now)
        if headers.remaining == 0:
            self._pause(self._remaining_spent_s(headers, limit, now), "remaining 0")
            return
        ours = len(self._sent) - max(self._sequence - sequence, 0)
        foreign = (limit - headers.remaining) - max(ours, 0)
        for _ in range(foreign - len(self._foreign)):
            self._foreign.append(now)

    def _remaining_spent_s(self, headers: Headers, limit: int, now: float) -> float:
        """How long to pause when the server reports nothing left.

        Near the hour's limit it is the hour: wait for the reset. Otherwise
        somebody spent the minute's budget, which a minute surely restores.
        """
        per_minute = self.budget.per_minute or 0
        if len(self._sent) + len(self._foreign) >= limit - per_minute:
            return self._until_reset(headers, now)
        return self.budget.minute_s

    def on_429(self, headers: Headers, attempt: int) -> float:
        """Pause every request after a 429; return how long this one waits."""
        self.rate_limited += 1
        now = self._clock()
        if headers.retry_after_s is not None:
            # Sent only for the per-minute budget; the minute bounds it.
            wait = _clamp(headers.retry_after_s, 0.05, self.budget.minute_s)
        else:
            wait = self._until_reset(headers, now, attempt)
        self._pause(wait, "HTTP 429")
        return wait

    def _wait_s(self, now: float) -> float:
        self._prune(now)
        waits = [self._paused_until - now]
        per_minute, per_hour = self.budget.per_minute, self.budget.per_hour
        if per_minute is not None:
            start = now - self.budget.minute_s
            oldest = _kth_latest(self._sent, self._foreign, per_minute, after=start)
            if oldest is not None:
                waits.append(oldest + self.budget.minute_s - now)
        if per_hour is not None:
            oldest = _kth_latest(self._sent, self._foreign, per_hour)
            if oldest is not None:
                waits.append(oldest + self.budget.hour_s - now)
        return max(waits)

    def _until_reset(self, headers: Headers, now: float, attempt: int = 1) -> float:
        """Seconds until the reset the server names, within sane bounds.

        A reset in the past (seen on real 429s) or missing falls back to an
        exponential backoff; one further than an hour away is capped at an hour.
        """
        backoff = min(2.0 ** max(attempt - 1, 0), 60.0) / self.budget.time_scale
        if headers.reset_at is None:
            return backoff
        until = headers.reset_at - self._wall_clock()
        if until <= 0:
            return backoff
        return _clamp(until, 0.05, self.budget.hour_s)

    def _pause(self, wait: float, reason: str) -> None:
        until = self._clock() + wait
        if until > self._paused_until:
            self._paused_until = until
            logger.warning(
                "Rate budget spent (%s); pausing requests for %.1f s", reason, wait
            )

    def _check_deadline(self, ready_at: float) -> None:
        if self._deadline is not None and ready_at > self._deadline:
            raise DeadlineExceeded(
                "The rate budget returns in %.0f s, after this run's deadline; "
                "stopping here and keeping what was stored."
                % (ready_at - self._clock())
            )

    def _prune(self, now: float) -> None:
        horizon = now - self.budget.hour_s
        for window in (self._sent, self._foreign):
            while window and window[0] <= horizon:
                window.popleft()


def _kth_latest(
    ours: deque[float], foreign: deque[float], k: int, after: float = -math.inf
) -> float | None:
    """The k-th newest time after `after` in two sorted windows, if there are k."""
    if not foreign:
        if len(ours) < k or ours[-k] <= after:
            return None
        return ours[-k]
    newest_first = heapq.merge(reversed(ours), reversed(foreign), reverse=True)
    for count, moment in enumerate(newest_first, start=1):
        if moment <= after:
            return None
        if count == k:
            return moment
    return None


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(value, high))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
