"""One sync run: list images, choose those whose actions to fetch, fetch, write.

The steps run as a pipeline: image pages are written as they arrive while a
bounded pool fetches actions, and one writer batches rows into transactions.
Nothing here knows SQL (that is the store) or the scheduler (that is the daemon).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inventory.client import DigitalOceanClient
from inventory.config import Settings, SyncSettings
from inventory.errors import (
    AccountBusy,
    APIError,
    AuthError,
    DeadlineExceeded,
    InventoryError,
    NotFoundError,
    StoreError,
    one_line,
)
from inventory.logs import NOTICE, redact
from inventory.records import Action, Image, PayloadError, parse_action, parse_image
from inventory.store import AccountLock, RunCounts, Store

logger = logging.getLogger(__name__)

STATUSES = ("running", "succeeded", "partial", "failed", "interrupted")
FLUSH_S = 0.5  # longest an action waits in the writer before it is stored
# A run the budgets will hold this long says so, and how far it got, this often:
# a person waiting on `inventory sync` should not take pacing for a hang.
LONG_RUN_S = 30.0
PROGRESS_S = 60.0
DRAIN_S = 10.0  # after its deadline, a run's time to store what it fetched
RECORD_S = 10.0  # the store's time to record how a run ended
# This many images' actions failing in a row, every retry spent, is an outage:
# the rest are left for the next run instead of each retried in turn.
OUTAGE_AFTER = 10
LOCK_CHECK_S = 2.0  # how often a run makes sure it still holds the account's lock


@dataclass
class SyncResult:
    """How a run ended, with the figures recorded in `sync_runs`."""

    account: str
    run_id: int
    status: str
    counts: RunCounts
    duration_s: float
    error: str | None = None
    failed_images: list[int] = field(default_factory=list)
    recorded: bool = True  # False: the store did not take its `sync_runs` row
    lost_lock: bool = False  # stopped: another process took the account's lock

    def summary(self) -> str:
        """One line for people and logs: key=value pairs."""
        c = self.counts
        line = (
            f"sync {self.status}: account={self.account} run={self.run_id} "
            f"images_seen={c.images_seen} images_added={c.images_added} "
            f"images_updated={c.images_updated} images_removed={c.images_removed} "
            f"actions_seen={c.actions_seen} actions_added={c.actions_added} "
            f"actions_updated={c.actions_updated} requests={c.requests} "
            f"rate_limited={c.rate_limited} rate_wait_s={c.rate_wait_s:.1f} "
            f"duration_s={self.duration_s:.1f}"
        )
        return line + (f" error={self.error!r}" if self.error else "")


@dataclass(frozen=True)
class Plan:
    """What a run expects to cost, estimated from the store's last copy."""

    images: int | None
    requests: int | None
    least_s: float | None


def images_needing_actions(
    images: Iterable[Image], actions_for: str = "private"
) -> list[Image]:
    """Choose the images whose actions to fetch.

    Public images carry no actions of the user's, so by default only the
    account's own are asked; an image that does not say is taken as its own.
    """
    if actions_for == "all":
        return list(images)
    return [image for image in images if image.public is not True]


def listing_filters(sync: SyncSettings) -> dict[str, str]:
    """The configured filters, as DigitalOcean's query parameters."""
    filters: dict[str, str] = {}
    if sync.private is not None:
        filters["private"] = "true" if sync.private else "false"
    if sync.type is not None:
        filters["type"] = sync.type
    if sync.tag_name is not None:
        filters["tag_name"] = sync.tag_name
    return filters


def deletion_scope(sync: SyncSettings) -> Callable[[Any], bool] | None:
    """Which stored images a filtered listing would have returned.

    None when the filter cannot be judged from stored fields (`type` names a
    kind of public image, not the image's own `type`), so nothing is deleted.
    """
    if sync.type is not None:
        return None
    private_only = sync.private is True
    tag = sync.tag_name

    def in_scope(row: Any) -> bool:
        if private_only and row.public is True:
            return False
        return tag is None or tag in (row.tags or [])

    return in_scope


class SyncRun:
    """The state of one run; `sync_account` is the way to use it."""

    def __init__(
        self, client: DigitalOceanClient, store: Store, settings: Settings
    ) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        self.account = settings.account
        self.counts = RunCounts()
        self.listing_complete = False
        self.listing_error: str | None = None
        self.failed_images: list[int] = []
        self.lost_lock = False
        self.seen_at = datetime.now(UTC)
        # The client and limiter may outlive the run (a daemon keeps one limiter
        # per token): the run records what changed while it ran.
        self._requests_before = client.requests
        self._rate_limited_before = client.limiter.rate_limited
        self._waited_before = client.limiter.waited_s
        self._fetches: asyncio.Queue[Image | None] = asyncio.Queue()
        self._writes: asyncio.Queue[_Write] = asyncio.Queue(maxsize=1000)
        self._pending: list[tuple[int, Action]] = []  # actions awaiting a batch
        self._pages_listed = 0  # image pages queued for writing
        self._pages_written = 0
        self._in_flight: asyncio.Future[None] | None = None  # a batch's write
        self._to_fetch = 0  # images queued for their actions
        self._fetched = 0
        self._progress_at = time.monotonic() + PROGRESS_S
        self._unreadable = 0  # listed images skipped for want of a usable id
        self._failing = 0  # images whose actions failed since the last success
        self._outage: str | None = None  # why the API is taken to be down
        self._not_asked = 0  # images left unasked because of it

    async def run(self) -> None:
        """List, fetch and write concurrently; then reconcile deletions."""
        n = self.settings.sync.concurrency
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_all())
                fetchers = [group.create_task(self._fetch_all()) for _ in range(n)]
                await self._list_images()
                for _ in fetchers:
                    self._fetches.put_nowait(None)
                await asyncio.gather(*fetchers)
                await self._writes.put(_END)
                await writer
        except BaseExceptionGroup as group:
            # The first failure says why; the others are its consequences.
            raise group.exceptions[0] from None
        await self._reconcile()

    async def _list_images(self) -> None:
        """Walk the image listing; queue each page for writing and fetching."""
        filters = listing_filters(self.settings.sync)
        seen: set[int] = set()
        total: int | None = None
        try:
            async for page in self.client.fetch_image_pages(filters):
                images = self._parse_images(page.items)
                # A listing that shifts while paged may list an image twice, on
                # one page or on two: store its last copy, fetch its actions once.
                new = list({i.id: i for i in images if i.id not in seen}.values())
                seen.update(image.id for image in images)
                self.counts.images_seen = len(seen)
                total = page.total if page.total is not None else total
                await self._writes.put(_Write(images=images))
                self._pages_listed += 1
                for image in images_needing_actions(
                    new, self.settings.sync.actions_for
                ):
                    self._fetches.put_nowait(image)
                    self._to_fetch += 1
        except AuthError:
            raise
        except APIError as exc:
            self.listing_error = str(exc)
            logger.error("The image listing did not complete: %s", exc)
            return
        self.listing_complete = self.listing_error is None
        if total is not None and total != len(seen) + self._unreadable:
            logger.warning(
                "The listing announced %d images and returned %d distinct ones%s",
                total,
                len(seen),
                f" and {self._unreadable} without a usable id"
                if self._unreadable
                else "",
            )
        self._log_listed()

    def _log_listed(self) -> None:
        """Say how long the action fetches left will take, at best."""
        left = self._to_fetch - self._fetched
        limiter = self.client.limiter
        least_s = limiter.effective_budget.duration_s(left, limiter.used_hour)
        # Counted as the progress lines count: of all images whose actions
        # this run fetches.
        logger.info(
            "Listed %d images; fetched the actions of %d of %d so far, the rest "
            "in %s at best within the rate budgets",
            self.counts.images_seen,
            self._fetched,
            self._to_fetch,
            _human(least_s),
            extra=NOTICE if least_s >= LONG_RUN_S else None,
        )

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now < self._progress_at:
            return
        self._progress_at = now + PROGRESS_S
        waited_s = self.client.limiter.waited_s - self._waited_before
        logger.info(
            "Fetched the actions of %d of %d images so far (%s waiting for "
            "rate budget)",
            self._fetched,
            self._to_fetch,
            _human(waited_s),
            extra=NOTICE,
        )

    def _parse_images(self, items: Sequence[Any]) -> list[Image]:
        images = []
        for item in items:
            try:
                images.append(parse_image(item))
            except PayloadError as exc:
                # Without an id it cannot be stored, and the listing cannot
                # vouch for what is gone: no deletions this run.
                self.listing_error = str(exc)
                self._unreadable += 1
                logger.warning("%s It was skipped; nothing is marked deleted.", exc)
        return images

    async def _fetch_all(self) -> None:
        while (image := await self._fetches.get()) is not None:
            actions = await self._fetch_actions(image.id)
            self._fetched += 1
            self._log_progress()
            if actions is not None:
                await self._writes.put(_Write(image_id=image.id, actions=actions))

    async def _fetch_actions(self, image_id: int) -> list[Action] | None:
        """One image's actions; None when they could not be fetched whole."""
        if self._outage is not None:
            self.failed_images.append(image_id)
            self._not_asked += 1
            return None
        try:
            items = await self.client.fetch_image_actions(image_id)
            actions = [parse_action(item) for item in items]
        except NotFoundError:
            logger.debug("Image %d vanished before its actions were fetched", image_id)
            self._failing = 0
            return []
        except AuthError:
            raise
        except (APIError, PayloadError) as exc:
            self.failed_images.append(image_id)
            logger.log(
                # Once the API is taken to be down, its one warning says it all.
                logging.WARNING if self._outage is None else logging.DEBUG,
                "Actions of image %d not fetched; its stored actions stay: %s",
                image_id,
                exc,
            )
            if isinstance(exc, APIError):
                self._count_failure(exc)
            return None
        self._failing = 0
        return actions

    def _count_failure(self, exc: APIError) -> None:
        self._failing += 1
        if self._failing >= OUTAGE_AFTER and self._outage is None:
            self._outage = (
                f"{self._failing} images in a row failed, the last with: {exc}"
            )
            logger.warning(
                "The API looks down (%s); the other images' actions are left "
                "for the next run, their stored actions stay",
                self._outage,
            )

    async def _write_all(self) -> None:
        """The one writer: image pages as they come, actions in batches.

        Actions wait for a full batch, or FLUSH_S at most, so a slow trickle
        is stored promptly and a fast stream in few transactions.
        """
        batch = self.settings.sync.write_batch
        loop = asyncio.get_running_loop()
        flush_at = 0.0
        while True:
            item = await self._next_write(flush_at if self._pending else None)
            if item is _END:
                break
            if item is not None:
                if not self._pending:
                    flush_at = loop.time() + FLUSH_S
                await self._take(item)
            if len(self._pending) >= batch or loop.time() >= flush_at:
                await self._flush_actions()
        await self._flush_actions()

    async def _take(self, item: _Write) -> None:
        if item.images is not None:
            await self._write_images(item.images)
        else:
            self._pending.extend((item.image_id, action) for action in item.actions)

    async def drain(self) -> None:
        """Write what was fetched but not yet stored, after the run stopped early.

        Deletions follow the listing, not the run: when the listing had
        completed and every page of it is stored, images gone are marked.
        """
        while not self._writes.empty():
            item = self._writes.get_nowait()
            if item is not _END:
                await self._take(item)
        await self._flush_actions()
        if self._pages_written == self._pages_listed:
            await self._reconcile()

    async def _next_write(self, until: float | None) -> _Write | None:
        """The next item to write; None when `until` (loop time) comes first."""
        try:
            async with asyncio.timeout_at(until):
                return await self._writes.get()
        except TimeoutError:
            return None

    async def _write_images(self, images: list[Image]) -> None:
        await self._to_the_end(self._store_images(images))

    async def _store_images(self, images: list[Image]) -> None:
        counts = await self.store.upsert_images(self.account, images, self.seen_at)
        self._pages_written += 1
        self.counts.images_added += counts.added
        self.counts.images_updated += counts.updated

    async def _flush_actions(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        await self._to_the_end(self._store_actions(pending))

    async def _store_actions(self, pending: list[tuple[int, Action]]) -> None:
        counts = await self.store.upsert_actions(self.account, pending, self.seen_at)
        self.counts.actions_seen += counts.seen
        self.counts.actions_added += counts.added
        self.counts.actions_updated += counts.updated

    async def _to_the_end(self, write: Coroutine[Any, Any, None]) -> None:
        """Run one batch's write to its end, even if the run stops meanwhile.

        A transaction cancelled halfway loses its batch, and on SQLite can
        leave the file locked (aiosqlite's thread runs on without its
        rollback); `settle_writes` waits for it instead.
        """
        self._in_flight = asyncio.ensure_future(write)
        await asyncio.shield(self._in_flight)

    async def settle_writes(self, timeout_s: float) -> None:
        """Let a write in flight end; past `timeout_s` (a hung store), cancel it."""
        task = self._in_flight
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("A write stopped with the run failed: %s", task.exception())

    async def _reconcile(self) -> None:
        """Mark images gone upstream deleted, only after a complete listing."""
        if not self.listing_complete:
            return
        scope = deletion_scope(self.settings.sync)
        if scope is None:
            logger.info("Listing filtered by type: no image is marked deleted")
            return
        self.counts.images_removed = await self.store.mark_images_deleted(
            self.account, self.seen_at, datetime.now(UTC), scope
        )

    def status(self) -> str:
        if not self.listing_complete:
            return "failed"
        return "partial" if self.failed_images else "succeeded"

    def error(self) -> str | None:
        if self.listing_error:
            return self.listing_error
        if self.failed_images:
            shown = ", ".join(str(i) for i in self.failed_images[:10])
            more = len(self.failed_images) - 10
            extra = f" and {more} more" if more > 0 else ""
            message = f"Actions not fetched for images {shown}{extra}."
            if self._outage is not None:
                message += (
                    f" The API looked down ({self._outage}), so "
                    f"{self._not_asked} were not asked."
                )
            return message
        return None


@dataclass
class _Write:
    images: list[Image] | None = None
    image_id: int = 0
    actions: list[Action] = field(default_factory=list)


_END = _Write()  # tells the writer the run has nothing more


async def plan_run(store: Store, settings: Settings) -> Plan:
    """Estimate the run's requests from the last copy, and the least time."""
    images = await store.image_count(settings.account)
    if images == 0:
        return Plan(None, None, None)
    if settings.sync.actions_for == "all":
        with_actions = images
    else:
        with_actions = await store.image_count(settings.account, private_only=True)
    requests = math.ceil(images / settings.api.per_page) + with_actions
    return Plan(images, requests, None)


async def sync_account(
    client: DigitalOceanClient,
    store: Store,
    settings: Settings,
    *,
    on_result: Callable[[SyncResult], None] | None = None,
    lock: AccountLock | None = None,
) -> SyncResult:
    """Run one sync of the configured account and record it in `sync_runs`.

    `on_result` receives the result once it is recorded, also when the run
    then raises (a rejected token, a cancellation), so callers can count it.
    With the account's `lock`, the run checks every LOCK_CHECK_S that it
    still holds it, and stops `interrupted` when another process took it.
    """
    started = time.monotonic()
    run = SyncRun(client, store, settings)
    try:
        async with asyncio.timeout(RECORD_S):
            run.seen_at = await store.now()
            run_id = await store.start_run(run.account, run.seen_at)
    except TimeoutError:
        raise StoreError(
            f"The store at {store.describe()} took no write within "
            f"{RECORD_S:.0f} s (a server that hangs, or another process holding "
            "an SQLite file's write lock); no run was started."
        ) from None
    deadline_s = settings.sync.deadline_s
    client.limiter.set_deadline(started + deadline_s)
    status, error = "failed", None
    try:
        # The deadline bounds everything the run waits on: the API, the rate
        # budgets and the store alike.
        async with asyncio.timeout(deadline_s):
            await _log_plan(store, settings, client)
            await _holding(lock, run.run())
        status, error = run.status(), run.error()
    except AccountBusy as exc:
        # What it fetched is left to the process syncing now.
        status, error = "interrupted", f"{exc} It took the lock during this run."
        run.lost_lock = True
    except DeadlineExceeded as exc:
        status, error = "interrupted", str(exc)
        await _drain(run)
    except TimeoutError:
        status = "interrupted"
        error = f"The run passed its deadline of {deadline_s:.0f} s and was stopped."
        await _drain(run)
    except asyncio.CancelledError:
        status, error = "interrupted", "The run was stopped from outside."
        raise
    except AuthError as exc:
        error = str(exc)
        raise
    except InventoryError as exc:
        error = str(exc)
    except BaseException as exc:
        # One line: a database error's text carries its statement and rows.
        error = f"{type(exc).__name__}: {one_line(exc)}"
        raise
    finally:
        result = await asyncio.shield(
            _finish(run, run_id, status, error, time.monotonic() - started)
        )
        if on_result is not None:
            on_result(result)
    return result


async def _holding(lock: AccountLock | None, work: Coroutine[Any, Any, None]) -> None:
    """Do `work` while the lock holds; AccountBusy once another process took
    it (a dropped connection, a removed lock file), so two never sync at once."""
    if lock is None:
        await work
        return
    job = asyncio.ensure_future(work)
    watch = asyncio.create_task(_watch(lock))
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not job.done():
            job.cancel()
            await asyncio.wait({job})
    if watch.done() and not watch.cancelled():
        watch.result()  # raises: the watch never returns
    job.result()


async def _watch(lock: AccountLock) -> None:
    """Return never; raise AccountBusy once another process holds the lock.

    A store that does not answer is no proof the lock is gone: the run's own
    writes meet the same store, and the watch asks again.
    """
    told = False
    while True:
        await asyncio.sleep(LOCK_CHECK_S)
        try:
            await lock.confirm()
        except AccountBusy:
            raise
        except StoreError as exc:
            if not told:
                logger.warning("%s Asking again.", exc)
                told = True


async def _drain(run: SyncRun) -> None:
    """Store what the stopped run fetched, within DRAIN_S: a store that hangs
    must not hold the run past its deadline for long."""
    try:
        async with asyncio.timeout(DRAIN_S):
            await run.settle_writes(DRAIN_S)
            await run.drain()
    except TimeoutError:
        logger.warning(
            "Could not store within %.0f s what the run fetched before it "
            "stopped; the next run fetches it again",
            DRAIN_S,
        )


async def _finish(
    run: SyncRun, run_id: int, status: str, error: str | None, duration_s: float
) -> SyncResult:
    await run.settle_writes(DRAIN_S)  # its counts belong to the run
    if error is not None:
        error = redact(error)  # it goes to the store and the summary
    limiter = run.client.limiter
    run.counts.requests = run.client.requests - run._requests_before
    run.counts.rate_limited = limiter.rate_limited - run._rate_limited_before
    run.counts.rate_wait_s = limiter.waited_s - run._waited_before
    recorded = True
    try:
        # Bounded: a hung store must not hold a stopped run (or the daemon's
        # stop) for long; the run is then closed when the store answers.
        async with asyncio.timeout(RECORD_S):
            await run.store.finish_run(
                run.account,
                run_id,
                status=status,
                finished_at=datetime.now(UTC),
                counts=run.counts,
                error=error,
            )
    except (TimeoutError, StoreError) as exc:
        recorded = False
        logger.error(
            "Run %d ended %s, but the store did not record it (%s); the next "
            "run closes it once the store answers",
            run_id,
            status,
            str(exc) or f"no answer within {RECORD_S:.0f} s",
        )
    result = SyncResult(
        run.account,
        run_id,
        status,
        run.counts,
        duration_s,
        error,
        run.failed_images,
        recorded,
        run.lost_lock,
    )
    level = logging.INFO if status == "succeeded" else logging.WARNING
    fields = {"account": run.account, "run_id": run_id, "status": status}
    fields |= run.counts.columns() | {"duration_s": round(duration_s, 3)}
    logger.log(level, "%s", result.summary(), extra={"run": fields})
    return result


async def _log_plan(
    store: Store, settings: Settings, client: DigitalOceanClient
) -> Plan:
    plan = await plan_run(store, settings)
    if plan.requests is None:
        logger.info("First sync of account %s: no estimate yet", settings.account)
        return plan
    budget = client.limiter.effective_budget
    least_s = budget.duration_s(plan.requests, client.limiter.used_hour)
    logger.info(
        "Plan: about %d requests for %d images; the rate budgets allow them in "
        "%s at best (deadline %s)",
        plan.requests,
        plan.images,
        _human(least_s),
        _human(settings.sync.deadline_s),
        extra=NOTICE if least_s >= LONG_RUN_S else None,
    )
    per_hour = budget.per_hour
    if per_hour is not None and plan.requests > per_hour - client.limiter.used_hour:
        logger.warning(
            "This run needs more requests than the hour's budget has left; it "
            "will pace itself across the hour"
        )
    return Plan(plan.images, plan.requests, least_s)


def _human(seconds: float) -> str:
    """A duration as people say it: `45 s`, `12.5 min`, `1.2 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
