"""Injected faults: latency, 5xx answers, dropped connections and stalls.

Each request draws the same number of values from one seeded generator, so a
given seed and request order always meet the same faults.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from http import HTTPStatus

from inventory.simulator.options import SimulatorOptions

ERROR_STATUSES = (500, 502, 503)
HTML_PAGE = """<html>
<head><title>{status} {phrase}</title></head>
<body>
<center><h1>{status} {phrase}</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request; the default is nothing."""

    delay_s: float = 0.0
    drop: bool = False
    stall_s: float = 0.0
    error_status: int | None = None
    html: bool = False


class FaultPlan:
    """Decides, request by request, which faults apply."""

    def __init__(self, options: SimulatorOptions) -> None:
        self._options = options
        self._rng = random.Random(f"{options.seed}/faults")
        pattern = options.stall_path
        self._stall_pattern = re.compile(pattern) if pattern is not None else None

    def decide(self, path_qs: str) -> Fault:
        """The faults for a request to `path_qs` (path and query string)."""
        opts = self._options
        drop, stall, jitter, error, pick, html = (self._rng.random() for _ in range(6))
        stalls = stall < opts.stall_rate
        if self._stall_pattern is not None:
            # A path narrows the stalls to its requests: all of them, or the
            # rate's share of them when a rate is given too.
            matches = self._stall_pattern.search(path_qs) is not None
            stalls = matches and (stalls or opts.stall_rate == 0)
        failing = error < opts.error_rate
        return Fault(
            delay_s=opts.latency_s + opts.jitter_s * jitter,
            drop=drop < opts.drop_rate,
            stall_s=opts.stall_s if stalls else 0.0,
            error_status=ERROR_STATUSES[int(pick * 3)] if failing else None,
            html=html < opts.html_error_share,
        )


def html_error_page(status: int) -> str:
    """A proxy's error page, as a load balancer in front of the API sends it."""
    return HTML_PAGE.format(status=status, phrase=HTTPStatus(status).phrase)
