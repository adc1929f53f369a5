"""Alembic's entry point: runs the migrations on the store's async engine.

`inventory migrate` passes its connection in `config.attributes`; run by hand,
the URL comes from INVENTORY_DATABASE_URL (or the default SQLite store).
"""

import asyncio
import os

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from inventory.config import DEFAULT_DATABASE_URL, database_url
from inventory.tables import Base

target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_by_hand() -> None:
    url = database_url(os.environ.get("INVENTORY_DATABASE_URL", DEFAULT_DATABASE_URL))
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    asyncio.run(run_by_hand())
