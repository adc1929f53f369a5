"""Whole syncs paced by the rate limiter: the simulator's budgets, 429s, deadlines.

The simulator enforces DigitalOcean's sliding windows on a clock 3,600 times
faster (a minute lasts 1/60 s, an hour 1 s), with budgets small enough that a
few hundred requests span several hours. Narrow cases script the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from inventory.client import open_client
from inventory.config import Settings
from inventory.ratelimit import RateLimiter
from inventory.records import parse_image
from inventory.simulator import Simulator, SimulatorOptions
from inventory.store import Store
from inventory.sync import SyncResult, sync_account
from inventory.tables import ImageActionRow, ImageRow

from conftest import TOKEN, make_settings
from fakeapi import serve_fake_api

pytestmark = pytest.mark.e2e

TIME_SCALE = 3600.0
FIRST = "/v2/images?per_page=200"
SECOND = "/v2/images?page=2&per_page=200"
TOO_MANY = {"id": "too_many_requests", "message": "API rate limit exceeded."}


def budgets(per_minute: int, per_hour: int) -> dict[str, Any]:
    return {"per_minute": per_minute, "per_hour": per_hour, "time_scale": TIME_SCALE}


async def sync(
    settings: Settings, store: Store, limiter: RateLimiter | None = None
) -> SyncResult:
    async with open_client(settings, limiter) as client:
        return await sync_account(client, store, settings)


async def rows(store: Store, model: Any) -> list[dict[str, Any]]:
    table = model.__table__
    async with store.engine.connect() as conn:
        result = await conn.execute(select(table).order_by(*table.primary_key))
        return [dict(row) for row in result.mappings()]


async def assert_copied_whole(store: Store, sim: Simulator) -> None:
    """Every image and every action of the simulator is in the store."""
    images = {image["id"]: image for image in sim.images()}
    stored = await rows(store, ImageRow)
    assert {row["id"]: row["raw"] for row in stored} == images
    actions = {
        action["id"]: image_id
        for image_id in images
        for action in sim.actions_for(image_id)
    }
    stored_actions = await rows(store, ImageActionRow)
    assert {row["id"]: row["image_id"] for row in stored_actions} == actions


@contextlib.asynccontextmanager
async def simulated(
    images: int, per_minute: int, per_hour: int
) -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator(
        SimulatorOptions(
            images=images,
            seed=3,
            private_share=1.0,
            token=TOKEN,
            rate_per_minute=per_minute,
            rate_per_hour=per_hour,
            time_scale=TIME_SCALE,
        )
    )
    async with sim.serve(host="127.0.0.1", port=0) as url:
        yield sim, url


# Against the simulator.


async def test_a_sync_larger_than_the_hour_paces_itself_across_it_without_a_429(
    store: Store, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with simulated(images=150, per_minute=10, per_hour=60) as (sim, url):
        # A copy from an earlier run, for the plan to estimate from.
        earlier = [parse_image(image) for image in sim.images()]
        await store.upsert_images("default", earlier, datetime.now(UTC))
        settings = make_settings(
            url, database_url, rate_limit=budgets(10, 60), sync={"actions_for": "all"}
        )
        with caplog.at_level(logging.INFO, logger="inventory.sync"):
            result = await sync(settings, store)

    requests = math.ceil(150 / 200) + 150
    assert result.status == "succeeded"
    assert (result.counts.requests, result.counts.rate_limited) == (requests, 0)
    assert result.counts.rate_wait_s > 0
    assert sim.stats.rate_limited == 0
    await assert_copied_whole(store, sim)

    (run,) = await store.recent_runs(settings.account)
    assert (run["requests"], run["rate_limited"]) == (requests, 0)
    assert run["rate_wait_s"] == pytest.approx(result.counts.rate_wait_s)
    assert f"about {requests} requests for 150 images" in caplog.text
    assert "it will pace itself across the hour" in caplog.text


async def spend(base_url: str, stop: asyncio.Event, interval_s: float) -> int:
    """Another program on the same token: plain GETs, 429s shrugged off."""
    spent = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        while not stop.is_set():
            async with session.get(f"{base_url}/v2/images?per_page=1") as response:
                await response.read()
                spent += response.status == 200
            await asyncio.sleep(interval_s)
    return spent


async def test_a_second_client_on_the_token_slows_the_sync_without_429s(
    store: Store, database_url: str
) -> None:
    async with simulated(images=200, per_minute=10, per_hour=100) as (sim, url):
        settings = make_settings(
            url, database_url, rate_limit=budgets(10, 100), sync={"actions_for": "all"}
        )
        stop = asyncio.Event()
        other = asyncio.create_task(spend(url, stop, interval_s=0.02))
        await asyncio.sleep(0.2)  # it has spent part of the hour before we start
        try:
            result = await sync(settings, store)
        finally:
            stop.set()
            spent = await other

    assert result.status == "succeeded"
    assert result.counts.rate_limited <= 1
    assert result.counts.requests == 1 + 200 + result.counts.rate_limited
    assert spent > 20
    await assert_copied_whole(store, sim)


# Scripted answers.


def image(image_id: int) -> dict[str, Any]:
    return {"id": image_id, "name": f"image-{image_id}", "public": True}


def page(ids: list[int], next_url: str | None = None) -> dict[str, Any]:
    links = {"pages": {"next": next_url}} if next_url else {}
    return {"images": [image(i) for i in ids], "links": links, "meta": {"total": 2}}


def rate_headers(remaining: int, reset_in_s: float) -> dict[str, str]:
    """Rate headers in the casings DigitalOcean's own samples use."""
    return {
        "RateLimit-Limit": "5000",
        "rateLimit-Remaining": str(remaining),
        "rateLimit-reset": str(int(time.time() + reset_in_s)),
    }


async def test_a_reset_an_hour_away_ends_a_run_with_a_short_deadline_interrupted(
    store: Store, database_url: str
) -> None:
    seen_before = datetime(2024, 1, 1, tzinfo=UTC)
    await store.upsert_images("default", [parse_image(image(99))], seen_before)
    async with serve_fake_api() as api:
        api.get(
            FIRST,
            payload=page([1], f"{api.url}{SECOND}"),
            headers=rate_headers(4000, 60),
        )
        # Late enough for the first page to be written before the run stops.
        api.get(
            SECOND,
            status=429,
            payload=TOO_MANY,
            headers=rate_headers(0, 3600),
            delay_s=0.5,
        )
        settings = make_settings(
            api.url,
            database_url,
            rate_limit={"time_scale": 1.0},
            sync={"deadline_s": 5.0},
        )
        result = await sync(settings, store)

    assert result.status == "interrupted"
    assert result.error is not None
    assert re.fullmatch(
        r"The rate budget returns in 3[56]\d\d s, after this run's deadline "
        r"\(in [45] s\); the run stops here and keeps what it stored\.",
        result.error,
    )
    assert (result.counts.requests, result.counts.rate_limited) == (2, 1)
    stored = {row["id"]: row["deleted_at"] for row in await rows(store, ImageRow)}
    assert stored == {1: None, 99: None}
    (run,) = await store.recent_runs("default")
    assert (run["status"], run["error"]) == ("interrupted", result.error)


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param({"Retry-After": "2", **rate_headers(0, 1800)}, id="retry-after"),
        pytest.param(rate_headers(0, -30), id="reset-in-the-past"),
        pytest.param({}, id="headers-missing"),
        pytest.param(
            {"RETRY-AFTER": "1", "RATELIMIT-REMAINING": "0", "ratelimit-LIMIT": "5000"},
            id="odd-casing",
        ),
    ],
)
async def test_after_a_429_the_run_waits_then_carries_on_losing_nothing(
    store: Store, database_url: str, refusal: dict[str, str]
) -> None:
    async with serve_fake_api() as api:
        api.get(FIRST, payload=page([1], f"{api.url}{SECOND}"))
        api.get(SECOND, status=429, payload=TOO_MANY, headers=refusal)
        api.get(SECOND, payload=page([2]))
        # A minute of 0.5 s bounds retry-after; the first backoff lasts 8 ms.
        settings = make_settings(api.url, database_url, rate_limit={"time_scale": 120})
        result = await sync(settings, store)

    assert result.status == "succeeded"
    assert (result.counts.requests, result.counts.rate_limited) == (3, 1)
    assert result.counts.rate_wait_s > 0
    stored = {row["id"]: row["deleted_at"] for row in await rows(store, ImageRow)}
    assert stored == {1: None, 2: None}


async def test_answers_without_rate_headers_are_paced_by_the_budgets_alone(
    store: Store, database_url: str
) -> None:
    async with serve_fake_api() as api:
        api.get(FIRST, payload=page([1], f"{api.url}{SECOND}"))
        api.get(SECOND, payload=page([2]))
        settings = make_settings(api.url, database_url, rate_limit=budgets(1, 100))
        result = await sync(settings, store)

    assert result.status == "succeeded"
    assert (result.counts.requests, result.counts.rate_limited) == (2, 0)
    assert result.counts.rate_wait_s > 0
