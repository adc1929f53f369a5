"""`inventory demo`: the main job in one command, with nothing to set up.

It serves a generated account from the local simulator in this process and
syncs it into ./inventory-demo.db: never the user's own store, token or API.
"""

from __future__ import annotations

from pathlib import Path

import click
from tabulate import tabulate

from inventory import logs
from inventory.client import open_client
from inventory.config import load_settings
from inventory.simulator import Simulator, SimulatorOptions
from inventory.simulator.options import MAX_IMAGES
from inventory.store import Store
from inventory.sync import SyncResult, sync_account

DEMO_DATABASE = Path("inventory-demo.db")
DEMO_TOKEN = "dop_v1_demo"  # the simulator's own; no real token is involved

SAMPLE_QUERY = """\
SELECT r.region_slug, COUNT(*) AS images, SUM(i.size_gigabytes) AS gigabytes
FROM image_regions r
JOIN live_images i ON i.account = r.account AND i.id = r.image_id
WHERE i.public = false
GROUP BY r.region_slug
ORDER BY images DESC, r.region_slug
LIMIT 5"""

FURTHER_QUERY = (
    "SELECT type, status, COUNT(*) AS actions FROM image_actions "
    "GROUP BY type, status ORDER BY type, status"
)


@click.command()
@click.option(
    "--images",
    default=300,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_IMAGES),
    help="Images to generate.",
)
@click.option("--seed", default=1, show_default=True, help="Seed of the account.")
@click.pass_context
def demo(ctx: click.Context, images: int, seed: int) -> None:
    """Sync a simulated account into ./inventory-demo.db and query it."""
    from inventory.cli import run_async

    if DEMO_DATABASE.is_dir():
        raise click.UsageError(
            f"./{DEMO_DATABASE} is a directory; the demo writes its copy there as "
            "a file. Run it in another folder, or move that directory."
        )
    level = (ctx.obj or {}).get("log_level") or "WARNING"
    logs.configure("text", level, [DEMO_TOKEN])
    run_async(_demo)(images, seed)


async def _demo(images: int, seed: int) -> int:
    simulator = Simulator(SimulatorOptions(images=images, seed=seed, token=DEMO_TOKEN))
    url = f"sqlite:///{DEMO_DATABASE}"
    click.echo(f"Simulating a DigitalOcean account of {images} images (seed {seed}).")
    async with simulator.serve(host="127.0.0.1", port=0) as api_url:
        result = await _sync(api_url, url)
    click.echo(result.summary())
    if result.status != "succeeded":
        click.echo(
            "The demo's sync did not succeed, so there is nothing to show; run "
            "`inventory --log-level INFO demo` to see why.",
            err=True,
        )
        return 1
    # Our own SELECT, on a writable connection: the last one to close removes
    # SQLite's -wal and -shm files, which a read-only one cannot.
    store = Store.open(url)
    try:
        columns, rows = await store.execute_read_only(SAMPLE_QUERY)
    finally:
        await store.close()
    click.echo(f"\nPrivate images by region, from the copy:\n\n{SAMPLE_QUERY}\n")
    click.echo(tabulate(rows, headers=columns, floatfmt=".2f", missingval="NULL"))
    click.echo(
        f"\nThe copy is in {DEMO_DATABASE.absolute()}. Ask it more, for example:\n"
        f'  inventory query --database {url} "{FURTHER_QUERY}"'
    )
    return 0


async def _sync(api_url: str, database_url: str) -> SyncResult:
    """One sync with the project's defaults, ignoring the user's own settings."""
    settings = load_settings(
        environ={},
        use_file=False,
        overrides={
            "api": {"url": api_url, "token": DEMO_TOKEN},
            "store": {"url": database_url},
        },
    )
    store = Store.open(settings.database_url())
    try:
        await store.migrate()
        async with open_client(settings) as client:
            return await sync_account(client, store, settings)
    finally:
        await store.close()
