"""The server side of DigitalOcean's rate limits: sliding windows per token.

Each request counts for one full window after it was made (a minute and an
hour, both shrunk by `time_scale`). Rejected requests do not count: what DO
does is unknown, and not counting them keeps a backing-off client's wait
short and predictable.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

NOMINAL_LIMIT = 5000
MINUTE_S = 60.0
HOUR_S = 3600.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class Verdict:
    """Whether a request may proceed, and the headers its response carries."""

    allowed: bool
    headers: dict[str, str]
    exceeded: str | None = None


@dataclass
class _Windows:
    minute: deque[float] = field(default_factory=deque)
    hour: deque[float] = field(default_factory=deque)


class RateBudget:
    """Per-token budgets per minute and per hour; None turns one off."""

    def __init__(
        self,
        per_minute: int | None,
        per_hour: int | None,
        time_scale: float = 1.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self.minute_s = MINUTE_S / time_scale
        self.hour_s = HOUR_S / time_scale
        self._clock = clock
        self._wall = wall
        self._tokens: dict[str, _Windows] = {}

    @property
    def enabled(self) -> bool:
        """Whether any budget is on."""
        return self.per_minute is not None or self.per_hour is not None

    def take(self, token: str) -> Verdict:
        """Count one request for `token`, unless a budget is spent."""
        if not self.enabled:
            return Verdict(True, self._open_headers())
        now = self._clock()
        windows = self._windows(token, now)
        exceeded = self._exceeded(windows)
        if exceeded is None:
            windows.minute.append(now)
            windows.hour.append(now)

        headers = self._headers(windows, now)
        if exceeded == "minute":
            headers["retry-after"] = str(self._retry_after(windows, now))
        return Verdict(exceeded is None, headers, exceeded)

    def peek(self, token: str) -> dict[str, str]:
        """The headers for `token` without counting a request."""
        if not self.enabled:
            return self._open_headers()
        now = self._clock()
        return self._headers(self._windows(token, now), now)

    def _windows(self, token: str, now: float) -> _Windows:
        windows = self._tokens.setdefault(token, _Windows())
        _expire(windows.minute, now - self.minute_s)
        _expire(windows.hour, now - self.hour_s)
        return windows

    def _exceeded(self, windows: _Windows) -> str | None:
        # An hour budget spent outranks the minute's: waiting a minute won't help.
        if self.per_hour is not None and len(windows.hour) >= self.per_hour:
            return "hour"
        if self.per_minute is not None and len(windows.minute) >= self.per_minute:
            return "minute"
        return None

    def _headers(self, windows: _Windows, now: float) -> dict[str, str]:
        limit = self.per_hour if self.per_hour is not None else NOMINAL_LIMIT
        remaining = limit - len(windows.hour) if self.per_hour is not None else limit
        if self.per_minute is not None and len(windows.minute) >= self.per_minute:
            remaining = 0
        oldest = windows.hour[0] if windows.hour else now
        reset = self._wall() + (oldest + self.hour_s - now)
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(max(remaining, 0)),
            "ratelimit-reset": str(math.ceil(reset)),
        }

    def _retry_after(self, windows: _Windows, now: float) -> int:
        """Seconds until enough of the minute's requests have left its window."""
        assert self.per_minute is not None
        blocking = windows.minute[len(windows.minute) - self.per_minute]
        return max(1, math.ceil(blocking + self.minute_s - now))

    def _open_headers(self) -> dict[str, str]:
        return {
            "ratelimit-limit": str(NOMINAL_LIMIT),
            "ratelimit-remaining": str(NOMINAL_LIMIT),
            "ratelimit-reset": str(math.ceil(self._wall() + self.hour_s)),
        }


def _expire(window: deque[float], cutoff: float) -> None:
    while window and window[0] <= cutoff:
        window.popleft()
