"""`inventory status`: the runs table, its JSON, and exit codes for health checks."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inventory.errors import StoreError
from inventory.status import _status, judge, status_command
from inventory.store import RunCounts, Store

from conftest import make_settings, proxied_postgres

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AGE_S = 1800.0  # twice the default 900 s interval, for an empty store


def run(
    run_id: int, status: str, ended_ago_s: float | None, took_s: float = 60.0
) -> dict[str, object]:
    finished = None if ended_ago_s is None else NOW - timedelta(seconds=ended_ago_s)
    started = (finished or NOW) - timedelta(seconds=took_s)
    return {
        "id": run_id,
        "status": status,
        "started_at": started,
        "finished_at": finished,
    }


def test_no_completed_run_is_unhealthy() -> None:
    health = judge([run(1, "running", None)], NOW, AGE_S)

    assert (health.healthy, health.reason) == (False, "no run has completed yet")


def test_a_fresh_success_is_healthy_even_while_the_next_run_goes() -> None:
    runs = [run(2, "running", None), run(1, "succeeded", 60)]

    health = judge(runs, NOW, AGE_S)

    assert health.healthy
    assert health.reason == (
        "the last completed run, #1, succeeded 60 s ago (readiness age 1800 s)"
    )


def test_a_success_older_than_the_readiness_age_is_unhealthy() -> None:
    health = judge([run(1, "succeeded", 1801)], NOW, AGE_S)

    assert not health.healthy
    assert health.reason == (
        "the last completed run, #1, succeeded 1801 s ago, "
        "longer than the readiness age of 1800 s"
    )


@pytest.mark.parametrize("status", ["partial", "failed", "interrupted"])
def test_a_last_run_that_did_not_succeed_is_unhealthy(status: str) -> None:
    runs = [run(2, status, 10), run(1, "succeeded", 100)]

    health = judge(runs, NOW, AGE_S)

    assert (health.healthy, health.reason) == (
        False,
        f"the last completed run, #2, ended {status}",
    )


# The command, on a real store.


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ./inventory.toml nor INVENTORY_* variable leaks in from the machine."""
    monkeypatch.chdir(tmp_path)
    for name in ("INVENTORY_CONFIG", "INVENTORY_DATABASE_URL", "DIGITALOCEAN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield


async def record(
    store: Store, status: str, ended_ago_s: float, took_s: float = 30.0
) -> int:
    finished = datetime.now(UTC) - timedelta(seconds=ended_ago_s)
    run_id = await store.start_run("default", finished - timedelta(seconds=took_s))
    counts = RunCounts(images_seen=3, actions_seen=7, requests=4)
    await store.finish_run(
        "default", run_id, status=status, finished_at=finished, counts=counts
    )
    return run_id


def invoke(*args: str) -> Result:
    return CliRunner().invoke(status_command, list(args), obj={})


@pytest.fixture
async def fresh(store: Store, database_url: str) -> str:
    """A store whose last run succeeded a minute ago, after a failed one."""
    await record(store, "failed", ended_ago_s=1000)
    await record(store, "succeeded", ended_ago_s=60)
    return database_url


@pytest.fixture
async def stale(store: Store, database_url: str) -> str:
    """A store whose last success is three hours old."""
    await record(store, "succeeded", ended_ago_s=3 * 3600)
    return database_url


@pytest.fixture
async def interrupted(store: Store, database_url: str) -> str:
    """A store whose last completed run was interrupted."""
    await record(store, "succeeded", ended_ago_s=120)
    await record(store, "interrupted", ended_ago_s=60)
    return database_url


@pytest.fixture
async def empty(store: Store, database_url: str) -> str:
    return database_url


def test_status_exits_0_and_shows_the_runs_when_the_last_success_is_fresh(
    fresh: str,
) -> None:
    result = invoke("--database", fresh)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["id", "started_at", "status", "duration_s"]
    assert [line.split()[2] for line in lines[2:4]] == ["succeeded", "failed"]
    assert lines[-1].startswith("healthy: the last completed run, #2, succeeded")


def test_status_exits_1_when_the_last_success_is_too_old(stale: str) -> None:
    result = invoke("--database", stale)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith(
        "unhealthy: the last completed run, #1, succeeded 10800 s ago"
    )


def test_status_exits_1_when_the_last_completed_run_was_interrupted(
    interrupted: str,
) -> None:
    result = invoke("--database", interrupted)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        "unhealthy: the last completed run, #2, ended interrupted"
    )


def test_status_exits_1_before_any_run(empty: str) -> None:
    result = invoke("--database", empty)

    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "No sync runs recorded yet.",
        "unhealthy: no run has completed yet",
    ]


def test_status_prints_json_with_the_verdict_and_the_runs(fresh: str) -> None:
    result = invoke("--database", fresh, "--json", "--limit", "1")

    document = json.loads(result.output)
    assert result.exit_code == 0
    assert (document["healthy"], document["readiness_age_s"]) == (True, 1800.0)
    assert [(r["id"], r["status"]) for r in document["runs"]] == [(2, "succeeded")]
    assert document["runs"][0]["duration_s"] == pytest.approx(30.0)
    assert document["runs"][0]["images_seen"] == 3


def test_the_readiness_age_setting_decides_freshness(
    stale: str, tmp_path: Path
) -> None:
    config = tmp_path / "inventory.toml"
    config.write_text("[daemon]\nreadiness_age_s = 86400\n")

    result = CliRunner().invoke(
        status_command, ["--database", stale], obj={"config": str(config)}
    )

    assert result.exit_code == 0, result.output


def test_a_store_that_cannot_be_read_exits_1_not_2(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'inventory.db'}"

    result = invoke("--database", missing)

    assert (result.exit_code, result.output) == (
        1,
        f"inventory: There is no store at {tmp_path / 'inventory.db'} yet.\n",
    )


def test_a_bad_setting_exits_1_not_2_so_docker_reads_it_as_unhealthy(
    tmp_path: Path,
) -> None:
    result = invoke("--database", "mysql://nobody@localhost/inventory")

    assert result.exit_code == 1
    assert "only sqlite:/// and postgresql:// are supported" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--limit", "0"],
        ["status", "extra-argument"],
        ["--log-level", "LOUD", "status"],
    ],
)
def test_bad_usage_of_status_exits_1_not_2(args: list[str]) -> None:
    """Docker reserves a health check's exit code 2."""
    from inventory.cli import cli

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 1, result.output
    assert "Error:" in result.output


async def test_a_store_that_hangs_is_one_line_within_the_check_s_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partitioned PostgreSQL: status gives up after STATUS_S, saying so,
    instead of hanging past the container's health-check timeout."""
    monkeypatch.setattr("inventory.status.STATUS_S", 0.5)
    async with proxied_postgres() as (proxy, proxied):
        proxy.pause()
        settings = make_settings(
            database_url=proxied.render_as_string(hide_password=False)
        )
        with pytest.raises(StoreError) as raised:
            await asyncio.wait_for(_status(settings), 30)

    assert str(raised.value) == (
        f"The store at {proxied.render_as_string()} did not answer within 0.5 s."
    )


async def test_a_sqlite_store_locked_by_another_process_is_one_line_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader waits SQLITE_READ_BUSY_TIMEOUT_MS for a lock, not the writer's
    30 s: a health check must answer within its own timeout."""
    path = tmp_path / "held.db"
    fresh = f"sqlite:///{path}"
    store = Store.open(fresh)
    try:
        await store.migrate()
        await record(store, "succeeded", ended_ago_s=60)
    finally:
        await store.close()
    monkeypatch.setattr("inventory.store.SQLITE_READ_BUSY_TIMEOUT_MS", 100)
    holder = sqlite3.connect(path)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE sync_runs SET error = 'held'")
        with pytest.raises(StoreError) as raised:
            await asyncio.wait_for(_status(make_settings(database_url=fresh)), 20)
    finally:
        holder.close()

    assert str(raised.value).endswith("database is locked")
