"""Counters of what the simulator answered, for tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimulatorStats:
    """Requests by (method, route, status), plus one counter per fault and event.

    `route` is the route pattern (e.g. `/v2/images/{image_id}/actions`), or
    `unmatched` for a path no route serves. Dropped connections have no status
    and are counted only in `dropped`.
    """

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    rate_limited: int = 0
    dropped: int = 0
    stalled: int = 0
    errors_injected: int = 0
    actions_started: int = 0
    actions_finished: int = 0
    churn_steps: int = 0

    @property
    def total(self) -> int:
        """Every answered API request."""
        return sum(self.requests.values())

    def count(
        self,
        method: str | None = None,
        route: str | None = None,
        status: int | None = None,
    ) -> int:
        """Answered requests matching every given part of the key."""
        return sum(
            seen
            for (seen_method, seen_route, seen_status), seen in self.requests.items()
            if method in (None, seen_method)
            and route in (None, seen_route)
            and status in (None, seen_status)
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as served at `/_simulator/stats`."""
        return {
            "requests": [
                {"method": method, "route": route, "status": status, "count": seen}
                for (method, route, status), seen in sorted(self.requests.items())
            ],
            "total": self.total,
            "rate_limited": self.rate_limited,
            "dropped": self.dropped,
            "stalled": self.stalled,
            "errors_injected": self.errors_injected,
            "actions_started": self.actions_started,
            "actions_finished": self.actions_finished,
            "churn_steps": self.churn_steps,
        }
