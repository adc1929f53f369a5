"""The daemon: schedule, deadlines, coalescing, probes, metrics and a clean stop.

Most tests run a Daemon in the test's own event loop against the simulator;
the end-to-end one starts `inventory run` as a real process and signals it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from inventory.config import Settings, load_settings
from inventory.daemon import (
    Daemon,
    readiness_age_s,
    schedule_gaps_s,
    trigger_for,
)
from inventory.errors import ConfigError, StoreError
from inventory.records import parse_image
from inventory.simulator import Simulator, SimulatorOptions
from inventory.store import RunCounts, Store
from inventory.sync import SyncRun
from inventory.tables import ImageActionRow, ImageRegionRow, ImageRow

from conftest import (
    another_writer,
    create_postgres_database,
    drop_postgres_database,
    lock_taken_over,
    proxied_postgres,
    reading,
)

TOKEN = "dop_v1_" + "da3m0n" * 8
ENDED = ("succeeded", "partial", "failed", "interrupted")
STOPPED_FROM_OUTSIDE = "The run was stopped from outside."

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# Helpers.


def settings_for(
    tmp_path: Path,
    base_url: str,
    database_url: str,
    token_file: Path | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """Quick settings: a short interval, no jitter, endpoints on a free port."""
    config = tmp_path / "inventory.toml"
    config.write_text("")
    environ = {
        **(
            {"DIGITALOCEAN_TOKEN_FILE": str(token_file)}
            if token_file
            else {"DIGITALOCEAN_TOKEN": TOKEN}
        ),
        "DIGITALOCEAN_API_URL": base_url,
        "INVENTORY_DATABASE_URL": database_url,
        "INVENTORY_HTTP_PORT": "0",
    }
    overrides: dict[str, dict[str, Any]] = {
        "daemon": {"interval_s": 60, "jitter_s": 0, "grace_s": 5, "store_wait_s": 5},
        "sync": {"concurrency": 4},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(config, environ, overrides)


def simulator(**options: Any) -> Simulator:
    values: dict[str, Any] = {"images": 20, "seed": 5}
    values.update(options)
    return Simulator(SimulatorOptions(**values))


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout_s: float = 15.0
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout_s} s: {check.__doc__}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def runs_of(store: Store) -> list[dict[str, Any]]:
    """Every run, oldest first."""
    return list(reversed(await store.recent_runs("default", limit=1000)))


def runs_where(
    store: Store, wanted: Callable[[list[dict[str, Any]]], bool]
) -> Callable[[], Awaitable[list[dict[str, Any]] | None]]:
    async def check() -> list[dict[str, Any]] | None:
        try:
            rows = await runs_of(store)
        except SQLAlchemyError:
            return None  # the daemon has not created the tables yet
        return rows if wanted(rows) else None

    check.__doc__ = f"runs satisfying {wanted.__name__}"
    return check


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (sample, _), v in samples.items() if sample == name)


def run_counters(samples: Samples) -> dict[str, float]:
    """The metrics' view of finished runs, as `sync_runs` rows would sum them."""
    counters = {
        f"runs_{status}": value(samples, "inventory_sync_runs_total", status=status)
        for status in ENDED
    }
    for kind, changes in (
        ("images", ("seen", "added", "updated", "removed")),
        ("actions", ("seen", "added", "updated")),
    ):
        for change in changes:
            counters[f"{kind}_{change}"] = value(
                samples, f"inventory_sync_{kind}_total", change=change
            )
    counters["durations"] = value(samples, "inventory_sync_run_duration_seconds_count")
    return counters


def row_counters(rows: list[dict[str, Any]]) -> dict[str, float]:
    ended = [row for row in rows if row["status"] != "running"]
    statuses = Counter(row["status"] for row in ended)
    counters = {f"runs_{status}": float(statuses[status]) for status in ENDED}
    for column in (
        "images_seen",
        "images_added",
        "images_updated",
        "images_removed",
        "actions_seen",
        "actions_added",
        "actions_updated",
    ):
        counters[column] = float(sum(row[column] for row in ended))
    counters["durations"] = float(len(ended))
    return counters


def assert_api_figures_match(samples: Samples, rows: list[dict[str, Any]]) -> None:
    """Requests, 429s and waits in the metrics equal the rows' sums.

    Exact only while no request was cut off: the rows count requests sent,
    the metric counts answers (or failures to answer).
    """
    assert total(samples, "inventory_api_requests_total") == sum(
        row["requests"] for row in rows
    )
    assert value(samples, "inventory_api_rate_limited_total") == sum(
        row["rate_limited"] for row in rows
    )
    assert value(samples, "inventory_api_rate_wait_seconds_total") == pytest.approx(
        sum(row["rate_wait_s"] for row in rows)
    )


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status, await response.text()


def succeeded(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    def enough_succeeded(rows: list[dict[str, Any]]) -> bool:
        return [row["status"] for row in rows].count("succeeded") >= count

    return enough_succeeded


async def succeeded_run(store: Store, started: datetime, took: timedelta) -> None:
    """Record a run that succeeded, as an earlier process would have."""
    run_id = await store.start_run("default", started)
    await store.finish_run(
        "default",
        run_id,
        status="succeeded",
        finished_at=started + took,
        counts=RunCounts(),
    )


def a_run_started(rows: list[dict[str, Any]]) -> bool:
    return any(row["status"] == "running" for row in rows)


async def start_into_a_run(daemon: Daemon, database_url: str) -> None:
    """Start the daemon, and wait until its first run has begun."""
    await daemon.start()
    async with reading(database_url) as store:
        await eventually(runs_where(store, a_run_started))


# The schedule, without I/O.


def test_an_interval_schedule_has_one_gap(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "http://api", "sqlite:///x.db")

    assert schedule_gaps_s(settings) == (60.0, 60.0)


def test_a_cron_schedule_knows_its_shortest_and_longest_gap(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, "http://api", "sqlite:///x.db", daemon={"cron": "0 9 * * mon-fri"}
    )

    assert schedule_gaps_s(settings) == (86400.0, 3 * 86400.0)


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("*/15 * * *", r"daemon\.cron: expected five fields .* got 4"),
        ("0 9 * * 1-5", r"daemon\.cron: write the weekday field with names"),
        ("61 * * * *", r"daemon\.cron: .*61"),
    ],
)
def test_a_bad_cron_expression_names_the_setting(
    tmp_path: Path, cron: str, message: str
) -> None:
    settings = settings_for(
        tmp_path, "http://api", "sqlite:///x.db", daemon={"cron": cron}
    )

    with pytest.raises(ConfigError, match=message):
        trigger_for(settings)


def test_jitter_is_capped_at_half_the_interval(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        "http://api",
        "sqlite:///x.db",
        daemon={"interval_s": 10, "jitter_s": 30},
    )

    assert trigger_for(settings).jitter == 5.0


@pytest.mark.parametrize(
    ("expected_run_s", "age_s"), [(None, 1800.0), (300.0, 1800.0), (1200.0, 2400.0)]
)
def test_readiness_age_is_twice_the_interval_or_twice_a_run_when_longer(
    tmp_path: Path, expected_run_s: float | None, age_s: float
) -> None:
    settings = settings_for(
        tmp_path, "http://api", "sqlite:///x.db", daemon={"interval_s": 900}
    )

    assert readiness_age_s(settings, expected_run_s) == age_s


def test_the_readiness_age_setting_wins(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, "http://api", "sqlite:///x.db", daemon={"readiness_age_s": 42}
    )

    assert readiness_age_s(settings, 1200.0) == 42.0


# The daemon in this process.


async def test_the_daemon_syncs_at_start_then_on_its_interval_and_counts_each_run(
    tmp_path: Path, database_url: str
) -> None:
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"interval_s": 0.3}
        )
        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, succeeded(2)))
        async with reading(database_url) as store:
            rows = await runs_of(store)

    samples = parse_metrics(daemon.exposition().decode())
    assert [row["status"] for row in rows] == ["succeeded"] * len(rows)
    assert run_counters(samples) == row_counters(rows)
    assert_api_figures_match(samples, rows)
    assert value(samples, "inventory_sync_last_success_timestamp_seconds") == (
        pytest.approx(rows[-1]["finished_at"].timestamp(), abs=1.0)
    )
    assert value(samples, "inventory_sync_running") == 0.0


async def test_health_answers_from_start_up_and_readiness_waits_for_a_success(
    tmp_path: Path, database_url: str
) -> None:
    sim = simulator(latency_s=0.15)
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, sync={"concurrency": 1}
        )
        daemon = Daemon(settings)
        before = daemon.health()
        try:
            await daemon.start()
            assert daemon.url is not None
            async with reading(database_url) as store:
                await eventually(runs_where(store, a_run_started))
                during = [
                    await get(f"{daemon.url}{p}") for p in ("/healthz", "/readyz")
                ]
                await eventually(runs_where(store, succeeded(1)))
            after = await get(f"{daemon.url}/readyz")
        finally:
            await daemon.stop()

    assert (before.ok, before.detail) == (True, {"status": "starting"})
    assert during[0] == (200, '{"status": "ok", "sync_running": true}')
    assert during[1][0] == 503
    assert json.loads(during[1][1])["status"] == "no run has succeeded yet"
    assert after[0] == 200
    assert json.loads(after[1])["status"] == "ready"
    assert daemon.health().detail == {"status": "stopped"}


async def test_a_hung_run_is_ended_by_its_deadline_and_the_next_run_happens(
    tmp_path: Path, database_url: str
) -> None:
    sim = simulator(stall_s=30.0)
    hung = next(image["id"] for image in sim.images() if not image.get("public"))
    sim = simulator(stall_s=30.0, stall_path=f"^/v2/images/{hung}/actions")
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path,
            base_url,
            database_url,
            daemon={"interval_s": 0.5},
            sync={"deadline_s": 1.0},
            api={"read_timeout_s": 60.0},  # so only the deadline can end it
        )
        async with reading(database_url) as store, running(settings) as daemon:

            async def stalled() -> bool:
                """the simulator to stall a request"""
                return sim.stats.stalled >= 1

            await eventually(stalled)
            sim.account.remove_image(hung)  # the next run will not ask for it
            rows = await eventually(runs_where(store, succeeded(1)))
            health = daemon.health()

    assert [row["status"] for row in rows][:2] == ["interrupted", "succeeded"]
    assert rows[0]["error"] == "The run passed its deadline of 1 s and was stopped."
    # Cut by the deadline, not by the stall's end 30 s on.
    assert (rows[0]["finished_at"] - rows[0]["started_at"]).total_seconds() < 20
    assert health.ok


async def test_triggers_during_a_run_are_coalesced_counted_and_run_back_to_back(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "inventory")
    sim = simulator(latency_s=0.1)  # a run takes 2 s at least
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path,
            base_url,
            database_url,
            daemon={"interval_s": 1.0},
            sync={"concurrency": 1},
        )
        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, succeeded(3)))
        async with reading(database_url) as store:
            rows = [row for row in await runs_of(store) if row["finished_at"]]

    samples = parse_metrics(daemon.exposition().decode())
    pairs = list(zip(rows, rows[1:], strict=False))
    gaps_s = [(b["started_at"] - a["finished_at"]).total_seconds() for a, b in pairs]
    assert all(gap >= 0 for gap in gaps_s), "two runs overlapped"
    assert max(gaps_s[:2]) < 0.5, "runs longer than the interval were not back to back"
    assert (
        value(samples, "inventory_schedule_triggers_coalesced_total", reason="running")
        >= 2
    )
    assert value(samples, "inventory_schedule_overrun") == 1.0
    assert any(
        "longer than the 1.0 s between triggers" in record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING
    )


@asynccontextmanager
async def mid_run(
    tmp_path: Path, database_url: str, grace_s: float
) -> AsyncIterator[tuple[Daemon, Store]]:
    """A daemon in its first run, one that lasts 20 s at least (1 s a request,
    one at a time), and the store to read it from."""
    sim = simulator(latency_s=1.0)
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path,
            base_url,
            database_url,
            daemon={"grace_s": grace_s},
            sync={"concurrency": 1},
        )
        daemon = Daemon(settings)
        try:
            await start_into_a_run(daemon, database_url)
            async with reading(database_url) as store:
                yield daemon, store
        finally:
            daemon.hurry()  # stopped already, or a test that failed midway
            await daemon.stop()


async def test_stop_cancels_a_run_past_its_grace_and_records_it_interrupted(
    tmp_path: Path, database_url: str
) -> None:
    async with mid_run(tmp_path, database_url, grace_s=0.3) as (daemon, store):
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.wait_for(daemon.stop(), 15)  # before the run could end
        stop_s = time.monotonic() - started
        rows = await runs_of(store)

    samples = parse_metrics(daemon.exposition().decode())
    assert [(row["status"], row["error"]) for row in rows] == [
        ("interrupted", STOPPED_FROM_OUTSIDE)
    ]
    assert stop_s >= 0.3  # the grace was given; "interrupted": not the whole run
    assert value(samples, "inventory_sync_runs_total", status="interrupted") == 1.0


async def test_a_store_that_hangs_reads_as_not_ready_in_under_a_second(
    tmp_path: Path,
) -> None:
    """/readyz answers within Kubernetes' default 1 s probe timeout, saying
    why, instead of the probe timing out on it."""
    async with proxied_postgres() as (proxy, proxied):
        database_url = proxied.render_as_string(hide_password=False)
        sim = simulator()
        async with sim.serve() as base_url:
            settings = settings_for(tmp_path, base_url, database_url)
            async with running(settings) as daemon:

                async def ready() -> bool:
                    """the daemon to be ready"""
                    return (await daemon.readiness()).ok

                await eventually(ready)
                proxy.pause()
                check = await daemon.readiness()
                proxy.resume()

    assert not check.ok
    assert check.detail == {
        "status": "store not answering",
        "error": "no answer within 0.8 s",
    }


@pytest.mark.parametrize("second_signal", [False, True])
async def test_stop_is_bounded_when_the_store_hangs_mid_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second_signal: bool
) -> None:
    """The store stops answering (a partition, a stopped server): the stop
    still ends after its grace and FINISH_S, and a second signal cuts even a
    FINISH_S that would never end in this test to HURRY_S."""
    monkeypatch.setattr("inventory.daemon.FINISH_S", 600.0 if second_signal else 2.0)
    async with proxied_postgres() as (proxy, proxied):
        database_url = proxied.render_as_string(hide_password=False)
        sim = simulator(latency_s=0.05, images=200)
        async with sim.serve() as base_url:
            settings = settings_for(
                tmp_path, base_url, database_url, daemon={"grace_s": 0.5}
            )
            daemon = Daemon(settings)
            await start_into_a_run(daemon, database_url)
            await asyncio.sleep(0.3)
            proxy.pause()
            stopping = asyncio.create_task(daemon.stop())
            if second_signal:
                await asyncio.sleep(0.1)
                daemon.hurry()
            await asyncio.wait_for(stopping, 30)

    assert daemon.phase == "stopped"


async def test_stop_lets_a_run_that_ends_within_its_grace_finish(
    tmp_path: Path, database_url: str
) -> None:
    sim = simulator(latency_s=0.1)
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"grace_s": 20}
        )
        daemon = Daemon(settings)
        await start_into_a_run(daemon, database_url)
        await daemon.stop()
        async with reading(database_url) as store:
            rows = await runs_of(store)

    assert [row["status"] for row in rows] == ["succeeded"]


async def test_rate_limit_answers_and_waits_reach_the_metrics(
    tmp_path: Path, database_url: str
) -> None:
    # A 0.5 s "minute" of 4 requests; the daemon believes in far more.
    sim = simulator(images=12, rate_per_minute=4, rate_per_hour=None, time_scale=120)
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path,
            base_url,
            database_url,
            rate_limit={"per_minute": 1000, "per_hour": 100000, "time_scale": 120},
        )
        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, succeeded(1)))
        async with reading(database_url) as store:
            rows = await runs_of(store)

    samples = parse_metrics(daemon.exposition().decode())
    assert run_counters(samples) == row_counters(rows)
    assert_api_figures_match(samples, rows)
    assert rows[0]["rate_limited"] > 0
    assert rows[0]["rate_wait_s"] > 0
    assert (
        sum(v for (name, labels), v in samples.items() if ("status", "429") in labels)
        == rows[0]["rate_limited"]
    )
    assert ("inventory_api_ratelimit_remaining", ()) in samples


async def test_a_run_too_long_for_the_interval_is_announced_at_start(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = simulator(images=30)
    images = [parse_image(item) for item in sim.images()]
    async with reading(database_url) as store:
        await store.migrate()
        await store.upsert_images("default", images, datetime.now(UTC))
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path,
            base_url,
            database_url,
            daemon={"interval_s": 30, "grace_s": 0},
            rate_limit={"per_minute": 5},
        )
        async with running(settings) as daemon:
            warnings = [
                record.getMessage()
                for record in caplog.records
                if record.name == "inventory.daemon"
                and record.levelno == logging.WARNING
            ]

    private = sum(1 for image in images if image.public is not True)
    least_s = 60.0 * ((1 + private - 1) // 5)  # one listing page, then actions
    samples = parse_metrics(daemon.exposition().decode())
    assert warnings == [
        f"A full run takes about {least_s:.1f} s within the rate budgets, longer "
        "than the 30.0 s between triggers: runs will follow each other back to "
        "back at the pace the budgets allow"
    ]
    assert value(samples, "inventory_sync_expected_duration_seconds") == least_s
    assert value(samples, "inventory_schedule_overrun") == 1.0


async def test_start_up_closes_runs_a_dead_process_left_and_prunes_old_ones(
    tmp_path: Path, database_url: str
) -> None:
    now = datetime.now(UTC)
    async with reading(database_url) as store:
        await store.migrate()
        await succeeded_run(store, now - timedelta(days=100), timedelta(0))
        await store.start_run("default", now - timedelta(hours=1))
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(tmp_path, base_url, database_url)
        async with reading(database_url) as store, running(settings):
            rows = await eventually(runs_where(store, succeeded(1)))

    assert [(row["id"], row["status"], row["error"]) for row in rows] == [
        (2, "interrupted", "The process running this sync stopped before it ended."),
        (3, "succeeded", None),
    ]


async def test_a_second_signal_cuts_the_grace_short(
    tmp_path: Path, database_url: str
) -> None:
    async with mid_run(tmp_path, database_url, grace_s=600) as (daemon, store):
        stopping = asyncio.create_task(daemon.stop())
        await asyncio.sleep(0.2)
        daemon.hurry()
        await asyncio.wait_for(stopping, 15)  # before the run could end
        rows = await runs_of(store)

    assert [row["status"] for row in rows] == ["interrupted"]


async def test_a_refused_token_fails_each_run_in_one_line_and_the_daemon_goes_on(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = simulator(token="dop_v1_the_only_accepted_token")
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"interval_s": 0.2}
        )

        def two_failed(rows: list[dict[str, Any]]) -> bool:
            return [row["status"] for row in rows].count("failed") >= 2

        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, two_failed))

    errors = [
        r
        for r in caplog.records
        if r.name == "inventory.daemon" and r.levelno >= logging.ERROR
    ]
    samples = parse_metrics(daemon.exposition().decode())
    assert errors[0].getMessage().startswith("DigitalOcean refused the token (HTTP 401")
    assert {record.exc_info for record in errors} == {None}
    assert TOKEN not in caplog.text
    assert value(samples, "inventory_sync_runs_total", status="failed") >= 2


async def test_a_token_file_rotated_to_garbage_is_one_line_until_it_is_mended(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    sim = simulator(rate_per_minute=None, rate_per_hour=None)  # runs back to back
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path,
            base_url,
            database_url,
            token_file=token_file,
            daemon={"interval_s": 0.5},
        )

        async def told() -> bool:
            """the daemon to say the token file holds no token"""
            return "is not UTF-8 text" in caplog.text

        async with reading(database_url) as store, running(settings):
            await eventually(runs_where(store, succeeded(1)))
            token_file.write_bytes(b"dop_v1_\xff\xfe")
            await eventually(told)
            token_file.write_text(TOKEN)
            await eventually(runs_where(store, succeeded(2)))

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    assert {r.exc_info for r in errors} == {None}
    assert errors[0].getMessage() == (
        f"api.token_file: {token_file} is not UTF-8 text; it is not a token file. "
        "The next run is on schedule."
    )


async def test_an_unexpected_error_logs_one_traceback_and_the_next_run_happens(
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real_run = SyncRun.run

    async def broken_once(self: SyncRun) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the sync")
        await real_run(self)

    monkeypatch.setattr(SyncRun, "run", broken_once)
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"interval_s": 0.2}
        )
        async with reading(database_url) as store, running(settings) as daemon:
            rows = await eventually(runs_where(store, succeeded(1)))

    tracebacks = [record for record in caplog.records if record.exc_info]
    samples = parse_metrics(daemon.exposition().decode())
    assert [record.getMessage() for record in tracebacks] == [
        "The sync run failed; the next run is on schedule"
    ]
    failed = [row for row in rows if row["status"] == "failed"]
    assert [row["error"] for row in failed] == ["RuntimeError: a bug in the sync"]
    assert {row["status"] for row in rows} == {"failed", "succeeded"}
    # Counted once its row was written, like every run.
    assert value(samples, "inventory_sync_runs_total", status="failed") == 1.0


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A PostgreSQL store alone: a SQLite file cannot be made to stop answering."""
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


async def test_readiness_fails_when_the_store_stops_answering(
    tmp_path: Path, postgres_url: str
) -> None:
    database_url = postgres_url
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(tmp_path, base_url, database_url)
        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, succeeded(1)))
            assert daemon.url is not None
            ready = await get(f"{daemon.url}/readyz")
            await drop_postgres_database(database_url)
            gone = await get(f"{daemon.url}/readyz")

    assert ready[0] == 200
    assert gone[0] == 503
    assert json.loads(gone[1])["status"] == "store not answering"


async def test_a_store_that_never_answers_stops_start_up_with_a_clear_message(
    tmp_path: Path,
) -> None:
    settings = settings_for(
        tmp_path,
        "http://127.0.0.1:9",
        "postgresql://nobody@127.0.0.1:1/inventory",
        daemon={"store_wait_s": 1.5},
    )
    daemon = Daemon(settings)
    starting = asyncio.create_task(daemon.start())

    async def serving() -> str | None:
        """the endpoints to be served"""
        return daemon.url

    url = await eventually(serving)
    health = await get(f"{url}/healthz")
    try:
        with pytest.raises(
            StoreError, match=r"^The store did not answer within 2 s \(daemon"
        ):
            await starting
    finally:
        await daemon.stop()

    assert health == (200, '{"status": "starting"}')


# The real process, signalled.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def snapshot(sim: Simulator) -> tuple[dict[int, Any], dict[int, tuple[int, Any]]]:
    """Every image and image action the simulator serves now, by id."""
    images = {image["id"]: image for image in sim.images()}
    actions = {
        action["id"]: (image_id, action)
        for image_id in images
        for action in sim.actions_for(image_id)
    }
    return images, actions


async def stored(database_url: str) -> tuple[list[Any], list[Any], list[Any]]:
    async with reading(database_url) as store, store.engine.connect() as conn:
        images = (await conn.execute(select(ImageRow.__table__))).all()
        regions = (await conn.execute(select(ImageRegionRow.__table__))).all()
        actions = (await conn.execute(select(ImageActionRow.__table__))).all()
    return list(images), list(regions), list(actions)


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_inventory_run_syncs_serves_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path, database_url: str
) -> None:
    """The issue's acceptance test, end to end, with real signals."""
    sim = simulator(images=40, latency_s=0.2)
    first = snapshot(sim)
    port, grace_s = free_port(), 1.0
    config = tmp_path / "inventory.toml"
    config.write_text(
        f"[daemon]\ninterval_s = 1\njitter_s = 0\ngrace_s = {grace_s}\n"
        "[sync]\nconcurrency = 2\ndeadline_s = 30\n[log]\nformat = 'json'\n"
    )
    async with sim.serve() as base_url:
        environ = {
            **os.environ,
            "INVENTORY_CONFIG": str(config),
            "DIGITALOCEAN_TOKEN": TOKEN,
            "DIGITALOCEAN_API_URL": base_url,
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_HTTP_PORT": str(port),
        }
        log = tmp_path / "daemon.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from inventory.cli import main; main()",
                "run",
                env=environ,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            async with reading(database_url) as store:
                await eventually(runs_where(store, succeeded(2)), 40)
                health, ready = (
                    await get(f"{endpoint}/healthz"),
                    await get(f"{endpoint}/readyz"),
                )
                samples, rows = await consistent_metrics(endpoint, store)
                sim.churn()  # the next runs see a changed account
                second = snapshot(sim)
                await signal_mid_run(process, store, after_id=rows[-1]["id"])
                await asyncio.wait_for(process.wait(), 30)
                final = await runs_of(store)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        images, regions, actions = await stored(database_url)

    assert (health[0], ready[0]) == (200, 200)
    assert json.loads(ready[1])["status"] == "ready"
    assert run_counters(samples) == row_counters(rows)
    assert value(samples, "inventory_sync_last_success_timestamp_seconds") == (
        pytest.approx(rows[-1]["finished_at"].timestamp(), abs=1.0)
    )
    assert total(samples, "inventory_api_requests_total") >= sum(
        row["requests"] for row in rows
    )
    assert process.returncode == 0
    assert [row["status"] for row in final[:2]] == ["succeeded", "succeeded"]
    assert final[-1]["status"] == "interrupted"
    assert final[-1]["error"] == STOPPED_FROM_OUTSIDE
    assert "running" not in {row["status"] for row in final}
    assert_intact(first, second, images, regions, actions)
    assert_logs_are_json_lines_without_the_token(log, final)


async def consistent_metrics(
    endpoint: str, store: Store
) -> tuple[Samples, list[dict[str, Any]]]:
    """Metrics and rows read with no run ending in between (runs are back to back)."""
    for _ in range(50):
        before = parse_metrics((await get(f"{endpoint}/metrics"))[1])
        rows = await runs_of(store)
        after = parse_metrics((await get(f"{endpoint}/metrics"))[1])
        if run_counters(before) == run_counters(after):
            return after, [row for row in rows if row["status"] != "running"]
    pytest.fail("a run ended during every attempt to read the metrics")


async def signal_mid_run(
    process: asyncio.subprocess.Process, store: Store, after_id: int
) -> float:
    """SIGTERM once a run after `after_id` has gone for half a second."""

    def later_run_going(rows: list[dict[str, Any]]) -> bool:
        return any(r["status"] == "running" and r["id"] > after_id for r in rows)

    await eventually(runs_where(store, later_run_going), 20)
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    return time.monotonic()


def assert_intact(
    first: tuple[dict[int, Any], dict[int, tuple[int, Any]]],
    second: tuple[dict[int, Any], dict[int, tuple[int, Any]]],
    images: list[Any],
    regions: list[Any],
    actions: list[Any],
) -> None:
    """Every stored row is exactly what the simulator served at some point.

    The simulator changed once (the churn), so each row must equal its first
    or its second version; an interrupted run may have stored some second
    versions, never a mix within a row nor a row without its regions. All
    first versions were stored by the two runs that succeeded before.
    """
    first_images, first_actions = first
    second_images, second_actions = second
    for row in images:
        versions = [v[row.id] for v in (first_images, second_images) if row.id in v]
        assert row.raw in versions, f"image {row.id} is no version served"
        assert (row.name, row.slug, row.status, row.public) == (
            row.raw.get("name"),
            row.raw.get("slug"),
            row.raw.get("status"),
            row.raw.get("public"),
        )
        if row.deleted_at is not None:
            assert row.id not in second_images, f"image {row.id} wrongly deleted"
    stored_regions: dict[int, set[str]] = {}
    for region in regions:
        stored_regions.setdefault(region.image_id, set()).add(region.region_slug)
    assert stored_regions == {
        row.id: set(row.raw["regions"]) for row in images if row.raw.get("regions")
    }
    for row in actions:
        versions = [v[row.id] for v in (first_actions, second_actions) if row.id in v]
        assert (row.image_id, row.raw) in versions, f"action {row.id} is no version"
    assert {row.id for row in images} >= set(first_images)
    assert {row.id for row in actions} >= set(first_actions)


def assert_logs_are_json_lines_without_the_token(
    log: Path, runs: list[dict[str, Any]]
) -> None:
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    summaries = [line for line in lines if line["message"].startswith("sync ")]
    assert TOKEN not in text
    assert [line["message"].split(":")[0] for line in summaries] == [
        f"sync {row['status']}" for row in runs
    ]
    assert [line["level"] for line in summaries].count("INFO") == sum(
        row["status"] == "succeeded" for row in runs
    )


async def test_a_second_daemon_on_the_account_waits_until_the_first_stops(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling update: the new daemon is alive but not ready, and never syncs
    beside the old one."""
    monkeypatch.setattr("inventory.daemon.LOCK_RETRY_S", 0.05)
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(tmp_path, base_url, database_url)
        async with reading(database_url) as store:
            first = Daemon(settings)
            await first.start()
            await eventually(runs_where(store, succeeded(1)))
            second = Daemon(settings)
            starting = asyncio.create_task(second.start())
            try:
                await eventually(
                    lambda: _async(second.phase == "waiting for another daemon")
                )
                assert second.health().ok
                assert not (await second.readiness()).ok
                runs_before = len(await runs_of(store))
            finally:
                await first.stop()
            await asyncio.wait_for(starting, 10)
            rows = await eventually(runs_where(store, succeeded(2)))
            await second.stop()

    assert len(rows) > runs_before
    # Never two at once: each run starts after the one before it ended.
    ordered = sorted(rows, key=lambda row: row["started_at"])
    for before, after in itertools.pairwise(ordered):
        assert before["finished_at"] <= after["started_at"]


async def test_a_daemon_that_lost_its_lock_stands_back_until_it_has_it_again(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its PostgreSQL connection dropped (or its lock file was removed), and
    another process took the lock: this daemon must not sync beside it."""
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"interval_s": 0.2}
        )
        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, succeeded(1)))
            assert daemon._lock is not None
            async with lock_taken_over(daemon._lock, store, database_url):

                async def stood_back() -> bool:
                    """the daemon to see its lock taken"""
                    samples = parse_metrics(daemon.exposition().decode())
                    return value(samples, "inventory_account_lock_held") == 0.0

                await eventually(stood_back)
                before = len(await runs_of(store))
                await asyncio.sleep(1.0)  # five triggers
                assert len(await runs_of(store)) == before
            rows = await eventually(runs_where(store, succeeded(before + 1)))
            samples = parse_metrics(daemon.exposition().decode())

    assert value(samples, "inventory_account_lock_held") == 1.0
    assert "This run is skipped." in caplog.text
    ordered = sorted(rows, key=lambda row: row["started_at"])
    for earlier, later in itertools.pairwise(ordered):
        assert earlier["finished_at"] <= later["started_at"]


async def test_a_daemon_whose_lock_is_taken_mid_run_stops_that_run(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run itself notices, not only the next one: it ends interrupted,
    saying why, and the gauge drops until the lock is the daemon's again."""
    monkeypatch.setattr("inventory.sync.LOCK_CHECK_S", 0.05)
    sim = simulator(images=200, latency_s=0.05)
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"interval_s": 0.2}
        )
        async with reading(database_url) as store, running(settings) as daemon:
            await eventually(runs_where(store, a_run_started))
            assert daemon._lock is not None
            async with lock_taken_over(daemon._lock, store, database_url):

                def stopped(rows: list[dict[str, Any]]) -> bool:
                    return any(row["status"] == "interrupted" for row in rows)

                rows = await eventually(runs_where(store, stopped))

                async def stood_back() -> bool:
                    """the lock gauge to drop"""
                    samples = parse_metrics(daemon.exposition().decode())
                    return value(samples, "inventory_account_lock_held") == 0.0

                await eventually(stood_back)
            await eventually(runs_where(store, succeeded(1)), timeout_s=30)

    [interrupted] = [row for row in rows if row["status"] == "interrupted"]
    assert interrupted["error"].endswith("It took the lock during this run.")


async def _async(value: bool) -> bool:
    return value


async def test_a_run_whose_end_the_store_could_not_take_is_closed_by_the_next(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store blinks as a run ends: its row is recorded failed by the next
    run, and counted then, so the counters keep matching the rows."""
    real_finish = Store.finish_run
    calls = 0

    async def blink_once(self: Store, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("The store at x does not answer: connection reset")
        await real_finish(self, *args, **kwargs)

    monkeypatch.setattr(Store, "finish_run", blink_once)
    sim = simulator()
    async with sim.serve() as base_url:
        settings = settings_for(
            tmp_path, base_url, database_url, daemon={"interval_s": 0.2}
        )
        async with reading(database_url) as store, running(settings) as daemon:
            rows = await eventually(runs_where(store, succeeded(1)))
            samples = parse_metrics(daemon.exposition().decode())

    assert rows[0]["status"] == "failed"
    assert "before this run's end was recorded" in rows[0]["error"]
    statuses = [row["status"] for row in rows if row["status"] != "running"]
    for status in ("failed", "succeeded"):
        counted = value(samples, "inventory_sync_runs_total", status=status)
        assert counted == statuses.count(status), status


async def test_a_restarted_daemon_is_ready_on_the_store_s_fresh_success(
    tmp_path: Path, database_url: str
) -> None:
    now = datetime.now(UTC)
    async with reading(database_url) as store:
        await store.migrate()
        await succeeded_run(store, now - timedelta(minutes=2), timedelta(minutes=1))
    sim = simulator(latency_s=2.0)  # this process's first run cannot end soon
    async with sim.serve() as base_url:
        settings = settings_for(tmp_path, base_url, database_url)
        async with running(settings) as daemon:
            ready = await daemon.readiness()
            samples = parse_metrics(daemon.exposition().decode())

    assert ready.ok, ready.detail
    last = value(samples, "inventory_sync_last_success_timestamp_seconds")
    assert abs(last - (now - timedelta(minutes=1)).timestamp()) < 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_store_another_process_holds_at_start_is_waited_out_not_fatal(
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon starts, the runs fail in one line while the SQLite file is
    held, and the first run after closes what a dead process left."""
    import inventory.store

    monkeypatch.setattr(inventory.store, "SQLITE_BUSY_PATIENCE_S", 0.5)
    async with reading(database_url) as store:
        await store.migrate()
        await store.start_run("default", datetime.now(UTC))  # a dead process's
    sim = simulator(rate_per_minute=None, rate_per_hour=None)
    with another_writer(database_url.removeprefix("sqlite:///")) as holder:
        async with sim.serve() as base_url:
            settings = settings_for(
                tmp_path, base_url, database_url, daemon={"interval_s": 0.5}
            )

            async def failed_while_held() -> bool:
                """a run to fail on the held file"""
                return "The sync run failed" in caplog.text

            async with reading(database_url) as store, running(settings):
                await eventually(failed_while_held)
                holder.execute("ROLLBACK")
                rows = await eventually(runs_where(store, succeeded(1)))

    assert [row["status"] for row in rows][:2] == ["interrupted", "succeeded"]
    assert "(database is locked). Trying again before the first run." in caplog.text
