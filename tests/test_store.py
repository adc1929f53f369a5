"""The store on real SQLite and PostgreSQL: upserts, regions, deletions, runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

import inventory.store
from inventory.errors import AccountBusy, StoreError
from inventory.records import parse_action, parse_image
from inventory.store import RunCounts, Store
from inventory.tables import ImageActionRow, ImageRegionRow, ImageRow

from conftest import (
    EXAMPLES,
    another_writer,
    lose_account_lock,
    proxied_postgres,
    reading,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)


def image(id: int, **fields: Any) -> Any:
    return parse_image({"id": id, "name": f"image {id}", "public": False, **fields})


async def rows(store: Store, table: Any, order: Any = None) -> list[dict[str, Any]]:
    query = select(table).order_by(*(order if order is not None else table.primary_key))
    async with store.engine.connect() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def test_every_example_image_is_stored_with_its_fields(store: Store) -> None:
    body = json.loads((EXAMPLES / "spec-images-list-snapshots.json").read_text())
    images = [parse_image(obj) for obj in body["images"]]
    await store.upsert_images("default", images, T0)

    stored = await rows(store, ImageRow.__table__)
    assert [row["raw"] for row in stored] == sorted(
        body["images"], key=lambda obj: obj["id"]
    )
    first = stored[0]
    assert first["created_at"].tzinfo is not None
    assert (first["first_seen_at"], first["last_seen_at"], first["updated_at"]) == (
        T0,
        T0,
        T0,
    )
    assert first["deleted_at"] is None


async def test_ids_above_two_to_the_31_are_stored_exactly(store: Store) -> None:
    big = 2**31 + 12345
    await store.upsert_images("default", [image(big)], T0)
    action = parse_action(
        {"id": 3_169_590_176, "resource_id": big, "status": "completed"}
    )
    await store.upsert_actions("default", [(big, action)], T0)

    assert [row["id"] for row in await rows(store, ImageRow.__table__)] == [big]
    stored = await rows(store, ImageActionRow.__table__)
    assert [(r["id"], r["image_id"], r["resource_id"]) for r in stored] == [
        (3_169_590_176, big, big)
    ]


async def test_the_same_image_twice_in_one_batch_keeps_the_last_copy(
    store: Store,
) -> None:
    counts = await store.upsert_images(
        "default", [image(1, name="first"), image(1, name="second")], T0
    )
    assert (counts.seen, counts.added, counts.updated) == (1, 1, 0)
    assert [row["name"] for row in await rows(store, ImageRow.__table__)] == ["second"]


async def test_the_same_image_across_two_pages_keeps_the_last_copy(
    store: Store,
) -> None:
    await store.upsert_images("default", [image(1, name="first")], T0)
    counts = await store.upsert_images("default", [image(1, name="second")], T0)
    assert (counts.added, counts.updated) == (0, 1)
    assert [row["name"] for row in await rows(store, ImageRow.__table__)] == ["second"]


async def test_an_unchanged_image_changes_nothing_but_last_seen_at(
    store: Store,
) -> None:
    images = [image(1, regions=["nyc3"], tags=["a"]), image(2, slug=None)]
    await store.upsert_images("default", images, T0)
    before = await rows(store, ImageRow.__table__)
    regions_before = await rows(store, ImageRegionRow.__table__)

    counts = await store.upsert_images("default", images, T1)

    after = await rows(store, ImageRow.__table__)
    assert (counts.added, counts.updated) == (0, 0)
    assert [r["last_seen_at"] for r in after] == [T1, T1]
    for row in before + after:
        row.pop("last_seen_at")
    assert after == before
    assert await rows(store, ImageRegionRow.__table__) == regions_before


async def test_a_changed_image_keeps_first_seen_and_moves_updated_at(
    store: Store,
) -> None:
    await store.upsert_images("default", [image(1, status="pending")], T0)
    await store.upsert_images("default", [image(1, status="available")], T1)
    [row] = await rows(store, ImageRow.__table__)
    assert (row["status"], row["first_seen_at"], row["updated_at"]) == (
        "available",
        T0,
        T1,
    )


async def test_regions_are_one_row_each_without_duplicates_and_follow_changes(
    store: Store,
) -> None:
    await store.upsert_images(
        "default", [image(1, regions=["nyc3", "ams3", "nyc3"])], T0
    )
    regions = await rows(store, ImageRegionRow.__table__)
    assert [(r["image_id"], r["region_slug"]) for r in regions] == [
        (1, "ams3"),
        (1, "nyc3"),
    ]

    await store.upsert_images("default", [image(1, regions=["sfo3"])], T1)
    regions = await rows(store, ImageRegionRow.__table__)
    assert [(r["image_id"], r["region_slug"]) for r in regions] == [(1, "sfo3")]


async def test_images_not_seen_are_marked_deleted_and_cleared_when_back(
    store: Store,
) -> None:
    await store.upsert_images("default", [image(1), image(2)], T0)
    await store.upsert_images("default", [image(1)], T1)

    assert await store.mark_images_deleted("default", T1, T1) == 1
    stored = {r["id"]: r["deleted_at"] for r in await rows(store, ImageRow.__table__)}
    assert stored == {1: None, 2: T1}

    await store.upsert_images("default", [image(2)], T2)
    stored = {r["id"]: r["deleted_at"] for r in await rows(store, ImageRow.__table__)}
    assert stored == {1: None, 2: None}


async def test_a_deletion_scope_spares_images_the_listing_could_not_return(
    store: Store,
) -> None:
    public = parse_image({"id": 9, "public": True})
    await store.upsert_images("default", [image(1), public], T0)
    removed = await store.mark_images_deleted(
        "default", T1, T1, lambda row: row.public is not True
    )
    assert removed == 1
    stored = {r["id"]: r["deleted_at"] for r in await rows(store, ImageRow.__table__)}
    assert stored == {1: T1, 9: None}


async def test_accounts_share_a_store_without_touching_each_other(
    store: Store,
) -> None:
    await store.upsert_images("alpha", [image(1, name="a")], T0)
    await store.upsert_images("beta", [image(1, name="b")], T0)
    assert await store.mark_images_deleted("alpha", T1, T1) == 1
    stored = await rows(store, ImageRow.__table__)
    assert [(r["account"], r["name"], r["deleted_at"]) for r in stored] == [
        ("alpha", "a", T1),
        ("beta", "b", None),
    ]


async def test_actions_are_upserted_and_counted(store: Store) -> None:
    running = parse_action({"id": 5, "status": "in-progress", "completed_at": None})
    counts = await store.upsert_actions("default", [(1, running)], T0)
    assert (counts.added, counts.updated) == (1, 0)

    done = parse_action(
        {"id": 5, "status": "completed", "completed_at": "2026-01-01T00:10:00Z"}
    )
    counts = await store.upsert_actions("default", [(1, done), (1, done)], T1)
    assert (counts.seen, counts.added, counts.updated) == (1, 0, 1)
    [row] = await rows(store, ImageActionRow.__table__)
    assert (row["status"], row["completed_at"], row["first_seen_at"]) == (
        "completed",
        datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
        T0,
    )
    assert row["updated_at"] == T1

    counts = await store.upsert_actions("default", [(1, done)], T2)
    assert (counts.added, counts.updated) == (0, 0)
    [again] = await rows(store, ImageActionRow.__table__)
    assert (again["updated_at"], again["last_seen_at"]) == (T1, T2)
    assert {**again, "last_seen_at": T1} == row


async def test_null_and_absent_action_fields_are_stored_as_null(store: Store) -> None:
    body = json.loads(
        (EXAMPLES / "pydo-actions-list-empty-region-object.json").read_text()
    )
    actions = [parse_action({"id": 1}), parse_action(body["actions"][0])]
    await store.upsert_actions("default", [(7, a) for a in actions], T0)
    stored = await rows(store, ImageActionRow.__table__)
    assert [(r["region"], r["region_slug"], r["completed_at"]) for r in stored] == [
        (None, None, None),
        ({}, "string", datetime(2020, 11, 14, 16, 30, 6, tzinfo=UTC)),
    ]
    # SQL NULL, not JSON `null`: plain SQL finds the missing values.
    async with store.engine.connect() as conn:
        missing = await conn.scalar(
            text("SELECT count(*) FROM image_actions WHERE region IS NULL")
        )
    assert missing == 1


async def test_missing_image_tags_are_sql_null(store: Store) -> None:
    await store.upsert_images("default", [parse_image({"id": 1})], T0)
    async with store.engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM images WHERE tags IS NULL")
        )
    assert found == 1


async def test_long_api_strings_are_stored_whole(store: Store) -> None:
    """DigitalOcean's enums trail reality: no length limits on its strings."""
    long = "x" * 300
    fields = {"type": long, "status": long, "regions": [long]}
    await store.upsert_images("default", [image(1, **fields)], T0)
    action = {"id": 2, "status": long, "type": long, "resource_type": long}
    await store.upsert_actions(
        "default", [(1, parse_action(action | {"region_slug": long}))], T0
    )
    [stored] = await rows(store, ImageActionRow.__table__)
    assert (stored["status"], stored["type"], stored["region_slug"]) == (long,) * 3


async def test_the_migrations_build_exactly_the_tables_the_models_describe(
    store: Store,
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from inventory.tables import Base

    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_a_run_is_recorded_from_start_to_finish(store: Store) -> None:
    first = await store.start_run("default", T0)
    second = await store.start_run("default", T1)
    counts = RunCounts(images_seen=3, requests=4, rate_wait_s=1.5)
    await store.finish_run(
        "default", second, status="partial", finished_at=T2, counts=counts, error="x"
    )
    runs = await store.recent_runs("default")
    assert [(r["id"], r["status"]) for r in runs] == [
        (second, "partial"),
        (first, "running"),
    ]
    assert (runs[0]["images_seen"], runs[0]["requests"], runs[0]["rate_wait_s"]) == (
        3,
        4,
        1.5,
    )


async def test_the_live_images_view_hides_deleted_images(store: Store) -> None:
    await store.upsert_images("default", [image(1), image(2)], T0)
    await store.upsert_images("default", [image(1)], T1)
    await store.mark_images_deleted("default", T1, T1)
    columns, found = await store.execute_read_only("SELECT id FROM live_images")
    assert (columns, found) == (["id"], [(1,)])


async def test_a_read_only_store_refuses_writes(
    database_url: str, store: Store
) -> None:
    await store.upsert_images("default", [image(1)], T0)
    reader = Store.open(database_url, read_only=True)
    try:
        with pytest.raises(DBAPIError):
            await reader.execute_read_only("DELETE FROM images")
    finally:
        await reader.close()
    assert len(await rows(store, ImageRow.__table__)) == 1


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Any) -> None:
    """Readers never block the sync, and a brief lock is waited out, not fatal."""
    store = Store.open(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        await store.migrate()
        async with store.engine.connect() as conn:
            mode = await conn.scalar(text("PRAGMA journal_mode"))
            busy_ms = await conn.scalar(text("PRAGMA busy_timeout"))
    finally:
        await store.close()
    assert (mode, busy_ms) == ("wal", 1_000)


@pytest.fixture
async def sqlite_store(tmp_path: Any) -> AsyncIterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'busy.db'}")
    await store.migrate()
    yield store
    await store.close()


async def test_a_write_waits_out_another_writer_of_the_sqlite_file(
    tmp_path: Any, sqlite_store: Store
) -> None:
    """Longer than one of SQLite's own waits (1 s): the write tries anew."""
    with another_writer(tmp_path / "busy.db") as holder:
        writing = asyncio.create_task(
            sqlite_store.upsert_images("default", [image(1)], T0)
        )
        await asyncio.sleep(2.5)
        assert not writing.done()
        holder.execute("COMMIT")
        counts = await writing

    assert counts.added == 1
    assert [row["id"] for row in await rows(sqlite_store, ImageRow.__table__)] == [1]


async def test_a_write_waiting_on_another_writer_stops_when_cancelled(
    tmp_path: Any, sqlite_store: Store
) -> None:
    """SQLite's wait runs in a thread a cancellation cannot reach: a single
    30 s wait held a daemon's stop 28 s past its grace. In steps of 1 s, the
    cancel cuts in at the next step."""
    with another_writer(tmp_path / "busy.db"):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sqlite_store.start_run("default", T0), 1.0)
        stopped_s = time.monotonic() - started

    assert stopped_s < 15  # against the 30 s of the patience, or of one wait
    assert await sqlite_store.recent_runs("default") == []


async def test_another_writer_holding_the_sqlite_file_past_the_patience_is_one_line(
    tmp_path: Any, sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inventory.store, "SQLITE_BUSY_PATIENCE_S", 1.5)
    with another_writer(tmp_path / "busy.db"), pytest.raises(StoreError) as raised:
        await sqlite_store.finish_run(
            "default", 1, status="failed", finished_at=T0, counts=RunCounts()
        )

    assert str(raised.value) == (
        "Could not record the end of run 1: another process held the SQLite "
        "file's write lock for 2 s (database is locked)."
    )


async def test_batches_fit_an_old_sqlite_s_999_variables(tmp_path: Any) -> None:
    """SQLite before 3.32 binds at most 999 variables in one statement."""

    from sqlalchemy import event

    store = Store.open(f"sqlite:///{tmp_path / 'old.db'}")

    @event.listens_for(store.engine.sync_engine, "connect")
    def old_sqlite(dbapi_connection: Any, _record: Any) -> None:
        raw = dbapi_connection.driver_connection._conn  # aiosqlite's sqlite3
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    try:
        await store.migrate()
        images = [image(i, regions=["nyc1", "ams3"]) for i in range(1, 2501)]
        actions = [
            (i % 2500 + 1, parse_action({"id": 10_000 + i, "status": "completed"}))
            for i in range(10_000)
        ]
        for _ in range(2):  # inserts, then updates of rows that exist
            counts = await store.upsert_images("default", images, T0)
            await store.upsert_actions("default", actions, T0)
        gone = await store.mark_images_deleted("default", T1, T2)
    finally:
        await store.close()
    assert counts.seen == 2500
    assert gone == 2500


async def test_pruning_keeps_each_account_s_newest_run_so_ids_never_restart(
    store: Store,
) -> None:
    for account in ("default", "other"):
        for started in (T0, T1):
            run = await store.start_run(account, started)
            await store.finish_run(
                account,
                run,
                status="succeeded",
                finished_at=started,
                counts=RunCounts(),
            )
    assert await store.prune_runs("default", T2 + timedelta(days=1)) == 1
    assert await store.start_run("default", T2) == 3
    assert len(await store.recent_runs("other")) == 2  # not this account's to prune


@pytest.fixture
async def other(database_url: str) -> AsyncIterator[Store]:
    """The same store as another process opens it."""
    async with reading(database_url) as store:
        yield store


async def test_one_process_at_a_time_holds_an_account_s_sync_lock(
    store: Store, other: Store
) -> None:
    async with store.account_lock("default"):
        with pytest.raises(AccountBusy, match="'default'"):
            async with other.account_lock("default"):
                pass
        async with other.account_lock("second account"):
            pass
    async with other.account_lock("default"):
        pass


async def test_a_lost_account_lock_is_taken_again_before_the_next_run(
    store: Store, other: Store, database_url: str
) -> None:
    async with store.account_lock("default") as lock:
        await lock.confirm()  # held: nothing to do
        await lose_account_lock(store, database_url)
        await lock.confirm()
        with pytest.raises(AccountBusy):
            async with other.account_lock("default"):
                pass
    async with other.account_lock("default"):
        pass


async def test_a_lost_account_lock_another_process_took_says_so(
    store: Store, other: Store, database_url: str
) -> None:
    async with store.account_lock("default") as lock:
        await lose_account_lock(store, database_url)
        async with other.account_lock("default"):
            with pytest.raises(AccountBusy, match="one at a time"):
                await lock.confirm()
        await lock.confirm()  # the other let go: ours again
        with pytest.raises(AccountBusy):
            async with other.account_lock("default"):
                pass


async def test_a_check_cancelled_midway_keeps_the_lock(
    store: Store, other: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that ends cancels its lock check wherever it is; on PostgreSQL a
    query cut midway used to leave the lock's session unusable, so the next
    check dropped it (letting the lock go) and took it again."""
    async with store.account_lock("default") as lock:
        for step in range(60):
            check = asyncio.create_task(lock.confirm())
            await asyncio.sleep(0.0001 * step)  # cut at a different point each time
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
            await lock.confirm()
        with pytest.raises(AccountBusy):
            async with other.account_lock("default"):
                pass
    assert "lost" not in caplog.text
    async with other.account_lock("default"):
        pass


async def test_a_store_from_a_newer_inventory_is_one_clear_error(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(StoreError, match="'9999'; is it from a newer inventory"):
        await store.migrate()


async def test_an_image_one_listing_missed_is_counted_added_when_it_is_back(
    store: Store,
) -> None:
    """Counted removed when a complete listing lacked it, then added again, so
    the runs' figures add up to what the store holds."""
    await store.upsert_images("default", [image(1), image(2)], T0)
    assert await store.mark_images_deleted("default", T1, T1) == 2
    changed = image(2, name="renamed while gone")

    counts = await store.upsert_images("default", [image(1), changed], T2)

    assert (counts.seen, counts.added, counts.updated) == (2, 2, 0)
    stored = await rows(store, ImageRow.__table__)
    assert [row["deleted_at"] for row in stored] == [None, None]
    assert [row["name"] for row in stored] == ["image 1", "renamed while gone"]
    again = await store.upsert_images("default", [image(1), changed], T2)
    assert (again.added, again.updated) == (0, 0)


async def test_a_run_overlapped_by_a_later_one_marks_none_of_its_images_deleted(
    store: Store,
) -> None:
    """Run A started at T0 and B at T1 both listed everything; B wrote last."""
    await store.upsert_images("default", [image(1), image(2)], T0)
    await store.upsert_images("default", [image(1), image(2)], T1)

    assert await store.mark_images_deleted("default", T0, T2) == 0
    assert await store.mark_images_deleted("default", T1, T2) == 0
    await store.upsert_images("default", [image(1)], T2)
    assert await store.mark_images_deleted("default", T2, T2) == 1


async def test_an_older_run_writing_late_leaves_a_newer_run_s_copy_alone(
    store: Store,
) -> None:
    """Run A (T0) lost its lock mid-run and B (T1) synced beside it: A's late
    writes neither overwrite B's copy nor move `last_seen_at` back, where
    B's deletions would take B's images."""
    await store.upsert_images("default", [image(1, name="new", regions=["ams3"])], T1)
    await store.upsert_actions(
        "default", [(1, parse_action({"id": 5, "status": "completed"}))], T1
    )
    before = (
        await rows(store, ImageRow.__table__),
        await rows(store, ImageRegionRow.__table__),
        await rows(store, ImageActionRow.__table__),
    )

    old = image(1, name="old", regions=["nyc3"])
    images = await store.upsert_images("default", [old, image(2)], T0)
    actions = await store.upsert_actions(
        "default", [(1, parse_action({"id": 5, "status": "in-progress"}))], T0
    )

    assert (images.seen, images.added, images.updated) == (2, 1, 0)
    assert (actions.seen, actions.added, actions.updated) == (1, 0, 0)
    stored = await rows(store, ImageRow.__table__)
    assert stored[0] == before[0][0]
    assert await rows(store, ImageRegionRow.__table__) == before[1]
    assert await rows(store, ImageActionRow.__table__) == before[2]
    assert await store.mark_images_deleted("default", T1, T2) == 1  # image 2 only
    assert [row["deleted_at"] for row in await rows(store, ImageRow.__table__)] == [
        None,
        T2,
    ]


async def test_first_migrations_at_once_all_succeed(database_url: str) -> None:
    """Two daemons started together on an empty store."""
    stores = [Store.open(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.migrate() for store in stores))
        revisions = {await store.revision() for store in stores}
    finally:
        for store in stores:
            await store.close()
    assert len(revisions) == 1 and None not in revisions


async def test_a_postgresql_that_accepts_no_connection_is_said_so_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hung or partitioned: CONNECT_TIMEOUT_S, not asyncpg's 60 s."""
    monkeypatch.setattr("inventory.store.CONNECT_TIMEOUT_S", 0.5)
    async with proxied_postgres() as (proxy, proxied):
        proxy.pause()
        store = Store.open(proxied.render_as_string(hide_password=False))
        try:
            with pytest.raises(StoreError) as raised:
                await asyncio.wait_for(store.ping(), 20)
        finally:
            await asyncio.wait_for(store.close(), 20)

    assert str(raised.value) == (
        f"The store at {proxied.render_as_string()} does not answer: no answer in time"
    )
