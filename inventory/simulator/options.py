"""The simulator's settings: data size and seed, auth, rate budgets and faults.

One frozen dataclass, checked when built, so a bad value fails before serving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ActionsOrder = Literal["newest", "oldest"]

SHARE_FIELDS = (
    "private_share",
    "html_error_share",
    "error_rate",
    "drop_rate",
    "stall_rate",
    "action_error_share",
)
SECONDS_FIELDS = ("latency_s", "jitter_s", "stall_s", "action_duration_s")

# A generated account lives in memory: a million images take gigabytes, and no
# DigitalOcean account holds that many.
MAX_IMAGES = 200_000


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything that shapes one simulated DigitalOcean account and its API.

    Data: `images` generated from `seed` (or loaded from `from_dir`), with about
    `actions_per_image` actions per private image. Auth: `token`, when set, is
    the only accepted bearer token. Rate budgets: per token, sliding windows of
    one minute and one hour, both shrunk by `time_scale`; None turns one off.
    Faults: all off by default. Shares (`*_rate`, `*_share`) are in [0, 1].
    """

    images: int = 300
    seed: int = 1
    actions_per_image: float = 3.0
    private_share: float = 0.6
    token: str | None = field(default=None, repr=False)
    rate_per_minute: int | None = 250
    rate_per_hour: int | None = 5000
    time_scale: float = 1.0
    latency_s: float = 0.0
    jitter_s: float = 0.0
    error_rate: float = 0.0
    html_error_share: float = 0.5
    drop_rate: float = 0.0
    stall_rate: float = 0.0
    stall_s: float = 30.0
    stall_path: str | None = None
    repeat_next: bool = False
    action_duration_s: float = 5.0
    action_error_share: float = 0.1
    actions_order: ActionsOrder = "newest"
    churn_interval_s: float | None = None
    from_dir: Path | str | None = None

    def __post_init__(self) -> None:
        _check(0 <= self.images <= MAX_IMAGES, "images", f"must be 0 to {MAX_IMAGES}")
        _check(self.actions_per_image >= 0, "actions_per_image", "must be 0 or more")
        for name in SHARE_FIELDS:
            _check(0.0 <= getattr(self, name) <= 1.0, name, "must be between 0 and 1")
        for name in SECONDS_FIELDS:
            _check(getattr(self, name) >= 0, name, "must be 0 or more seconds")
        for name in ("rate_per_minute", "rate_per_hour"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, "must be 1 or more, or None")
        _check(self.time_scale > 0, "time_scale", "must be greater than 0")
        _check(
            self.actions_order in ("newest", "oldest"),
            "actions_order",
            "must be 'newest' or 'oldest'",
        )
        _check(
            self.churn_interval_s is None or self.churn_interval_s > 0,
            "churn_interval_s",
            "must be greater than 0, or None",
        )
        _check(self.token is None or self.token != "", "token", "must not be empty")
        if self.stall_path is not None:
            _check_pattern(self.stall_path)


def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"Simulator option {name} {problem}.")


def _check_pattern(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"Simulator option stall_path is not a valid regular expression: {exc}."
        ) from exc
