"""`inventory status`: the last sync runs, and an exit code for health checks.

It exits 0 when the last completed run succeeded within the readiness age and
1 otherwise, whatever went wrong: Docker reserves exit code 2 for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError
from tabulate import tabulate

from inventory.client import limiter_for
from inventory.config import Settings, load_settings
from inventory.daemon import estimate_run_s, readiness_age_s
from inventory.errors import InventoryError, StoreError, one_line
from inventory.store import Store, missing_sqlite_file

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
JUDGED_RUNS = 20  # enough to find the last complete run's duration
STATUS_S = 8.0  # the store's time to answer: within a health check's timeout
ERROR_WIDTH = 60
COLUMNS = (
    "id",
    "started_at",
    "status",
    "duration_s",
    "images_seen",
    "images_added",
    "images_updated",
    "images_removed",
    "actions_seen",
    "actions_added",
    "actions_updated",
    "requests",
    "rate_limited",
    "error",
)


@dataclass(frozen=True)
class Health:
    """The verdict on the runs, with its reason in a sentence."""

    healthy: bool
    reason: str
    readiness_age_s: float


def judge(runs: Sequence[dict[str, Any]], now: datetime, age_s: float) -> Health:
    """Healthy when the newest completed run succeeded at most `age_s` ago."""
    ended = [run for run in runs if run["status"] != "running"]
    if not ended:
        return Health(False, "no run has completed yet", age_s)
    last = ended[0]
    name = f"the last completed run, #{last['id']},"
    if last["status"] != "succeeded":
        return Health(False, f"{name} ended {last['status']}", age_s)
    ago_s = (now - last["finished_at"]).total_seconds()
    if ago_s > age_s:
        reason = (
            f"{name} succeeded {ago_s:.0f} s ago, longer than the readiness "
            f"age of {age_s:.0f} s"
        )
        return Health(False, reason, age_s)
    reason = f"{name} succeeded {ago_s:.0f} s ago (readiness age {age_s:.0f} s)"
    return Health(True, reason, age_s)


def duration_s(run: dict[str, Any]) -> float | None:
    if run["finished_at"] is None:
        return None
    return float((run["finished_at"] - run["started_at"]).total_seconds())


def last_complete_duration_s(runs: Sequence[dict[str, Any]]) -> float | None:
    """How long the newest run that fetched everything took."""
    for run in runs:
        if run["status"] in ("succeeded", "partial"):
            return duration_s(run)
    return None


async def read_status(
    store: Store, settings: Settings, now: datetime
) -> tuple[list[dict[str, Any]], Health]:
    """The newest runs, and the verdict on them."""
    runs = await store.recent_runs(settings.account, limit=JUDGED_RUNS)
    budget = limiter_for(settings).budget
    known = [
        s
        for s in (
            await estimate_run_s(store, settings, budget),
            last_complete_duration_s(runs),
        )
        if s is not None
    ]
    age_s = readiness_age_s(settings, max(known) if known else None)
    return runs, judge(runs, now, age_s)


def render_table(runs: Sequence[dict[str, Any]]) -> str:
    """The runs as a plain-text table, newest first."""
    rows = []
    for run in runs:
        row = {key: run.get(key) for key in COLUMNS}
        row["started_at"] = run["started_at"].isoformat(timespec="seconds")
        seconds = duration_s(run)
        row["duration_s"] = None if seconds is None else round(seconds, 1)
        error = run.get("error") or ""
        if len(error) > ERROR_WIDTH:
            error = error[: ERROR_WIDTH - 1] + "…"
        row["error"] = error
        rows.append(row)
    return str(tabulate(rows, headers="keys", tablefmt="simple", missingval=""))


def render_json(runs: Sequence[dict[str, Any]], health: Health) -> str:
    document = {
        "healthy": health.healthy,
        "reason": health.reason,
        "readiness_age_s": health.readiness_age_s,
        "runs": [{**run, "duration_s": duration_s(run)} for run in runs],
    }
    return json.dumps(document, indent=2, default=_iso)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class NeverTwo(click.Command):
    """Docker reserves a health check's exit code 2: a usage error exits 1."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            from inventory.cli import HealthCheckUsageError

            raise HealthCheckUsageError(exc.message, exc.ctx) from None


@click.command("status", cls=NeverTwo)
@click.option(
    "--database",
    metavar="URL",
    help="Database URL (sqlite:///PATH or postgresql://...); "
    "overrides INVENTORY_DATABASE_URL and the file.",
)
@click.option(
    "--limit",
    "-n",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many runs to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, not a table.")
@click.pass_context
def status_command(
    ctx: click.Context, database: str | None, limit: int, as_json: bool
) -> None:
    """Show the last sync runs; exit 0 if the last completed one is fresh, else 1."""
    from inventory.cli import fail

    try:
        settings = _settings(ctx, database)
        runs, health = asyncio.run(_status(settings))
    except (InventoryError, SQLAlchemyError, OSError) as exc:
        fail(one_line(exc), EXIT_UNHEALTHY)
    shown = runs[:limit]
    if as_json:
        click.echo(render_json(shown, health))
    else:
        click.echo(render_table(shown) if shown else "No sync runs recorded yet.")
        click.echo(("healthy: " if health.healthy else "unhealthy: ") + health.reason)
    ctx.exit(EXIT_HEALTHY if health.healthy else EXIT_UNHEALTHY)


def _settings(ctx: click.Context, database: str | None) -> Settings:
    """Like the other commands' settings, but a bad one exits 1, not 2."""
    from inventory import logs

    obj = ctx.obj or {}
    settings = load_settings(obj.get("config"), overrides={"store": {"url": database}})
    secrets = []
    if settings.api.token is not None:
        secrets.append(settings.api.token.get_secret_value())
    logs.configure(
        settings.log.format, obj.get("log_level") or settings.log.level, secrets
    )
    return settings


async def _status(settings: Settings) -> tuple[list[dict[str, Any]], Health]:
    url = settings.database_url()
    if missing := missing_sqlite_file(url):
        raise StoreError(f"There is no store at {missing} yet.")
    store = Store.open(url, read_only=True)
    try:
        async with asyncio.timeout(STATUS_S):
            return await read_status(store, settings, datetime.now(UTC))
    except TimeoutError:
        raise StoreError(
            f"The store at {store.describe()} did not answer within {STATUS_S:g} s."
        ) from None
    except (OSError, SQLAlchemyError) as exc:
        from inventory.cli import with_hint

        raise StoreError(
            f"Cannot read the store at {store.describe()}: {with_hint(one_line(exc))}"
        ) from exc
    finally:
        # A hung store's connections are let go with the process.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await store.close()
