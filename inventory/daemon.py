"""`inventory run`: the daemon that keeps the store in step, on a schedule.

It waits for the store, migrates it, syncs at start and then on an interval or
a cron schedule (APScheduler's asyncio scheduler), serves /healthz, /readyz and
/metrics, and on SIGTERM or SIGINT lets a running sync finish within a grace
period. The sync itself knows nothing of any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
)
from apscheduler.schedulers.asyncio import (  # type: ignore[import-untyped]
    AsyncIOScheduler,
)
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import (  # type: ignore[import-untyped]
    IntervalTrigger,
)
from sqlalchemy.exc import SQLAlchemyError

from inventory.client import limiter_for, open_client
from inventory.config import Settings
from inventory.errors import AccountBusy, AuthError, ConfigError, StoreError, one_line
from inventory.metrics import Metrics
from inventory.ratelimit import Budget
from inventory.store import AccountLock, Store
from inventory.sync import SyncResult, plan_run, sync_account
from inventory.web import Check, Endpoints

logger = logging.getLogger(__name__)

JOB_ID = "sync"
# How long /readyz waits for the store's answer: within Kubernetes' default
# probe timeout (1 s), so a slow store reads as not ready, not as a dead probe.
STORE_PING_S = 0.8
AFTER_RUN_S = 10.0  # for the pruning and re-planning after a run
STORE_RETRY_MAX_S = 5.0
HURRY_S = 1.0  # what is left of FINISH_S after a second signal
FINISH_S = 5.0  # after the grace: the cancelled run's record, the lock, the pool
OVERDUE_S = 60.0  # a run this long past its deadline means the deadline failed
LOCK_RETRY_S = 5.0  # how often a daemon waiting for the account lock asks again
CRON_SAMPLES = 24  # triggers looked at to learn a cron schedule's gaps


# The schedule, and what it implies for freshness.


def trigger_for(settings: Settings) -> Any:
    """The APScheduler trigger: the cron expression if set, else the interval."""
    daemon = settings.daemon
    jitter_s = jitter_for(settings) or None
    if daemon.cron is not None:
        return _cron_trigger(daemon.cron, jitter_s)
    return IntervalTrigger(seconds=daemon.interval_s, timezone=UTC, jitter=jitter_s)


def jitter_for(settings: Settings) -> float:
    """The jitter in seconds, capped: wider than half a gap, triggers could swap."""
    shortest_s, _ = schedule_gaps_s(settings)
    return min(settings.daemon.jitter_s, shortest_s / 2)


def schedule_gaps_s(settings: Settings) -> tuple[float, float]:
    """The shortest and the longest time between two triggers, in seconds."""
    daemon = settings.daemon
    if daemon.cron is None:
        return daemon.interval_s, daemon.interval_s
    trigger = _cron_trigger(daemon.cron, None)
    fires: list[datetime] = []
    previous, now = None, datetime.now(UTC)
    for _ in range(CRON_SAMPLES):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        fires.append(fire)
        previous = now = fire
    gaps = [(b - a).total_seconds() for a, b in zip(fires, fires[1:], strict=False)]
    if not gaps:
        raise ConfigError("daemon.cron: the expression never fires twice.")
    return min(gaps), max(gaps)


def _cron_trigger(expression: str, jitter_s: float | None) -> Any:
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigError(
            f"daemon.cron: expected five fields (minute hour day month weekday), "
            f"as in '*/15 * * * *'; got {len(fields)}."
        )
    minute, hour, day, month, weekday = fields
    if any(character.isdigit() for character in weekday):
        # APScheduler 3 counts weekdays from Monday = 0, cron from Sunday = 0.
        raise ConfigError(
            "daemon.cron: write the weekday field with names (mon-fri, sun), "
            "not numbers, which cron and APScheduler 3 read differently."
        )
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekday,
            timezone=UTC,
            jitter=jitter_s,
        )
    except ValueError as exc:
        raise ConfigError(f"daemon.cron: {exc}.") from None


def readiness_age_s(settings: Settings, expected_run_s: float | None) -> float:
    """How old the last success may be: the setting, else twice the longer of
    the gap between triggers and the expected length of a run."""
    if settings.daemon.readiness_age_s is not None:
        return settings.daemon.readiness_age_s
    _, longest_s = schedule_gaps_s(settings)
    return 2 * max(longest_s, expected_run_s or 0.0)


async def estimate_run_s(
    store: Store, settings: Settings, budget: Budget, used_hour: int = 0
) -> float | None:
    """The least time the rate budgets allow a full run, from the last copy."""
    plan = await plan_run(store, settings)
    if plan.requests is None:
        return None
    return budget.duration_s(plan.requests, used_hour)


async def wait_for_store(store: Store, wait_s: float) -> None:
    """Ping the store until it answers; StoreError after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    delay_s = 0.5
    while True:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), STORE_PING_S)):
                await store.ping()
            return
        except (StoreError, TimeoutError) as exc:
            reason = str(exc) or "no answer in time"
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise StoreError(
                    f"The store did not answer within {wait_s:.0f} s "
                    f"(daemon.store_wait_s); check store.url or "
                    f"INVENTORY_DATABASE_URL and that the database is up. {reason}"
                ) from None
            logger.warning(
                "The store does not answer yet; retrying in %.1f s: %s",
                min(delay_s, left_s),
                reason,
            )
        await asyncio.sleep(min(delay_s, left_s))
        delay_s = min(delay_s * 2, STORE_RETRY_MAX_S)


class QuietScheduler(logging.Filter):
    """Drop APScheduler's INFO chatter and its warning for a skipped trigger.

    The daemon counts skipped triggers in a metric and starts the next run as
    soon as the running one ends, so a warning per trigger says nothing new.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.INFO:
            return False
        return "maximum number of running instances" not in record.getMessage()


def quiet_scheduler_logs() -> None:
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        target = logging.getLogger(name)
        if not any(isinstance(f, QuietScheduler) for f in target.filters):
            target.addFilter(QuietScheduler())


# The daemon.


class Daemon:
    """Syncs one account on a schedule and answers the endpoints' probes.

    `start()` returns once the first run is scheduled; `stop()` gives a running
    sync its grace period, then cancels it, and releases everything.
    """

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self.migrate = migrate
        # One limiter per token for the daemon's life: budgets span runs.
        self.limiter = limiter_for(settings)
        self.metrics = Metrics(self.limiter)
        self.store = Store.open(settings.database_url())
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.endpoints = Endpoints(self)
        self.phase = "starting"
        self.url: str | None = None
        self.last_success_at: datetime | None = None
        self.expected_run_s: float | None = None
        self._estimate_s: float | None = None
        self._last_duration_s: float | None = None
        self._shortest_gap_s, _ = schedule_gaps_s(settings)
        self._overrun = False
        self._again = False
        self._run: asyncio.Task[None] | None = None
        self._run_started: float | None = None
        self._job: asyncio.Task[Any] | None = None
        self._hurry = asyncio.Event()
        self._let_go = False  # the stop stopped waiting for a hung store
        self._hurried_at: float | None = None  # when a second signal came
        self._held = contextlib.AsyncExitStack()  # the account's sync lock
        self._lock: AccountLock | None = None
        self._stale_runs_left = False  # the start could not close them

    async def start(self) -> None:
        """Serve the endpoints, wait for and migrate the store, schedule runs."""
        daemon = self.settings.daemon
        self.url = await self.endpoints.start(daemon.http_host, daemon.http_port)
        # On SQLite, before the ping: opening a missing file creates it.
        check_first = not self.migrate and self.store.dialect == "sqlite"
        if check_first:
            await self.store.require_schema()
        await wait_for_store(self.store, daemon.store_wait_s)
        if self.migrate:
            await self.store.migrate()
        elif not check_first:
            await self.store.require_schema()
        await self._take_account_lock()
        await self._tidy_runs()
        await self._recall_last_success()
        await self._replan()
        self._schedule()
        self.phase = "running"
        logger.info(
            "Daemon started: account=%s store=%s schedule=%r readiness_age_s=%.0f",
            self.settings.account,
            self.store.describe(),
            self.describe_schedule(),
            readiness_age_s(self.settings, self.expected_run_s),
        )

    async def _take_account_lock(self) -> None:
        """Wait for the account's sync lock: one daemon per account and store.

        A rolling update starts the new daemon beside the old one; it waits,
        alive but not ready, until the old one stops.
        """
        while True:
            try:
                lock = self.store.account_lock(self.settings.account)
                self._lock = await self._held.enter_async_context(lock)
                self.metrics.lock_held.set(1)
                break
            except AccountBusy as exc:
                if self.phase != "waiting for another daemon":
                    logger.warning("%s Waiting for it to stop.", exc)
                    self.phase = "waiting for another daemon"
            await asyncio.sleep(LOCK_RETRY_S)
        self.phase = "starting"

    def describe_schedule(self) -> str:
        """The schedule in words, for the start-up line."""
        daemon = self.settings.daemon
        jitter_s = jitter_for(self.settings)
        jitter = f", jitter {jitter_s:g} s" if jitter_s else ""
        if daemon.cron is not None:
            return f"cron {daemon.cron} (UTC){jitter}"
        return f"every {daemon.interval_s:g} s{jitter}"

    def _schedule(self) -> None:
        quiet_scheduler_logs()
        self.scheduler.add_listener(
            self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
        )
        self.scheduler.add_job(
            self._scheduled,
            trigger_for(self.settings),
            id=JOB_ID,
            name="sync",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, round(self._shortest_gap_s)),
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.start()

    def _on_skipped(self, event: Any) -> None:
        """A trigger came while a run was going (or came late): count, coalesce."""
        running = event.code == EVENT_JOB_MAX_INSTANCES
        self.metrics.coalesced.labels("running" if running else "missed").inc()
        if running:
            logger.debug("A trigger came during a run; the next starts when it ends")
            self._again = True
        else:
            logger.warning("A trigger came too late and was skipped")

    async def _scheduled(self) -> None:
        """The job: one run, then another at once if a trigger came meanwhile.

        So a run longer than the interval is followed back to back, at the
        pace the rate budgets allow, and never by a pile of runs.
        """
        self._job = asyncio.current_task()
        try:
            self._again = True
            while self._again and self.phase == "running":
                self._again = False
                self._run = asyncio.create_task(self._sync_once(), name="sync-run")
                # wait(), not await: a cancelled run must not end the job.
                await asyncio.wait({self._run})
        except asyncio.CancelledError:
            if self.phase == "running":
                raise
            # Let go by a stop whose store hung: no job failure to report.
        finally:
            self._job = None

    async def _sync_once(self) -> None:
        """One run, its figures counted; nothing but cancellation escapes.

        A run is counted once its row is written, so the counters match the
        `sync_runs` rows; one whose end the store could not take is counted
        when the next run finds the store answering and closes it.
        """
        self._run_started = time.monotonic()
        self.metrics.running.set(1)
        try:
            if await self._confirm_lock():
                if self._stale_runs_left:  # before this run is one of them
                    await self._close_stale_runs()
                await self._close_unfinished()
                await self._sync()
        except (AuthError, ConfigError) as exc:  # a refused token, or its file
            logger.error("%s The next run is on schedule.", exc)
        except (StoreError, SQLAlchemyError, OSError) as exc:
            logger.error(
                "The sync run failed: %s The next run is on schedule.", one_line(exc)
            )
        except Exception:
            logger.exception("The sync run failed; the next run is on schedule")
        finally:
            self.metrics.running.set(0)
            self._run_started = None
        await self._after_run()

    async def _confirm_lock(self) -> bool:
        """Whether this process still holds the account's lock, taking it
        again if it was lost (its PostgreSQL connection dropped, say)."""
        if self._lock is None:
            return False
        try:
            await self._lock.confirm()
        except AccountBusy as exc:
            # Another daemon took it meanwhile: that one syncs; this one
            # tries again at each trigger.
            self.metrics.lock_held.set(0)
            logger.warning("%s This run is skipped.", exc)
            return False
        except StoreError as exc:
            self.metrics.lock_held.set(0)
            logger.error("%s The next run is on schedule.", exc)
            return False
        self.metrics.lock_held.set(1)
        return True

    async def _close_unfinished(self) -> None:
        closed = await self.store.close_unfinished_runs(datetime.now(UTC))
        if closed:
            logger.warning(
                "Recorded run(s) %s failed: the store stopped answering before "
                "their end was written",
                ", ".join(map(str, closed)),
            )
            self.metrics.runs.labels("failed").inc(len(closed))

    async def _sync(self) -> SyncResult:
        async with open_client(self.settings, self.limiter) as client:
            self.metrics.api.watch(client)
            try:
                return await sync_account(
                    client,
                    self.store,
                    self.settings,
                    on_result=self._record,
                    lock=self._lock,
                )
            finally:
                self.metrics.api.unwatch(client)

    def _elapsed_s(self) -> float:
        started = self._run_started
        return 0.0 if started is None else time.monotonic() - started

    def _record(self, result: SyncResult) -> None:
        if result.lost_lock:
            self.metrics.lock_held.set(0)  # until the next run takes it again
        if not result.recorded:
            return  # counted when the next run closes its row
        ended_at = datetime.now(UTC)
        self.metrics.record(result, ended_at)
        if result.status == "succeeded":
            self.last_success_at = ended_at
        if result.status in ("succeeded", "partial"):
            self._last_duration_s = result.duration_s

    async def _after_run(self) -> None:
        try:
            async with asyncio.timeout(AFTER_RUN_S):
                await self._prune()
                await self._replan()
        except (StoreError, SQLAlchemyError, OSError, TimeoutError) as exc:
            logger.warning("Could not tidy up after the run: %s", one_line(exc))

    async def _tidy_runs(self) -> None:
        """Close runs a dead process left `running`; prune old ones.

        A store that takes no write now (another process holds the SQLite
        file) does not stop the start: the first run tries again.
        """
        try:
            await self._close_stale_runs()
            await self._prune()
        except StoreError as exc:
            logger.warning("%s Trying again before the first run.", exc)

    async def _close_stale_runs(self) -> None:
        self._stale_runs_left = True
        closed = await self.store.close_stale_runs(
            self.settings.account, datetime.now(UTC)
        )
        self._stale_runs_left = False
        if closed:
            logger.warning("Marked %d run(s) left running by a process gone", closed)
            self.metrics.runs.labels("interrupted").inc(closed)

    async def _recall_last_success(self) -> None:
        """A restart keeps the readiness the store vouches for: its copy is as
        fresh as the last success, whichever process synced it."""
        last = await self.store.last_success_at(self.settings.account)
        if last is not None:
            self.last_success_at = last
            self.metrics.last_success.set(last.timestamp())

    async def _prune(self) -> None:
        days = self.settings.daemon.run_retention_days
        pruned = await self.store.prune_runs(
            self.settings.account, datetime.now(UTC) - timedelta(days=days)
        )
        if pruned:
            logger.info("Pruned %d sync_runs row(s) older than %g days", pruned, days)

    async def _replan(self) -> None:
        """Re-estimate a full run; say so when it no longer fits the schedule."""
        self._estimate_s = await estimate_run_s(
            self.store,
            self.settings,
            self.limiter.effective_budget,
            self.limiter.used_hour,
        )
        known = [s for s in (self._estimate_s, self._last_duration_s) if s is not None]
        self.expected_run_s = max(known) if known else None
        self.metrics.expected.set(self.expected_run_s or 0.0)
        self._check_fit()

    def _check_fit(self) -> None:
        expected_s, gap_s = self.expected_run_s, self._shortest_gap_s
        overrun = expected_s is not None and expected_s > gap_s
        if overrun and not self._overrun:
            logger.warning(
                "A full run takes about %.1f s within the rate budgets, longer than "
                "the %.1f s between triggers: runs will follow each other back to "
                "back at the pace the budgets allow",
                expected_s,
                gap_s,
            )
        elif self._overrun and not overrun:
            logger.info("Runs fit between triggers again (%.1f s)", expected_s or 0.0)
        self._overrun = overrun
        self.metrics.overrun.set(int(overrun))

    # Probes, for the endpoints.

    def health(self) -> Check:
        """Alive: the scheduler runs its job, and no run outlived its deadline."""
        if self.phase != "running":
            return Check(self.phase != "stopped", {"status": self.phase})
        if not self.scheduler.running or self.scheduler.get_job(JOB_ID) is None:
            return Check(False, {"status": "scheduler stopped"})
        overdue_s = self._elapsed_s() - self.settings.sync.deadline_s
        if self._run_started is not None and overdue_s > OVERDUE_S:
            return Check(False, {"status": "run past its deadline"})
        return Check(
            True, {"status": "ok", "sync_running": self._run_started is not None}
        )

    async def readiness(self) -> Check:
        """Ready: the store answers and a run succeeded within the readiness age."""
        if self.phase != "running":
            return Check(False, {"status": self.phase})
        # Not `asyncio.timeout`: a cancelled ping waits for its connection to
        # close (2 s more in SQLAlchemy's asyncpg adapter); the probe must not.
        ping = asyncio.ensure_future(self.store.ping())
        await asyncio.wait({ping}, timeout=STORE_PING_S)
        if ping.done() and ping.exception() is None:
            return self._freshness()
        if ping.done():
            reason = str(ping.exception())
        else:
            ping.cancel()
            ping.add_done_callback(_forget)
            reason = f"no answer within {STORE_PING_S} s"
        return Check(False, {"status": "store not answering", "error": reason})

    def _freshness(self) -> Check:
        limit_s = readiness_age_s(self.settings, self.expected_run_s)
        detail: dict[str, Any] = {"readiness_age_s": round(limit_s, 1)}
        if self.last_success_at is None:
            return Check(False, {"status": "no run has succeeded yet", **detail})
        age_s = (datetime.now(UTC) - self.last_success_at).total_seconds()
        detail["last_success_at"] = self.last_success_at.isoformat()
        detail["age_s"] = round(age_s, 1)
        if age_s > limit_s:
            return Check(False, {"status": "last success too old", **detail})
        return Check(True, {"status": "ready", **detail})

    def exposition(self) -> bytes:
        return self.metrics.exposition()

    # Stopping.

    def hurry(self) -> None:
        """Cut the grace short, and what follows it to HURRY_S: a running
        sync is cancelled now, and has a moment to record itself."""
        if self._hurried_at is None:
            self._hurried_at = time.monotonic()
        self._hurry.set()

    async def stop(self) -> None:
        """No new run; the running one gets its grace; then release everything.

        After the grace, everything else (the cancelled run recording itself,
        the lock, the store's connections) shares FINISH_S, and a second
        signal cuts it short: a store that hangs cannot hold the stop.
        """
        if self.phase in ("stopping", "stopped"):
            return
        self.phase = "stopping"
        if self.scheduler.running:
            self.scheduler.pause()
        await self._grace(self.settings.daemon.grace_s)
        finish_by = time.monotonic() + FINISH_S
        run = self._run
        if run is not None and not run.done():
            logger.warning("Cancelling the running sync; it is recorded interrupted")
            run.cancel()
            await self._bounded(asyncio.wait({run}), finish_by)
        if self._job is not None:
            await self._bounded(asyncio.wait({self._job}), finish_by)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # the asyncio scheduler shuts down on the loop
        await self.endpoints.stop()
        await self._bounded(self._close_unfinished(), finish_by)
        await self._bounded(self._held.aclose(), finish_by)
        # The pool's connections get a moment even when the rest took it all;
        # a close cut short is no error worth a traceback in the log.
        logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
        await self._bounded(self.store.close(), max(finish_by, time.monotonic() + 1))
        self.phase = "stopped"
        logger.info("Daemon stopped")

    async def _bounded(self, step: Awaitable[Any], finish_by: float) -> None:
        """Await a step of the stop until `finish_by` or a second signal; a
        step that fails or overstays is let go (the log says which)."""
        task = asyncio.ensure_future(step)
        while not task.done() and (left_s := self._left_s(finish_by)) > 0:
            waiting = {task}
            if self._hurried_at is None:
                waiting.add(asyncio.create_task(self._hurry.wait()))
            try:
                await asyncio.wait(
                    waiting, timeout=left_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for other in waiting - {task}:
                    other.cancel()
        if not task.done():
            task.cancel()
            if not self._let_go:
                logger.warning("Stopping without waiting longer for the store")
                self._let_go = True
            return
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            logger.warning("While stopping: %s", one_line(failure))

    def _left_s(self, finish_by: float) -> float:
        if self._hurried_at is not None:
            finish_by = min(finish_by, self._hurried_at + HURRY_S)
        return finish_by - time.monotonic()

    async def _grace(self, grace_s: float) -> None:
        run = self._run
        if run is None or run.done():
            return
        logger.info("Stopping: the running sync has %.0f s to finish", grace_s)
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            await asyncio.wait(
                {run, hurry}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hurry.cancel()


async def serve(settings: Settings, *, migrate: bool = True) -> int:
    """Run the daemon until SIGTERM or SIGINT; a second signal skips the grace."""
    daemon = Daemon(settings, migrate=migrate)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if stopping.is_set():
            logger.warning("%s again: cancelling the running sync now", signum.name)
            daemon.hurry()
            return
        logger.info("%s received: stopping", signum.name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await _until_stopped(daemon, stopping)
    finally:
        await daemon.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        # What a hung store left behind fails as the loop closes: expected now.
        loop.set_exception_handler(_after_stop)
    return 0


def _forget(task: asyncio.Future[Any]) -> None:
    """A ping let go: its end, whatever it is, was answered already."""
    if not task.cancelled():
        task.exception()


def _after_stop(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    logger.debug("After the stop: %s", context.get("exception") or context["message"])


async def _until_stopped(daemon: Daemon, stopping: asyncio.Event) -> None:
    """Start the daemon, then wait for the stop; a stop during start-up wins."""
    starting = asyncio.create_task(daemon.start())
    waiting = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            await waiting
    finally:
        for task in (starting, waiting):
            task.cancel()
        await asyncio.gather(starting, waiting, return_exceptions=True)


@click.command("run")
@click.option(
    "--database",
    metavar="URL",
    help="Database URL (sqlite:///PATH or postgresql://...); "
    "overrides INVENTORY_DATABASE_URL and the file.",
)
@click.option("--no-migrate", is_flag=True, help="Do not migrate the store first.")
@click.pass_context
def run_command(ctx: click.Context, database: str | None, no_migrate: bool) -> None:
    """Sync on a schedule and serve /healthz, /readyz and /metrics until stopped."""
    from inventory.cli import run_async, settings_from

    settings = settings_from(ctx, database=database)
    run_async(_run)(settings, migrate=settings.store.migrate and not no_migrate)


async def _run(settings: Settings, *, migrate: bool) -> int:
    settings.token()  # fail before touching the store when there is none
    trigger_for(settings)  # and before serving, when the schedule is wrong
    return await serve(settings, migrate=migrate)
