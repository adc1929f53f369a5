"""Whole sync runs against the simulator and a scripted API, on both databases."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from inventory import sync as sync_module
from inventory.client import open_client
from inventory.config import Settings
from inventory.errors import AuthError
from inventory.records import parse_image
from inventory.simulator import Simulator, SimulatorOptions
from inventory.store import Store
from inventory.sync import SyncResult, images_needing_actions, sync_account
from inventory.tables import ImageActionRow, ImageRegionRow, ImageRow

from conftest import (
    EXAMPLES,
    TOKEN,
    lock_taken_over,
    make_settings,
)
from fakeapi import FakeAPI, serve_fake_api

NO_LIMITS = {"rate_per_minute": None, "rate_per_hour": None}


async def sync(settings: Settings, store: Store) -> SyncResult:
    async with open_client(settings) as client:
        return await sync_account(client, store, settings)


async def table(store: Store, model: Any) -> list[dict[str, Any]]:
    t = model.__table__
    async with store.engine.connect() as conn:
        result = await conn.execute(select(t).order_by(*t.primary_key))
        return [dict(row) for row in result.mappings()]


async def assert_store_matches(store: Store, sim: Simulator) -> None:
    """Live images, their regions and every action equal the simulator's, row by row."""
    images = {img["id"]: img for img in sim.images()}
    stored = [r for r in await table(store, ImageRow) if r["deleted_at"] is None]
    assert {r["id"]: r["raw"] for r in stored} == images

    regions = {
        (r["image_id"], r["region_slug"]) for r in await table(store, ImageRegionRow)
    }
    expected_regions = {
        (i, slug) for i, img in images.items() for slug in img.get("regions") or []
    }
    live_regions = {pair for pair in regions if pair[0] in images}
    assert live_regions == expected_regions

    expected_actions = {}
    for parsed in images_needing_actions(parse_image(img) for img in images.values()):
        for action in sim.actions_for(parsed.id):
            expected_actions[action["id"]] = (parsed.id, action)
    stored_actions = {
        r["id"]: (r["image_id"], r["raw"])
        for r in await table(store, ImageActionRow)
        if r["image_id"] in images
    }
    assert stored_actions == expected_actions


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator(SimulatorOptions(images=300, seed=7, **NO_LIMITS))
    async with sim.serve(host="127.0.0.1", port=0) as url:
        yield sim, url


@pytest.mark.e2e
async def test_a_generated_account_is_copied_exactly_then_follows_its_changes(
    simulator: tuple[Simulator, str], store: Store, database_url: str
) -> None:
    sim, url = simulator
    settings = make_settings(url, database_url)

    first = await sync(settings, store)
    assert first.status == "succeeded"
    assert first.counts.images_added == len(sim.images()) == 300
    await assert_store_matches(store, sim)

    report = sim.churn()
    second = await sync(settings, store)
    assert second.status == "succeeded"
    assert second.counts.images_added == report.images_added
    assert second.counts.images_removed == report.images_removed
    await assert_store_matches(store, sim)

    third = await sync(settings, store)
    assert (third.counts.images_added, third.counts.images_updated) == (0, 0)
    assert (third.counts.actions_added, third.counts.actions_updated) == (0, 0)
    assert third.counts.images_removed == 0


async def test_a_long_run_says_how_far_it_got(
    simulator: tuple[Simulator, str],
    store: Store,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import inventory.sync

    monkeypatch.setattr(inventory.sync, "PROGRESS_S", 0.0)
    monkeypatch.setattr(inventory.sync, "LONG_RUN_S", 0.0)
    sim, url = simulator
    caplog.set_level("INFO", logger="inventory.sync")
    result = await sync(make_settings(url, database_url), store)
    assert result.status == "succeeded"
    notices = [r.getMessage() for r in caplog.records if getattr(r, "notice", 0)]
    fetching = len(images_needing_actions(map(parse_image, sim.images())))
    assert notices[0].startswith("Listed 300 images; ")
    assert notices[-1].startswith(f"Fetched the actions of {fetching} of {fetching} ")


@pytest.mark.e2e
async def test_the_example_payloads_round_trip_row_by_row(
    store: Store, database_url: str
) -> None:
    sim = Simulator(SimulatorOptions(from_dir=EXAMPLES, **NO_LIMITS))
    async with sim.serve(host="127.0.0.1", port=0) as url:
        result = await sync(make_settings(url, database_url), store)
    assert result.status == "succeeded"
    assert result.counts.images_seen == len(sim.images())
    await assert_store_matches(store, sim)


@pytest.mark.e2e
async def test_every_image_s_actions_are_fetched_when_asked(
    simulator: tuple[Simulator, str], store: Store, database_url: str
) -> None:
    sim, url = simulator
    settings = make_settings(url, database_url, sync={"actions_for": "all"})
    result = await sync(settings, store)
    assert result.counts.requests == 2 + len(sim.images())


def images_page(ids: list[int], next_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "images": [{"id": i, "public": False, "regions": ["nyc3"]} for i in ids],
        "links": {"pages": {"next": next_url} if next_url else {}},
    }
    return body


def actions(*ids: int) -> dict[str, Any]:
    return {"actions": [{"id": i, "status": "completed"} for i in ids]}


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with serve_fake_api() as fake:
        yield fake


async def test_a_404_for_one_image_s_actions_is_not_an_error(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get(
        "/v2/images/1/actions?per_page=200",
        status=404,
        payload={
            "id": "not_found",
            "message": "The resource you requested could not be found.",
        },
    )
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20))
    result = await sync(make_settings(api.url, database_url), store)
    assert (result.status, result.counts.actions_seen) == ("succeeded", 1)


async def test_an_image_whose_actions_fail_keeps_its_stored_actions(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    settings = make_settings(api.url, database_url, api={"max_retries": 1})
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]), repeat=True)
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10, 11))
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20))
    assert (await sync(settings, store)).status == "succeeded"

    for _ in range(2):
        api.get(
            "/v2/images/1/actions?per_page=200",
            status=500,
            body="oops",
            content_type="text/plain",
        )
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20, 21))
    result = await sync(settings, store)

    assert result.status == "partial"
    assert result.failed_images == [1]
    assert "Actions not fetched for images 1" in (result.error or "")
    stored = [(r["image_id"], r["id"]) for r in await table(store, ImageActionRow)]
    assert stored == [(1, 10), (1, 11), (2, 20), (2, 21)]
    runs = await store.recent_runs("default")
    assert runs[0]["status"] == "partial"


async def test_a_listing_that_breaks_on_page_3_marks_nothing_deleted(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    settings = make_settings(api.url, database_url, api={"max_retries": 1})
    p2, p3 = "/v2/images?page=2&per_page=200", "/v2/images?page=3&per_page=200"
    api.get("/v2/images?per_page=200", payload=images_page([1], api.url + p2))
    api.get(p2, payload=images_page([2], api.url + p3))
    api.get(p3, payload=images_page([3]))
    for i in (1, 2, 3):
        api.get(f"/v2/images/{i}/actions?per_page=200", payload=actions(), repeat=True)
    assert (await sync(settings, store)).status == "succeeded"

    api.get("/v2/images?per_page=200", payload=images_page([1], api.url + p2))
    api.get(p2, payload=images_page([2], api.url + p3))
    for _ in range(2):
        api.get(
            p3, status=502, body="<html>bad gateway</html>", content_type="text/html"
        )
    result = await sync(settings, store)

    assert result.status == "failed"
    assert "answered HTTP 502" in (result.error or "")
    assert result.counts.images_removed == 0
    assert [r["deleted_at"] for r in await table(store, ImageRow)] == [None] * 3


async def test_an_error_that_echoes_the_token_reaches_neither_store_nor_summary(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    """A proxy in the way may quote the request back; the token stays out."""
    settings = make_settings(api.url, database_url, api={"max_retries": 0})
    echoed = {"id": "bad_gateway", "message": f"refused Bearer {TOKEN}"}
    api.get("/v2/images?per_page=200", status=502, payload=echoed)

    result = await sync(settings, store)

    assert result.status == "failed"
    assert "refused Bearer ***" in (result.error or "")
    assert TOKEN not in result.summary()
    [row] = await store.recent_runs("default")
    assert TOKEN not in str(row)


async def test_an_image_gone_upstream_is_marked_deleted_and_keeps_its_actions(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    settings = make_settings(api.url, database_url)
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10), repeat=True)
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20))
    await sync(settings, store)

    api.get("/v2/images?per_page=200", payload=images_page([1]))
    result = await sync(settings, store)

    assert (result.status, result.counts.images_removed) == ("succeeded", 1)
    deleted = {
        r["id"]: r["deleted_at"] is not None for r in await table(store, ImageRow)
    }
    assert deleted == {1: False, 2: True}
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10, 20]


async def test_a_rejected_token_fails_the_run_and_says_so(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    api.get(
        "/v2/images?per_page=200",
        status=401,
        payload={"id": "unauthorized", "message": "Unable to authenticate you."},
    )
    with pytest.raises(AuthError):
        await sync(make_settings(api.url, database_url), store)
    [run] = await store.recent_runs("default")
    assert run["status"] == "failed"
    assert "image:read" in run["error"]


async def test_a_run_past_its_deadline_is_interrupted_and_keeps_what_it_stored(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    # The deadline leaves a loaded machine time for image 1, never for image 2.
    settings = make_settings(api.url, database_url, sync={"deadline_s": 2.0})
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10))
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20), delay_s=60)
    result = await sync(settings, store)
    assert result.status == "interrupted"
    assert "deadline" in (result.error or "")
    assert [r["id"] for r in await table(store, ImageRow)] == [1, 2]
    assert [r["deleted_at"] for r in await table(store, ImageRow)] == [None, None]
    # Fetched before the deadline, stored even though the run stopped early.
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10]


async def test_a_filtered_listing_deletes_only_within_its_filter(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    settings = make_settings(api.url, database_url, sync={"private": True})
    public = parse_image({"id": 99, "public": True})
    await store.upsert_images("default", [public], datetime(2026, 1, 1, tzinfo=UTC))
    api.get("/v2/images?per_page=200&private=true", payload=images_page([1]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions())
    result = await sync(settings, store)
    assert (result.status, result.counts.images_removed) == ("succeeded", 0)


async def test_an_image_without_an_id_is_reported_and_nothing_is_deleted(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    await store.upsert_images(
        "default", [parse_image({"id": 5})], datetime(2026, 1, 1, tzinfo=UTC)
    )
    body = images_page([1])
    body["images"].append({"name": "no id"})
    api.get("/v2/images?per_page=200", payload=body)
    api.get("/v2/images/1/actions?per_page=200", payload=actions())
    result = await sync(make_settings(api.url, database_url), store)
    assert result.status == "failed"
    assert "no integer id" in (result.error or "")
    assert [r["deleted_at"] for r in await table(store, ImageRow)] == [None, None]


@pytest.mark.e2e
async def test_a_reader_holding_the_sqlite_store_open_does_not_block_the_sync(
    simulator: tuple[Simulator, str], tmp_path: Path
) -> None:
    sim, url = simulator
    database = tmp_path / "inventory.db"
    store = Store.open(f"sqlite:///{database}")
    await store.migrate()
    settings = make_settings(url, f"sqlite:///{database}")
    await sync(settings, store)

    reader = sqlite3.connect(database)
    reader.execute("BEGIN")
    before = reader.execute("SELECT count(*) FROM images").fetchone()
    sim.churn()
    try:
        result = await asyncio.wait_for(sync(settings, store), timeout=30)
        assert reader.execute("SELECT count(*) FROM images").fetchone() == before
    finally:
        reader.rollback()
        reader.close()
        await store.close()
    assert result.status == "succeeded"


async def test_the_same_image_on_two_pages_is_seen_once_and_stored_last_copy(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    p2 = "/v2/images?page=2&per_page=200"
    first = images_page([1, 2], api.url + p2)
    again = images_page([2])
    again["images"][0]["name"] = "renamed"
    api.get("/v2/images?per_page=200", payload=first)
    api.get(p2, payload=again)
    api.get("/v2/images/1/actions?per_page=200", payload=actions())
    api.get("/v2/images/2/actions?per_page=200", payload=actions(), repeat=True)
    result = await sync(make_settings(api.url, database_url), store)
    assert (result.counts.images_seen, result.counts.images_added) == (2, 2)
    assert api.count("/v2/images/2/actions?per_page=200") == 1
    assert [r.get("name") for r in (await table(store, ImageRow))] == [None, "renamed"]


async def test_a_run_stopped_by_its_deadline_after_a_complete_listing_still_deletes(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    """Deletions follow the listing, not the run's status."""
    settings = make_settings(api.url, database_url, sync={"deadline_s": 2.0})
    api.get("/v2/images?per_page=200", payload=images_page([1, 2, 3]))
    for i in (1, 2, 3):
        api.get(f"/v2/images/{i}/actions?per_page=200", payload=actions())
    assert (await sync(settings, store)).status == "succeeded"

    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10))
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20), delay_s=60)
    result = await sync(settings, store)

    assert result.status == "interrupted"
    assert result.counts.images_removed == 1
    deleted = {
        r["id"]: r["deleted_at"] is not None for r in await table(store, ImageRow)
    }
    assert deleted == {1: False, 2: False, 3: True}
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10]


async def test_the_same_image_twice_on_one_page_has_its_actions_fetched_once(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    page = images_page([1, 1])
    page["images"][1]["name"] = "second copy"
    api.get("/v2/images?per_page=200", payload=page)
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10), repeat=True)
    result = await sync(make_settings(api.url, database_url), store)

    assert result.status == "succeeded"
    assert (result.counts.images_seen, result.counts.images_added) == (1, 1)
    assert api.count("/v2/images/1/actions?per_page=200") == 1
    assert [r["name"] for r in await table(store, ImageRow)] == ["second copy"]


async def test_a_listing_that_differs_from_its_announced_total_is_a_warning(
    api: FakeAPI,
    store: Store,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    page = images_page([1, 2]) | {"meta": {"total": 3}}
    api.get("/v2/images?per_page=200", payload=page)
    for i in (1, 2):
        api.get(f"/v2/images/{i}/actions?per_page=200", payload=actions())
    result = await sync(make_settings(api.url, database_url), store)

    assert result.status == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["The listing announced 3 images and returned 2 distinct ones"]


async def test_a_store_that_hangs_cannot_hold_a_run_long_past_its_deadline(
    api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL alone: another session locks the actions table for good."""
    import asyncpg

    import inventory.sync

    from conftest import create_postgres_database, drop_postgres_database

    monkeypatch.setattr(inventory.sync, "DRAIN_S", 0.5)
    url = await create_postgres_database()
    store = Store.open(url)
    locker = None
    try:
        await store.migrate()
        locker = await asyncpg.connect(url)
        await locker.execute("BEGIN; LOCK TABLE image_actions IN ACCESS EXCLUSIVE MODE")
        settings = make_settings(api.url, url, sync={"deadline_s": 1.0})
        api.get("/v2/images?per_page=200", payload=images_page([1]))
        api.get("/v2/images/1/actions?per_page=200", payload=actions(10))
        result = await sync(settings, store)
    finally:
        if locker is not None:
            await locker.close()
        await store.close()
        await drop_postgres_database(url)

    assert result.status == "interrupted"
    assert "deadline" in (result.error or "")


async def test_a_run_the_budget_stops_keeps_every_page_and_leaves_the_store_free(
    store: Store, database_url: str
) -> None:
    """The writer is not cut off mid-transaction: no page lost, no lock kept."""
    sim = Simulator(SimulatorOptions(images=400, seed=7, **NO_LIMITS))
    async with sim.serve(host="127.0.0.1", port=0) as url:
        settings = make_settings(
            url,
            database_url,
            rate_limit={"per_minute": 100, "per_hour": None, "time_scale": 1.0},
            sync={"deadline_s": 5.0},
        )
        result = await asyncio.wait_for(sync(settings, store), 30)

    assert result.status == "interrupted"
    assert "rate budget" in (result.error or "")
    assert len(await table(store, ImageRow)) == result.counts.images_seen == 400
    stored = len(await table(store, ImageActionRow))
    assert stored == result.counts.actions_seen > 0
    async with asyncio.timeout(5):  # a store left locked would wait 30 s
        await store.start_run("default", datetime.now(UTC))


class HourSlowClock(datetime):
    """The clock of a replica that runs an hour slow."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) - timedelta(hours=1)


async def test_a_process_whose_clock_runs_slow_still_updates_the_shared_store(
    api: FakeAPI, store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes sharing a store stamp what they saw by the store's clock: one
    whose own clock is an hour slow would otherwise look older than what the
    last run stored, and the newer-row guard would drop all it saw."""
    settings = make_settings(api.url, database_url)
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10))
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20))
    assert (await sync(settings, store)).status == "succeeded"

    monkeypatch.setattr(sync_module, "datetime", HourSlowClock)
    page = images_page([1])
    page["images"][0]["name"] = "renamed"
    api.get("/v2/images?per_page=200", payload=page)
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10, 11))
    result = await sync(settings, store)

    assert result.status == "succeeded"
    assert (result.counts.images_updated, result.counts.images_removed) == (1, 1)
    assert result.counts.actions_added == 1
    rows = await table(store, ImageRow)
    assert [(r["id"], r.get("name")) for r in rows] == [(1, "renamed"), (2, None)]
    assert [r["deleted_at"] is None for r in rows] == [True, False]
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10, 11, 20]


async def test_a_run_that_loses_its_lock_to_another_process_stops_interrupted(
    api: FakeAPI,
    store: Store,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its PostgreSQL connection dropped (or its lock file was removed) midway
    and another process took the lock: this run stands back at once instead
    of syncing beside that one."""
    monkeypatch.setattr(sync_module, "LOCK_CHECK_S", 0.05)
    settings = make_settings(api.url, database_url)
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10))
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20), delay_s=30)
    other = Store.open(database_url)
    try:
        async with (
            store.account_lock("default") as lock,
            open_client(settings) as client,
        ):
            run = asyncio.create_task(sync_account(client, store, settings, lock=lock))
            for _ in range(200):
                if await table(store, ImageActionRow):
                    break
                await asyncio.sleep(0.05)
            async with lock_taken_over(lock, other, database_url):
                result = await asyncio.wait_for(run, 10)
    finally:
        await other.close()

    assert result.status == "interrupted"
    assert "It took the lock during this run." in (result.error or "")
    [row] = [r for r in await store.recent_runs() if r["id"] == result.run_id]
    assert (row["status"], row["error"]) == ("interrupted", result.error)
    assert [r["deleted_at"] for r in await table(store, ImageRow)] == [None, None]
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10]


async def test_a_run_whose_lock_holds_is_not_disturbed_by_its_checks(
    api: FakeAPI,
    store: Store,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sync_module, "LOCK_CHECK_S", 0.01)
    settings = make_settings(api.url, database_url)
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10), delay_s=0.3)
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20), delay_s=0.3)
    async with (
        store.account_lock("default") as lock,
        open_client(settings) as client,
    ):
        result = await sync_account(client, store, settings, lock=lock)
        await lock.confirm()  # still held, by the same session or file
    assert result.status == "succeeded"
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10, 20]
    assert "lock" not in caplog.text


REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON image_actions "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; "
        "END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON image_actions "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}


async def test_a_store_that_refuses_a_write_fails_the_run_in_one_line(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    """A full disk, say: the run is recorded failed with the store's reason,
    and what was written before stands."""
    async with store.engine.begin() as conn:
        for statement in REFUSE[store.dialect]:
            await conn.execute(text(statement))
    settings = make_settings(api.url, database_url)
    api.get("/v2/images?per_page=200", payload=images_page([1, 2]))
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10))
    api.get("/v2/images/2/actions?per_page=200", payload=actions(20))

    result = await sync(settings, store)

    assert result.status == "failed"
    assert (result.error or "").startswith("The store at ")
    assert "could not take a write: " in (result.error or "")
    assert "\n" not in (result.error or "") and "[SQL:" not in (result.error or "")
    [row] = await store.recent_runs()
    assert (row["status"], row["error"]) == ("failed", result.error)
    assert [r["id"] for r in await table(store, ImageRow)] == [1, 2]
    assert [r["deleted_at"] for r in await table(store, ImageRow)] == [None, None]


async def test_an_api_outage_mid_run_leaves_the_other_images_for_the_next_run(
    api: FakeAPI,
    store: Store,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every image's actions failing, every retry spent: after OUTAGE_AFTER in
    a row the run stops asking, instead of retrying each of the rest in turn."""
    ids = list(range(1, 101))
    settings = make_settings(
        api.url, database_url, api={"max_retries": 1}, sync={"concurrency": 2}
    )
    api.get("/v2/images?per_page=200", payload=images_page(ids))
    for i in ids:
        api.get(f"/v2/images/{i}/actions?per_page=200", status=503, repeat=True)

    result = await sync(settings, store)

    assert result.status == "partial"
    assert sorted(result.failed_images) == ids
    asked = sum(api.count(f"/v2/images/{i}/actions?per_page=200") for i in ids)
    # Each asked image twice (one retry); the fetchers in flight finish theirs.
    assert asked <= 2 * (sync_module.OUTAGE_AFTER + 2)
    assert "The API looked down (10 images in a row failed" in (result.error or "")
    assert "were not asked." in (result.error or "")
    assert caplog.text.count("The API looks down") == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # One per image that failed before the outage was called, that line, and
    # the run's summary: not one per retry, nor one per image in flight.
    assert len(warnings) <= sync_module.OUTAGE_AFTER + 2
    assert len(await table(store, ImageRow)) == 100


async def test_failures_between_successes_are_no_outage(
    api: FakeAPI, store: Store, database_url: str
) -> None:
    ids = list(range(1, 41))
    settings = make_settings(
        api.url, database_url, api={"max_retries": 0}, sync={"concurrency": 1}
    )
    api.get("/v2/images?per_page=200", payload=images_page(ids))
    for i in ids:
        if i % 5:
            api.get(f"/v2/images/{i}/actions?per_page=200", status=503)
        else:
            api.get(f"/v2/images/{i}/actions?per_page=200", payload=actions(i))

    result = await sync(settings, store)

    assert result.status == "partial"
    assert sorted(result.failed_images) == [i for i in ids if i % 5]
    assert "looked down" not in (result.error or "")
    assert [r["id"] for r in await table(store, ImageActionRow)] == ids[4::5]


async def test_an_image_id_beyond_64_bits_is_one_line_and_the_rest_is_stored(
    api: FakeAPI, store: Store, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the database's overflow (a traceback on SQLite): the image is left
    out as one without a usable id, and nothing is marked deleted."""
    body = images_page([1])
    body["images"].append({"id": 2**63, "name": "too big"})
    body["meta"] = {"total": 2}
    api.get("/v2/images?per_page=200", payload=body)
    api.get("/v2/images/1/actions?per_page=200", payload=actions(10))

    result = await sync(make_settings(api.url, database_url), store)

    assert result.status == "failed"
    assert result.error == (
        "An image in the API's answer has an id beyond 64 bits: 9223372036854775808."
    )
    assert [r["id"] for r in await table(store, ImageRow)] == [1]
    assert [r["id"] for r in await table(store, ImageActionRow)] == [10]
    assert "announced" not in caplog.text  # two listed, two counted


async def test_a_token_an_answer_echoes_is_not_stored(
    api: FakeAPI,
    store: Store,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whole, cut short or re-cased, in any field or tag: stored as ***."""
    settings = make_settings(api.url, database_url)
    image = {
        "id": 1,
        "public": False,
        "regions": ["nyc3"],
        "name": f"img-{TOKEN}",
        "description": TOKEN[7:].upper(),
        "tags": [TOKEN[10:30], "kept"],
        "error_message": None,
    }
    api.get("/v2/images?per_page=200", payload={"images": [image], "links": {}})
    api.get(
        "/v2/images/1/actions?per_page=200",
        payload={"actions": [{"id": 9, "status": "completed", "type": TOKEN}]},
    )

    result = await sync(settings, store)

    assert result.status == "succeeded"
    dumped = str([await table(store, ImageRow), await table(store, ImageActionRow)])
    assert TOKEN[10:22] not in dumped and TOKEN[10:22].upper() not in dumped
    stored = (await table(store, ImageRow))[0]
    assert (stored["name"], stored["description"], stored["tags"]) == (
        "img-***",
        "***",
        ["***", "kept"],
    )
    assert "An API answer held the token, or part of it; stored as ***" in caplog.text
