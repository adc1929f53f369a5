"""Benchmark a full sync against its floor, side by side, in one run.

The simulator (a separate process, zero latency, no rate limits) serves N
images with about M actions each, all private so every image's actions are
fetched. For each store the script times, alternately:

- the floor: a bare aiohttp walk of the same URLs (same concurrency), plus one
  bulk INSERT of the same rows (images, their regions, actions) into an empty
  migrated store;
- `sync_account` into an empty migrated store.

It prints wall time, requests/s and rows/s of each, and the ratio sync/floor.
Usage: python bench/sync.py [--images 5000] [--actions 5] [--repeat 3]
       [--latency 0.05] [--postgres postgresql://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from inventory.client import open_client
from inventory.config import Settings, load_settings
from inventory.records import parse_action, parse_image
from inventory.store import Store, _action_row, _image_row
from inventory.sync import sync_account
from inventory.tables import ImageActionRow, ImageRegionRow, ImageRow

TOKEN = "dop_v1_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(
    images: int, actions: int, latency_s: float = 0.0
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "inventory", "simulate", "--port", str(port),
        "--images", str(images), "--actions-per-image", str(actions),
        "--private-share", "1.0", "--no-rate-limit", "--seed", "1",
        "--latency", str(latency_s),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the simulator did not start")


def settings_for(api_url: str, database_url: str) -> Settings:
    return load_settings(
        environ={},
        use_file=False,
        overrides={
            "api": {"url": api_url, "token": TOKEN},
            "store": {"url": database_url},
            "rate_limit": {"time_scale": 1e6},  # no pacing: measure the sync
        },
    )


async def fresh_store(kind: str, postgres: str | None, folder: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}"
    assert postgres is not None
    admin = make_url(postgres)
    name = f"inventory_bench_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return admin.set(database=name).render_as_string(hide_password=False)


async def drop_store(url: str, postgres: str | None) -> None:
    if not url.startswith("postgresql") or postgres is None:
        return
    dsn = make_url(postgres).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    await conn.execute(
        f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'
    )
    await conn.close()


async def migrated(url: str) -> Store:
    store = Store.open(url)
    await store.migrate()
    return store


async def floor(
    api_url: str, database_url: str, concurrency: int = 8
) -> tuple[int, int]:
    """Bare fetch of the same pages, then one bulk insert of the same rows."""
    store = await migrated(database_url)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def get(url: str) -> Any:
            async with session.get(url) as response:
                return json.loads(await response.read())

        images: list[Any] = []
        url: str | None = f"{api_url}/v2/images?per_page=200"
        requests = 0
        while url:
            body = await get(url)
            requests += 1
            images.extend(body["images"])
            url = body.get("links", {}).get("pages", {}).get("next")
        queue: asyncio.Queue[int] = asyncio.Queue()
        for image in images:
            queue.put_nowait(image["id"])
        actions: list[tuple[int, Any]] = []

        async def worker() -> None:
            nonlocal requests
            while not queue.empty():
                image_id = queue.get_nowait()
                body = await get(f"{api_url}/v2/images/{image_id}/actions?per_page=200")
                requests += 1
                actions.extend((image_id, a) for a in body["actions"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    now = datetime.now(UTC)
    image_rows = [_image_row("default", parse_image(i), now) for i in images]
    action_rows = [
        _action_row("default", image_id, parse_action(a), now)
        for image_id, a in actions
    ]
    region_rows = [
        {"account": "default", "image_id": image["id"], "region_slug": slug}
        for image in images
        for slug in dict.fromkeys(image.get("regions") or [])
    ]
    async with store.engine.begin() as conn:
        await conn.execute(insert(ImageRow.__table__), image_rows)
        await conn.execute(insert(ImageRegionRow.__table__), region_rows)
        await conn.execute(insert(ImageActionRow.__table__), action_rows)
    await store.close()
    return requests, len(image_rows) + len(action_rows)


async def sync(api_url: str, database_url: str) -> tuple[int, int]:
    settings = settings_for(api_url, database_url)
    store = await migrated(database_url)
    async with open_client(settings) as client:
        result = await sync_account(client, store, settings)
    await store.close()
    assert result.status == "succeeded", result.summary()
    counts = result.counts
    return counts.requests, counts.images_seen + counts.actions_seen


Step = Callable[[str, str], Awaitable[tuple[int, int]]]


async def timed(step: Step, api_url: str, url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    requests, rows = await step(api_url, url)
    return time.perf_counter() - started, requests, rows


async def bench(args: argparse.Namespace, api_url: str) -> None:
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory() as folder:
        for kind in kinds:
            floors, syncs = [], []
            for _ in range(args.repeat):
                url = await fresh_store(kind, args.postgres, Path(folder))
                floors.append(await timed(floor, api_url, url))
                await drop_store(url, args.postgres)
                url = await fresh_store(kind, args.postgres, Path(folder))
                syncs.append(await timed(sync, api_url, url))
                await drop_store(url, args.postgres)
            report(kind, floors, syncs)


def report(
    kind: str, floors: list[tuple[float, int, int]], syncs: list[tuple[float, int, int]]
) -> None:
    def line(name: str, runs: list[tuple[float, int, int]]) -> float:
        seconds = statistics.median(run[0] for run in runs)
        _, requests, rows = runs[0]
        print(
            f"  {name:<6} {seconds:7.2f} s  {requests / seconds:8.0f} requests/s  "
            f"{rows / seconds:9.0f} rows/s  ({requests} requests, {rows} rows)"
        )
        return seconds

    print(f"{kind} (median of {len(syncs)}):")
    ratio = line("sync", syncs) / line("floor", floors)
    print(f"  ratio sync/floor: {ratio:.2f} (aim: at most 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--actions", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to each answer"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("INVENTORY_TEST_POSTGRES_URL"),
        help="PostgreSQL server URL to create bench databases on",
    )
    args = parser.parse_args()
    process, api_url = start_simulator(args.images, args.actions, args.latency)
    try:
        asyncio.run(bench(args, api_url))
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
