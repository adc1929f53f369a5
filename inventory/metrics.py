"""What the daemon tells Prometheus: runs, their figures, the API and its budgets.

Each Daemon owns one CollectorRegistry, so two daemons in one process (tests)
never share a series. API figures are read live from the client and limiter.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from inventory.client import DigitalOceanClient
from inventory.ratelimit import RateLimiter
from inventory.sync import STATUSES, SyncResult

# From a small account on a fast link to a large one paced over the hour.
DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
IMAGE_CHANGES = ("seen", "added", "updated", "removed")
ACTION_CHANGES = ("seen", "added", "updated")
ENDED = tuple(status for status in STATUSES if status != "running")


class ApiCollector:
    """Requests, 429s and waits, read at scrape time so a long run shows live.

    Each run has its own client; the counts of finished clients are kept here.
    The limiter lives as long as the daemon, so its own totals are read as-is.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.client: DigitalOceanClient | None = None
        self._finished: Tally[tuple[str, int | str]] = Tally()

    def watch(self, client: DigitalOceanClient) -> None:
        self.client = client

    def unwatch(self, client: DigitalOceanClient) -> None:
        """Fold a finished client's counts into the totals."""
        self._finished.update(client.responses)
        if self.client is client:
            self.client = None

    def responses(self) -> Tally[tuple[str, int | str]]:
        live = self.client.responses if self.client is not None else Tally()
        return self._finished + live

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "inventory_api_requests",
            "DigitalOcean API answers by endpoint and HTTP status "
            "(status 'error' when none came).",
            labels=["endpoint", "status"],
        )
        for (endpoint, status), count in sorted(self.responses().items(), key=str):
            requests.add_metric([endpoint, str(status)], count)
        yield requests
        yield CounterMetricFamily(
            "inventory_api_rate_limited",
            "HTTP 429 answers: requests refused for the rate budget.",
            value=self.limiter.rate_limited,
        )
        yield CounterMetricFamily(
            "inventory_api_rate_wait_seconds",
            "Seconds requests waited for the rate budget.",
            value=self.limiter.waited_s,
        )
        yield from self._remaining()

    def _remaining(self) -> Iterable[Metric]:
        if self.limiter.last_remaining is None:
            return  # no answer has carried the header yet
        yield GaugeMetricFamily(
            "inventory_api_ratelimit_remaining",
            "The last ratelimit-remaining header DigitalOcean sent.",
            value=self.limiter.last_remaining,
        )


class Metrics:
    """The daemon's series in their own registry."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.registry = CollectorRegistry()
        self.api = ApiCollector(limiter)
        self.registry.register(self.api)
        self.runs = self._counter("sync_runs", "Sync runs by how they ended.", "status")
        self.duration = Histogram(
            "inventory_sync_run_duration_seconds",
            "How long sync runs took, whatever their outcome.",
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.images = self._counter("sync_images", "Images by change.", "change")
        self.actions = self._counter("sync_actions", "Actions by change.", "change")
        self.coalesced = self._counter(
            "schedule_triggers_coalesced",
            "Schedule triggers folded into a run: one was running, or it came late.",
            "reason",
        )
        self.running = self._gauge("sync_running", "1 while a sync run is going.")
        self.lock_held = self._gauge(
            "account_lock_held",
            "1 while this process holds the account's sync lock; 0 while another "
            "process syncs the account.",
        )
        self.last_success = self._gauge(
            "sync_last_success_timestamp_seconds",
            "When the last succeeded run ended, in Unix seconds.",
        )
        self.expected = self._gauge(
            "sync_expected_duration_seconds",
            "How long a full run is expected to take: the rate budgets' least "
            "time, or the last run's duration when longer.",
        )
        self.overrun = self._gauge(
            "schedule_overrun",
            "1 when a full run does not fit in the interval, so runs follow "
            "each other back to back.",
        )
        self._initialise()

    def _counter(self, name: str, documentation: str, label: str) -> Counter:
        return Counter(
            f"inventory_{name}", documentation, [label], registry=self.registry
        )

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(f"inventory_{name}", documentation, registry=self.registry)

    def _initialise(self) -> None:
        """Show every known series at zero, so rates work from the first scrape."""
        for status in ENDED:
            self.runs.labels(status)
        for change in IMAGE_CHANGES:
            self.images.labels(change)
        for change in ACTION_CHANGES:
            self.actions.labels(change)
        for reason in ("running", "missed"):
            self.coalesced.labels(reason)

    def record(self, result: SyncResult, ended_at: datetime) -> None:
        """Count one finished run."""
        counts = result.counts
        self.runs.labels(result.status).inc()
        self.duration.observe(result.duration_s)
        for change in IMAGE_CHANGES:
            self.images.labels(change).inc(getattr(counts, f"images_{change}"))
        for change in ACTION_CHANGES:
            self.actions.labels(change).inc(getattr(counts, f"actions_{change}"))
        if result.status == "succeeded":
            self.last_success.set(ended_at.timestamp())

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
