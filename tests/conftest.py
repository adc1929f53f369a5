"""Shared fixtures: a real store on SQLite and on PostgreSQL, one per test.

PostgreSQL comes from INVENTORY_TEST_POSTGRES_URL; without it those cases skip
with a reason, and with INVENTORY_REQUIRE_POSTGRES=1 they fail instead.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from tcpproxy import Proxy, serve_proxy

from inventory.config import Settings, load_settings
from inventory.store import AccountLock, Store

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "do-api-examples"
if not EXAMPLES.is_dir():
    EXAMPLES = Path(__file__).resolve().parent / "data" / "do-api-examples"

TOKEN = "dop_v1_" + "5ec7e7" * 8


def postgres_admin_url() -> str:
    """The server to make test databases on, or skip (or fail) without one."""
    url = os.environ.get("INVENTORY_TEST_POSTGRES_URL")
    if url:
        return url
    reason = "INVENTORY_TEST_POSTGRES_URL is not set; PostgreSQL cases need it"
    if os.environ.get("INVENTORY_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + " (INVENTORY_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@asynccontextmanager
async def reading(database_url: str) -> AsyncIterator[Store]:
    """The same store as another process opens it: a person querying it, a
    second daemon."""
    store = Store.open(database_url)
    try:
        yield store
    finally:
        await store.close()


@contextmanager
def another_writer(path: str | Path) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction on the SQLite file, held for the
    block: a user's sqlite3 shell, a second account's sync."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        holder.close()


async def create_postgres_database() -> str:
    """A new, empty database on the test server; its URL."""
    admin = make_url(postgres_admin_url())
    name = f"inventory_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_asyncpg_dsn(admin))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin.set(database=name).render_as_string(hide_password=False)


@asynccontextmanager
async def proxied_postgres() -> AsyncIterator[tuple[Proxy, URL]]:
    """A new PostgreSQL database reached through a proxy that can pause: a
    store that hangs, at will. Dropped afterwards."""
    url = make_url(await create_postgres_database())
    try:
        async with serve_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            yield proxy, url.set(host="127.0.0.1", port=proxy.port)
    finally:
        await drop_postgres_database(url.render_as_string(hide_password=False))


async def drop_postgres_database(url: str) -> None:
    target = make_url(url)
    admin = make_url(postgres_admin_url())
    conn = await asyncpg.connect(_asyncpg_dsn(admin))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    finally:
        await conn.close()


def _asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A plain URL of an empty store: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inventory.db'}"
        return
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated store on each database."""
    opened = Store.open(database_url)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def make_settings(
    api_url: str = "http://do.test",
    database_url: str = "sqlite:///unused.db",
    **sections: dict[str, object],
) -> Settings:
    """Settings for tests: no retries' backoff, no file, the test token."""
    overrides: dict[str, dict[str, object]] = {
        "api": {"url": api_url, "token": TOKEN, "backoff_s": 0.0, "backoff_max_s": 0.0},
        "store": {"url": database_url},
        # DigitalOcean's budgets, on a clock 3,600 times faster: a minute's
        # 250 requests last 1/60 s, so tests pace without waiting.
        "rate_limit": {"time_scale": 3600.0},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(environ={}, overrides=overrides, use_file=False)


async def lose_account_lock(store: Store, database_url: str) -> None:
    """Take the lock from under its holder, as a dropped connection or a
    removed lock file would."""
    if store.dialect == "sqlite":
        Path(f"{database_url.removeprefix('sqlite:///')}.account-default.lock").unlink()
        return
    async with store.engine.connect() as conn:
        terminated = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND "
                "database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"
            )
        )
    assert terminated == 1


@asynccontextmanager
async def lock_taken_over(
    held: AccountLock, store: Store, database_url: str
) -> AsyncIterator[None]:
    """For the block, the lock `held` is lost (as to a dropped connection or
    a removed lock file) and `store` holds it, as another process would. No
    check of `held`'s falls between the loss and the take: it would take the
    lock back first (2 runs in 12 on a loaded machine)."""
    async with AsyncExitStack() as taken:
        async with held._confirming:
            await lose_account_lock(store, database_url)
            await taken.enter_async_context(store.account_lock("default"))
        yield
