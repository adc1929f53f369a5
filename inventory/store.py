"""The store: the only module that knows SQL.

Writes are idempotent upserts (`INSERT ... ON CONFLICT DO UPDATE`) on SQLite and
PostgreSQL alike, each batch its own transaction, so an interrupted sync leaves
nothing half-written; the schema comes only from the alembic migrations.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

from sqlalchemy import (
    Connection,
    Table,
    and_,
    case,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from inventory.config import database_url
from inventory.errors import AccountBusy, StoreError, one_line
from inventory.records import Action, Image
from inventory.tables import ImageActionRow, ImageRegionRow, ImageRow, SyncRunRow

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Pre-selects bind one parameter per key; 900 stays below the 999 variables
# that SQLite builds before 3.32 allow, whatever `write_batch` says.
KEY_CHUNK = 900
READ_BATCH = 1000  # rows a query prints at a time
# A writer waits this long for another writer of the SQLite file (another
# account's sync, a user's sqlite3 shell) before trying its transaction anew,
# up to SQLITE_BUSY_PATIENCE_S in all: SQLite waits in aiosqlite's thread,
# which a cancellation does not reach, so one long wait held a stop, a deadline
# and the record of a run's end for its whole length (28 s past a 3 s grace).
SQLITE_BUSY_TIMEOUT_MS = 1_000
SQLITE_BUSY_PATIENCE_S = 30.0
SQLITE_BUSY_PAUSE_S = 0.05
# A reader (query, status) waits less: a health check must answer in time.
SQLITE_READ_BUSY_TIMEOUT_MS = 5_000
# A PostgreSQL that accepts no connection (hung, partitioned) is said so after
# this long, not asyncpg's 60 s.
CONNECT_TIMEOUT_S = 10

IMAGES = cast(Table, ImageRow.__table__)
IMAGE_REGIONS = cast(Table, ImageRegionRow.__table__)
IMAGE_ACTIONS = cast(Table, ImageActionRow.__table__)
SYNC_RUNS = cast(Table, SyncRunRow.__table__)


@dataclass
class UpsertCounts:
    """What one upsert did: rows new to the store, rows whose content changed."""

    seen: int = 0
    added: int = 0
    updated: int = 0

    def __iadd__(self, other: UpsertCounts) -> UpsertCounts:
        self.seen += other.seen
        self.added += other.added
        self.updated += other.updated
        return self


@dataclass
class RunCounts:
    """The figures a sync run records in `sync_runs`."""

    images_seen: int = 0
    images_added: int = 0
    images_updated: int = 0
    images_removed: int = 0
    actions_seen: int = 0
    actions_added: int = 0
    actions_updated: int = 0
    requests: int = 0
    rate_limited: int = 0
    rate_wait_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        values = dict(vars(self))
        values.pop("extra")
        return values


def _dumps(value: object) -> str:
    # Sorted keys make equal JSON equal text, so SQLite can compare `raw`.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def migrations_path() -> Path:
    """Where the alembic scripts are: in the installed package, else the checkout.

    A wheel carries the top-level alembic/ as inventory/migrations/; a source
    checkout (and an editable install) has it beside the package.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "migrations", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError(f"The migrations are missing from {package}; reinstall inventory.")


class Store:
    """An async SQLAlchemy engine on one SQLite file or PostgreSQL database."""

    def __init__(self, engine: AsyncEngine, display_url: str | None = None) -> None:
        self.engine = engine
        self._display_url = display_url
        self.dialect = engine.dialect.name
        # Runs this store started and has not yet recorded the end of: a run
        # whose end could not be written (the store stopped answering) is
        # closed later by `close_unfinished_runs`, by this process only.
        self.unfinished_runs: set[tuple[str, int]] = set()
        # Built once: assembling an upsert costs more than running a batch.
        self._upsert_images = self._upsert(IMAGES, deleted_at=None)  # back, if gone
        self._upsert_actions = self._upsert(IMAGE_ACTIONS)

    @classmethod
    def open(cls, url: str | URL, *, read_only: bool = False) -> Store:
        """Open a store by URL; plain sqlite:/// and postgresql:// are fine."""
        given = make_url(url) if isinstance(url, str) else url
        display = given.set(drivername=given.get_backend_name()).render_as_string(
            hide_password=True
        )
        url = database_url(url) if isinstance(url, str) else url
        if read_only and url.get_backend_name() == "sqlite":
            url = _read_only_sqlite(url)
        options: dict[str, Any] = {"json_serializer": _dumps}
        if read_only:
            # A query prints JSON's numbers as stored: 2.50, and all 30 digits.
            options["json_deserializer"] = _exact_loads
        if url.get_backend_name() != "sqlite":
            options["pool_pre_ping"] = True
            options["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
        engine = create_async_engine(url, **options)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas(read_only))
        elif read_only:
            event.listen(engine.sync_engine, "connect", _postgres_text_types)
        return cls(engine, display)

    async def close(self) -> None:
        await self.engine.dispose()

    def describe(self) -> str:
        """The URL as the user gave it, with any password hidden, for messages."""
        if self._display_url is not None:
            return self._display_url
        return self.engine.url.render_as_string(hide_password=True)

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        with _failing_as(f"The store at {self.describe()} does not answer"):
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        """Bring the schema to the newest alembic revision."""
        from alembic.util.exc import CommandError

        failed = f"Could not migrate the store at {self.describe()}"
        try:
            with _failing_as(failed):
                async with self._migration_lock(), self.engine.begin() as conn:
                    if self.dialect == "postgresql":
                        # Held to the transaction's end: two first starts at
                        # once would both create the tables.
                        key = {"key": _lock_key("schema", "migrate")}
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), key
                        )
                    await conn.run_sync(_upgrade)
        except CommandError as exc:  # a revision this inventory does not know
            raise StoreError(f"{failed}: {exc}; is it from a newer inventory?") from exc

    @contextlib.asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[None]:
        """On SQLite, one migration at a time across processes (an flock)."""
        if self.dialect != "sqlite":
            yield
            return
        import fcntl

        fd = os.open(self._beside("migrate"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def require_schema(self) -> None:
        """StoreError unless the store was migrated: for runs told not to
        migrate. Creates nothing, not even an empty SQLite file."""
        if missing_sqlite_file(self.engine.url) or not await self.has_schema():
            raise StoreError(
                f"The store at {self.describe()} has no schema yet: run "
                "`inventory migrate` first, or leave out --no-migrate."
            )

    async def has_schema(self) -> bool:
        """Whether the store was migrated; StoreError when it cannot be read."""
        with _failing_as(f"Cannot open the store at {self.describe()}"):
            return await self.revision() is not None

    async def revision(self) -> str | None:
        """The schema's alembic revision, or None before the first migration."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    # One sync of an account at a time.

    @contextlib.asynccontextmanager
    async def account_lock(self, account: str) -> AsyncIterator[AccountLock]:
        """Hold the account's sync lock for the block, across processes.

        AccountBusy at once when another process holds it. PostgreSQL keeps a
        session-level advisory lock on a connection of its own; SQLite an
        flock on a file beside the database. Either ends with the process.
        A long holder calls `confirm()` before each run: a lock can be lost
        (its connection dropped, its file removed) without a word.
        """
        busy = self._busy(account)
        lock: AccountLock
        if self.dialect == "postgresql":
            lock = _AdvisoryLock(self.engine, _lock_key(account), busy)
        else:
            lock = _FileLock(self._lock_path(account), busy)
        await lock.take()
        try:
            yield lock
        finally:
            await lock.release()

    def _busy(self, account: str) -> AccountBusy:
        return AccountBusy(
            f"Another inventory process is syncing account {account!r} into "
            f"{self.describe()}; one at a time."
        )

    def _lock_path(self, account: str) -> Path:
        safe = account if SAFE_NAME.fullmatch(account) else f"{_lock_key(account):x}"
        return self._beside(f"account-{safe}")

    def _beside(self, name: str) -> Path:
        """A SQLite store's lock file `name`, beside its database file."""
        database = Path(self.engine.url.database or "inventory.db").absolute()
        return database.with_name(f"{database.name}.{name}.lock")

    # Sync runs.

    async def now(self) -> datetime:
        """The store's clock, which a run stamps what it saw by: processes
        sharing one PostgreSQL compare `last_seen_at`s of one clock, whatever
        their own say. (An SQLite store has the machine's clock.)"""
        if self.dialect != "postgresql":
            return datetime.now(UTC)
        with _failing_as(f"The store at {self.describe()} does not answer"):
            async with self.engine.connect() as conn:
                moment = await conn.scalar(text("SELECT now()"))
        return cast(datetime, moment).astimezone(UTC)

    async def start_run(self, account: str, started_at: datetime) -> int:
        """Record a new `running` run and return its id (per account)."""

        async def start(conn: AsyncConnection) -> int:
            next_id = await conn.scalar(
                select(func.coalesce(func.max(SYNC_RUNS.c.id), 0) + 1).where(
                    SYNC_RUNS.c.account == account
                )
            )
            run_id = int(next_id or 1)
            await conn.execute(
                insert(SYNC_RUNS).values(
                    account=account,
                    id=run_id,
                    started_at=started_at,
                    status="running",
                    **RunCounts().columns(),
                )
            )
            return run_id

        run_id = await self._transaction(start, "Could not start a run")
        self.unfinished_runs.add((account, run_id))
        return run_id

    async def finish_run(
        self,
        account: str,
        run_id: int,
        *,
        status: str,
        finished_at: datetime,
        counts: RunCounts,
        error: str | None = None,
    ) -> None:
        """Record how a run ended; StoreError when the store cannot take it."""
        await self._execute(
            (
                update(SYNC_RUNS)
                .where(SYNC_RUNS.c.account == account, SYNC_RUNS.c.id == run_id)
                .values(
                    status=status,
                    finished_at=finished_at,
                    error=error,
                    **counts.columns(),
                )
            ),
            f"Could not record the end of run {run_id}",
        )
        self.unfinished_runs.discard((account, run_id))

    async def close_unfinished_runs(self, finished_at: datetime) -> list[int]:
        """Record as `failed` the runs this store started whose end it could
        not write; return their ids. Other processes' runs are left alone."""
        closed = []
        for account, run_id in sorted(self.unfinished_runs):
            result = await self._execute(
                (
                    update(SYNC_RUNS)
                    .where(
                        SYNC_RUNS.c.account == account,
                        SYNC_RUNS.c.id == run_id,
                        SYNC_RUNS.c.status == "running",
                    )
                    .values(
                        status="failed",
                        finished_at=finished_at,
                        error="The store stopped answering before this run's end "
                        "was recorded.",
                    )
                ),
                f"Could not record the end of run {run_id}",
            )
            self.unfinished_runs.discard((account, run_id))
            if result.rowcount:
                closed.append(run_id)
        return closed

    async def recent_runs(
        self, account: str | None = None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """The newest runs first, as plain dicts."""
        query = select(SYNC_RUNS).order_by(SYNC_RUNS.c.started_at.desc()).limit(limit)
        if account is not None:
            query = query.where(SYNC_RUNS.c.account == account)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(row) for row in rows]

    async def last_success_at(self, account: str) -> datetime | None:
        """When the account's newest succeeded run ended, if any did."""
        query = select(func.max(SYNC_RUNS.c.finished_at)).where(
            SYNC_RUNS.c.account == account, SYNC_RUNS.c.status == "succeeded"
        )
        async with self.engine.connect() as conn:
            return cast(datetime | None, await conn.scalar(query))

    async def prune_runs(self, account: str, older_than: datetime) -> int:
        """Delete the account's finished runs that started before `older_than`.

        Its newest run stays, so run ids never start over; other accounts'
        runs are theirs to prune.
        """
        newest = SYNC_RUNS.alias("newest")
        latest_id = (
            select(func.max(newest.c.id))
            .where(newest.c.account == SYNC_RUNS.c.account)
            .scalar_subquery()
        )
        result = await self._execute(
            (
                delete(SYNC_RUNS).where(
                    SYNC_RUNS.c.account == account,
                    SYNC_RUNS.c.started_at < older_than,
                    SYNC_RUNS.c.status != "running",
                    SYNC_RUNS.c.id < latest_id,
                )
            ),
            "Could not prune old runs",
        )
        return int(result.rowcount or 0)

    async def close_stale_runs(self, account: str, finished_at: datetime) -> int:
        """Mark runs left `running` by a process that died as `interrupted`."""
        result = await self._execute(
            (
                update(SYNC_RUNS)
                .where(SYNC_RUNS.c.account == account, SYNC_RUNS.c.status == "running")
                .values(
                    status="interrupted",
                    finished_at=finished_at,
                    error="The process running this sync stopped before it ended.",
                )
            ),
            "Could not close the runs a stopped process left",
        )
        return int(result.rowcount or 0)

    # Images.

    async def upsert_images(
        self, account: str, images: Iterable[Image], seen_at: datetime
    ) -> UpsertCounts:
        """Insert or update images, and keep their `image_regions` in step.

        Duplicates in one call are reduced to the last copy. Nothing but
        `last_seen_at` changes for an image whose API object is unchanged.
        """
        given = {image.id: image for image in images}
        if not given:
            return UpsertCounts()

        async def upsert(conn: AsyncConnection) -> UpsertCounts:
            latest = dict(given)  # each try anew: another run may have written
            stored = await self._known(
                conn, IMAGES, account, latest, IMAGES.c.deleted_at
            )
            _drop_newer(latest, stored, seen_at)
            known = {id: row.raw for id, row in stored.items()}
            gone = {id for id, row in stored.items() if row.deleted_at is not None}
            fresh = [i for i in latest.values() if known.get(i.id, _MISSING) != i.raw]
            counts = UpsertCounts(seen=len(given))
            # One that a listing missed and this one has again is back: added,
            # as it was counted removed.
            counts.added = sum(1 for i in latest if i not in known or i in gone)
            counts.updated = sum(1 for i in fresh if i.id in known and i.id not in gone)
            rows = [_image_row(account, image, seen_at) for image in latest.values()]
            if rows:
                await conn.execute(self._upsert_images, rows)
            await self._replace_regions(conn, account, fresh)
            return counts

        return await self._transaction(upsert)

    def _upsert(self, table: Any, **also: Any) -> Any:
        """Insert rows of `table`, or update the stored copy; `updated_at`
        moves only when the raw object changed.

        A run that saw a row earlier (one that lost its lock and overlapped a
        newer run) neither overwrites the newer copy nor moves `last_seen_at`
        back, where the newer run's deletions would take it.
        """
        stmt = self._insert(table)
        excluded = stmt.excluded
        keep = {"account", "id", "first_seen_at", "updated_at"}
        values = {c.name: excluded[c.name] for c in table.c if c.name not in keep}
        values["updated_at"] = case(
            (table.c.raw.is_distinct_from(excluded.raw), excluded.updated_at),
            else_=table.c.updated_at,
        )
        values.update(also)
        return stmt.on_conflict_do_update(
            index_elements=["account", "id"],
            set_=values,
            where=table.c.last_seen_at <= excluded.last_seen_at,
        )

    async def _replace_regions(
        self, conn: AsyncConnection, account: str, images: Sequence[Image]
    ) -> None:
        async with self._planned_for_keys(conn):
            for chunk in _chunks([image.id for image in images], KEY_CHUNK):
                await conn.execute(
                    delete(IMAGE_REGIONS).where(
                        IMAGE_REGIONS.c.account == account,
                        IMAGE_REGIONS.c.image_id.in_(chunk),
                    )
                )
        rows = [
            {"account": account, "image_id": image.id, "region_slug": slug}
            for image in images
            for slug in image.region_slugs
        ]
        if rows:
            await conn.execute(insert(IMAGE_REGIONS), rows)

    async def mark_images_deleted(
        self,
        account: str,
        seen_at: datetime,
        deleted_at: datetime,
        in_scope: Callable[[Any], bool] = lambda row: True,
    ) -> int:
        """Mark images not seen at `seen_at` deleted; return how many.

        `in_scope` receives rows of (id, public, tags) and says which images the
        listing could have returned, so a filtered listing deletes nothing else.
        """

        async def mark(conn: AsyncConnection) -> int:
            candidates = await conn.execute(
                select(IMAGES.c.id, IMAGES.c.public, IMAGES.c.tags).where(
                    IMAGES.c.account == account,
                    IMAGES.c.deleted_at.is_(None),
                    # Older than this run, not merely other: a run that
                    # overlapped this one saw its images later, not never.
                    IMAGES.c.last_seen_at < seen_at,
                )
            )
            gone = [row.id for row in candidates if in_scope(row)]
            async with self._planned_for_keys(conn):
                for chunk in _chunks(gone, KEY_CHUNK):
                    await conn.execute(
                        update(IMAGES)
                        .where(IMAGES.c.account == account, IMAGES.c.id.in_(chunk))
                        .values(deleted_at=deleted_at)
                    )
            return len(gone)

        return await self._transaction(mark)

    async def image_count(self, account: str, *, private_only: bool = False) -> int:
        """How many live images the store holds: the next run's likely size."""
        query = select(func.count()).where(
            IMAGES.c.account == account, IMAGES.c.deleted_at.is_(None)
        )
        if private_only:
            query = query.where(IMAGES.c.public.is_not(True))
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    # Actions.

    async def upsert_actions(
        self,
        account: str,
        actions: Iterable[tuple[int, Action]],
        seen_at: datetime,
    ) -> UpsertCounts:
        """Insert or update (image_id, action) pairs; actions are never deleted."""
        given = {action.id: (image_id, action) for image_id, action in actions}
        if not given:
            return UpsertCounts()

        async def upsert(conn: AsyncConnection) -> UpsertCounts:
            latest = dict(given)  # each try anew: another run may have written
            stored = await self._known(conn, IMAGE_ACTIONS, account, latest)
            _drop_newer(latest, stored, seen_at)
            known = {id: row.raw for id, row in stored.items()}
            counts = UpsertCounts(seen=len(given))
            for action_id, (_, action) in latest.items():
                before = known.get(action_id, _MISSING)
                if before is _MISSING:
                    counts.added += 1
                elif before != action.raw:
                    counts.updated += 1
            rows = [
                _action_row(account, image_id, action, seen_at)
                for image_id, action in latest.values()
            ]
            if rows:
                await conn.execute(self._upsert_actions, rows)
            return counts

        return await self._transaction(upsert)

    # Read-only queries, for `inventory query`.

    async def execute_read_only(
        self, sql: str, params: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one statement in a read-only transaction; return columns and rows."""
        async with self.read_only(sql, params) as (columns, batches):
            return columns, [row async for batch in batches for row in batch]

    @contextlib.asynccontextmanager
    async def read_only(
        self, sql: str, params: dict[str, Any] | None = None
    ) -> AsyncIterator[tuple[list[str], AsyncIterator[list[tuple[Any, ...]]]]]:
        """Run one statement in a read-only transaction: its columns, and its
        rows in batches of READ_BATCH as the database gives them (a server-side
        cursor), so a result bigger than memory can be printed."""
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SET TRANSACTION READ ONLY"))
            statement = text(sql).execution_options(yield_per=READ_BATCH)
            result = await self._interruptible(
                conn, conn.stream(statement, params or {})
            )
            # A statement without rows (a SET) closes its result at once.
            columns = [] if result.closed else list(result.keys())

            async def batches() -> AsyncIterator[list[tuple[Any, ...]]]:
                if result.closed:
                    return
                while batch := await self._interruptible(
                    conn, result.fetchmany(READ_BATCH)
                ):
                    yield [tuple(row) for row in batch]

            try:
                yield columns, batches()
            finally:
                await result.close()
                await conn.rollback()

    # Helpers.

    async def _interruptible(self, conn: AsyncConnection, step: Awaitable[T]) -> T:
        """Await a step of a query; stop it when the task is cancelled (Ctrl-C).

        asyncpg cancels on the server by itself. SQLite runs in aiosqlite's
        thread, which a cancelled await does not reach (and SQLAlchemy's
        clean-up would queue behind the statement): sqlite3's interrupt() does.
        """
        if self.dialect != "sqlite":
            try:
                return await step
            except Exception as exc:
                # A server-side cursor's first fetch lets asyncpg's own error
                # through, not wrapped as the rest are.
                if not type(exc).__module__.startswith("asyncpg"):
                    raise
                raise DBAPIError(None, None, exc) from exc
        raw = await conn.get_raw_connection()
        running = asyncio.ensure_future(step)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            sqlite_connection = getattr(raw.driver_connection, "_conn", None)
            if sqlite_connection is not None:
                sqlite_connection.interrupt()
            await asyncio.wait({running}, timeout=5.0)
            if running.done() and not running.cancelled():
                running.exception()  # retrieved: sqlite's "interrupted"
            raise

    async def _execute(self, statement: Any, failed: str) -> Any:
        """Run one writing statement in a transaction of its own."""
        return await self._transaction(lambda conn: conn.execute(statement), failed)

    async def _transaction(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        failed: str | None = None,
    ) -> T:
        """Do `work` in one write transaction, committed when it returns.

        The store refusing it (a full disk, a restarted server) is a StoreError
        in one line, `failed` and the database's words, not a database trace.
        An SQLite file another process is writing is waited for in short steps
        (SQLITE_BUSY_TIMEOUT_MS), each a new try of the whole transaction, for
        SQLITE_BUSY_PATIENCE_S: a stop or a deadline cuts in between the steps.
        """
        failed = failed or f"The store at {self.describe()} could not take a write"
        patience = time.monotonic() + SQLITE_BUSY_PATIENCE_S
        while True:
            try:
                with _failing_as(failed):
                    async with self.engine.begin() as conn:
                        return await work(conn)
            except StoreError as exc:
                if not _sqlite_busy(exc.__cause__):
                    raise
                if time.monotonic() > patience:
                    raise StoreError(
                        f"{failed}: another process held the SQLite file's write "
                        f"lock for {SQLITE_BUSY_PATIENCE_S:.0f} s (database is "
                        "locked)."
                    ) from exc
            await asyncio.sleep(SQLITE_BUSY_PAUSE_S)

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    async def _known(
        self,
        conn: AsyncConnection,
        table: Any,
        account: str,
        keys: Iterable[int],
        *columns: Any,
    ) -> dict[int, Any]:
        """The stored `raw`, `last_seen_at` (and `columns`) of each key that
        exists already."""
        known: dict[int, Any] = {}
        async with self._planned_for_keys(conn):
            for chunk in _chunks(list(keys), KEY_CHUNK):
                result = await conn.execute(
                    select(
                        table.c.id, table.c.raw, table.c.last_seen_at, *columns
                    ).where(and_(table.c.account == account, table.c.id.in_(chunk)))
                )
                known.update({row.id: row for row in result})
        return known

    @contextlib.asynccontextmanager
    async def _planned_for_keys(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """Plan statements by key lists for their keys, on PostgreSQL.

        A prepared statement's generic plan, made while a table was empty,
        scans it whole: each batch of a first sync took longer than the one
        before (40 ms to 170 ms at 24,000 actions). The upserts, run once per
        row, keep their cached plans.
        """
        if self.dialect != "postgresql":
            yield
            return
        await conn.execute(text("SET LOCAL plan_cache_mode TO force_custom_plan"))
        yield
        await conn.execute(text("SET LOCAL plan_cache_mode TO auto"))


_MISSING: Any = object()


@contextlib.contextmanager
def _failing_as(message: str) -> Iterator[None]:
    """The database failing (a refused connection, a full disk, a dropped
    session) as one StoreError line: `message`, then the database's words."""
    try:
        yield
    except (OSError, SQLAlchemyError) as exc:
        raise StoreError(f"{message}: {one_line(exc)}") from exc


def _sqlite_busy(exc: BaseException | None) -> bool:
    """Whether SQLite refused for another writer of the file (SQLITE_BUSY, in
    any of its kinds: a wait that ran out, or a snapshot another commit made
    stale, which SQLite refuses at once)."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(orig)


def _drop_newer(
    latest: dict[int, Any], stored: dict[int, Any], seen_at: datetime
) -> None:
    """Leave out what a newer run saw already: a run that lost its lock and
    overlapped the next one must not write its older copy over the newer.
    Counted seen, neither added nor updated, as nothing of it is written."""
    for id, row in stored.items():
        if row.last_seen_at > seen_at:
            del latest[id]


def _image_row(account: str, image: Image, seen_at: datetime) -> dict[str, Any]:
    return {
        "account": account,
        "id": image.id,
        "name": image.name,
        "type": image.type,
        "distribution": image.distribution,
        "slug": image.slug,
        "public": image.public,
        "regions": image.regions,
        "created_at": image.created_at,
        "min_disk_size": image.min_disk_size,
        "size_gigabytes": image.size_gigabytes,
        "description": image.description,
        "tags": image.tags,
        "status": image.status,
        "error_message": image.error_message,
        "raw": image.raw,
        "first_seen_at": seen_at,
        "last_seen_at": seen_at,
        "updated_at": seen_at,
        "deleted_at": None,
    }


def _action_row(
    account: str, image_id: int, action: Action, seen_at: datetime
) -> dict[str, Any]:
    return {
        "account": account,
        "id": action.id,
        "image_id": image_id,
        "completed_at": action.completed_at,
        "region": action.region,
        "region_slug": action.region_slug,
        "resource_id": action.resource_id,
        "resource_type": action.resource_type,
        "started_at": action.started_at,
        "status": action.status,
        "type": action.type,
        "raw": action.raw,
        "first_seen_at": seen_at,
        "last_seen_at": seen_at,
        "updated_at": seen_at,
    }


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def missing_sqlite_file(url: URL) -> str | None:
    """The path of an SQLite store whose file is not there (opening it would
    create it, or fail read-only); None for any other store."""
    path = url.database or ""
    if url.get_backend_name() != "sqlite" or path in ("", ":memory:"):
        return None
    return None if Path(path).is_file() else path


def _lock_key(name: str, purpose: str = "sync") -> int:
    """A stable signed 64-bit key for an advisory lock: an account's sync, or
    the schema's migration."""
    digest = hashlib.blake2b(f"inventory.{purpose}:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class AccountLock(abc.ABC):
    """An account's sync lock, held by this process."""

    def __init__(self) -> None:
        # One confirm at a time: two that both saw the lock lost would both
        # take it, and the second would find it busy, held by the first.
        self._confirming = asyncio.Lock()

    @abc.abstractmethod
    async def take(self) -> None:
        """Take the lock, or AccountBusy when another process holds it."""

    async def confirm(self) -> None:
        """Make sure the lock is still held; take it again when it was lost.

        AccountBusy when another process took it meanwhile; StoreError when
        the store does not answer.
        """
        async with self._confirming:
            if await self._still_held():
                return
            with _failing_as("Could not take the account's sync lock again"):
                await self.take()

    @abc.abstractmethod
    async def _still_held(self) -> bool:
        """Whether the lock is still ours; when not, what held it is let go
        (and the loss said, once)."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Let the lock go."""


class _AdvisoryLock(AccountLock):
    """A PostgreSQL session-level advisory lock on a connection of its own."""

    # pg_locks shows a bigint key as two unsigned halves, objsubid 1.
    HELD = text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid() AND granted AND classid = :high "
        "AND objid = :low AND objsubid = 1)"
    )

    def __init__(self, engine: AsyncEngine, key: int, busy: AccountBusy) -> None:
        super().__init__()
        self._engine = engine
        self._key = key
        self._busy = busy
        self._conn: AsyncConnection | None = None
        # The question in flight on the lock's connection. It is not cancelled
        # with the check that asked it: a query cut midway leaves the session
        # unusable, and dropping that session would let the lock go.
        self._asking: asyncio.Task[bool] | None = None

    async def take(self) -> None:
        conn = await self._engine.connect()
        try:
            held = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            )
            await conn.commit()  # the lock is the session's; no open transaction
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            raise self._busy
        self._conn = conn

    async def _still_held(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask(conn))
        held = await asyncio.shield(self._asking)
        if held:
            return True
        if self._conn is conn:  # not already dropped by a check beside this one
            self._conn = None
            await _discard(conn)  # gone, or a session that lost its lock
            # Said once, when it goes: not again at each try to take it back.
            logger.warning("The account's sync lock was lost; taking it again")
        return False

    async def _ask(self, conn: AsyncConnection) -> bool:
        unsigned = self._key & 0xFFFF_FFFF_FFFF_FFFF
        halves = {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}
        try:
            held = await conn.scalar(self.HELD, halves)
            await conn.commit()
        except (OSError, SQLAlchemyError):  # the connection is gone
            return False
        return bool(held)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._asking is not None:  # the connection takes one at a time
                await asyncio.wait({self._asking})
            # Pooled connections live on: the lock must be let go by hand.
            await conn.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": self._key}
            )
            await conn.commit()
        except (OSError, SQLAlchemyError):
            await _discard(conn)
            return
        await conn.close()


async def _discard(conn: AsyncConnection) -> None:
    """Drop a connection that failed; it must not go back to the pool."""
    with contextlib.suppress(OSError, SQLAlchemyError):
        await conn.invalidate()
    with contextlib.suppress(OSError, SQLAlchemyError):
        await conn.close()


class _FileLock(AccountLock):
    """An flock on a file beside the SQLite database (POSIX: the container and
    CI are Linux)."""

    def __init__(self, path: Path, busy: AccountBusy) -> None:
        super().__init__()
        self._path = path
        self._busy = busy
        self._fd: int | None = None

    async def take(self) -> None:
        import fcntl

        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    async def _still_held(self) -> bool:
        """Held while the file we lock is still the one at the path: a removed
        lock file lets another process lock a new one."""
        if self._fd is None:
            return False
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self._path)):
                return True
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        logger.warning(
            "The account's lock file %s was removed; taking it again", self._path
        )
        return False

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing lets the lock go


def _alembic_config(connection: Connection) -> Any:
    # Imported here: alembic costs a tenth of a second that only migrating needs.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _read_only_sqlite(url: URL) -> URL:
    """Open the SQLite file with mode=ro, so nothing can write through it."""
    path = url.database or ""
    if not path or path == ":memory:":
        return url
    # Percent-encoded: a `#` or `?` in a folder's name would end the file name.
    location = quote(str(Path(path).absolute()))
    return url.set(database=f"file:{location}?mode=ro").update_query_dict(
        {"uri": "true"}
    )


# Types a query gets as PostgreSQL's own text (as psql shows them), not as
# Python objects that would print as `1 day, 2:00:00` or `Point((1.0, 2.0))`.
POSTGRES_TEXT_TYPES = (
    "interval",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "bit",
    "varbit",
    "tsvector",
    "tsquery",
    "pg_lsn",
)


def _postgres_text_types(dbapi_connection: Any, _record: Any) -> None:
    async def as_text(connection: Any) -> None:
        for name in POSTGRES_TEXT_TYPES:
            await connection.set_type_codec(
                name, schema="pg_catalog", encoder=str, decoder=str, format="text"
            )

    dbapi_connection.run_async(as_text)


def _exact_loads(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _sqlite_pragmas(read_only: bool) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        busy_ms = SQLITE_READ_BUSY_TIMEOUT_MS if read_only else SQLITE_BUSY_TIMEOUT_MS
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if read_only:
            cursor.execute("PRAGMA query_only = ON")
        else:
            # WAL: readers never block the writer, nor the writer them.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return on_connect
