"""`inventory simulate`: serve a simulated DigitalOcean API until stopped."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import click

from inventory.simulator.options import MAX_IMAGES, SimulatorOptions
from inventory.simulator.simulator import Simulator

SHARE = click.FloatRange(0.0, 1.0)
SECONDS = click.FloatRange(min=0.0)
BUDGET = click.IntRange(min=0)


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free one).",
)
@click.option(
    "--images",
    default=300,
    show_default=True,
    type=click.IntRange(min=0, max=MAX_IMAGES),
    help="How many images to generate.",
)
@click.option(
    "--seed",
    default=1,
    show_default=True,
    type=int,
    help="The same seed generates the same account.",
)
@click.option("--token", default=None, help="The only accepted bearer token.")
@click.option(
    "--actions-per-image",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Mean actions of a private image.",
)
@click.option(
    "--private-share",
    default=0.6,
    show_default=True,
    type=SHARE,
    help="Share of images that are the account's own.",
)
@click.option(
    "--rate-per-minute",
    default=250,
    show_default=True,
    type=BUDGET,
    help="Requests a token may make per minute (0: no limit).",
)
@click.option(
    "--rate-per-hour",
    default=5000,
    show_default=True,
    type=BUDGET,
    help="Requests a token may make per hour (0: no limit).",
)
@click.option("--no-rate-limit", is_flag=True, help="Turn both rate budgets off.")
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    # inventory's rate_limit.time_scale takes no more: a faster simulator
    # could not be matched by the sync it serves.
    type=click.FloatRange(min=0.0, max=1e6, min_open=True),
    help="Shrink the rate-limit windows by this factor.",
)
@click.option("--latency", default=0.0, type=SECONDS, help="Added seconds per request.")
@click.option("--jitter", default=0.0, type=SECONDS, help="Uniform extra seconds.")
@click.option("--error-rate", default=0.0, type=SHARE, help="Share of 5xx answers.")
@click.option(
    "--html-error-share",
    default=0.5,
    show_default=True,
    type=SHARE,
    help="Share of 5xx answers with an HTML body.",
)
@click.option(
    "--drop-rate", default=0.0, type=SHARE, help="Share of dropped connections."
)
@click.option("--stall-rate", default=0.0, type=SHARE, help="Share of stalled answers.")
@click.option(
    "--stall-seconds",
    default=30.0,
    show_default=True,
    type=SECONDS,
    help="How long a stalled answer stalls.",
)
@click.option(
    "--stall-path",
    default=None,
    help="Stall only requests matching this regex: all, or --stall-rate of them.",
)
@click.option("--repeat-next", is_flag=True, help="Make one images `next` link repeat.")
@click.option(
    "--action-duration",
    default=5.0,
    show_default=True,
    type=SECONDS,
    help="Seconds a started transfer or convert stays in-progress.",
)
@click.option(
    "--action-error-share",
    default=0.1,
    show_default=True,
    type=SHARE,
    help="Share of started actions that end errored.",
)
@click.option(
    "--actions-order",
    default="newest",
    show_default=True,
    type=click.Choice(["newest", "oldest"]),
    help="Order of GET /v2/actions.",
)
@click.option(
    "--churn-interval",
    default=None,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Apply a churn step every this many seconds.",
)
@click.option(
    "--from-dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Load images and actions from captured JSON responses.",
)
def simulate(**params: Any) -> None:
    """Serve a local DigitalOcean API simulator until Ctrl-C."""
    host: str = params.pop("host")
    port: int = params.pop("port")
    options = _options(params)
    try:
        simulator = Simulator(options)
    except ValueError as exc:  # --from-dir holding no images
        raise click.UsageError(str(exc)) from exc
    try:
        asyncio.run(_serve(simulator, host, port))
    except OSError as exc:
        from inventory.cli import EXIT_USAGE, fail

        fail(f"Cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE)


def _options(params: dict[str, Any]) -> SimulatorOptions:
    off = params.pop("no_rate_limit")
    per_minute = params.pop("rate_per_minute") or None
    per_hour = params.pop("rate_per_hour") or None
    try:
        return SimulatorOptions(
            rate_per_minute=None if off else per_minute,
            rate_per_hour=None if off else per_hour,
            latency_s=params.pop("latency"),
            jitter_s=params.pop("jitter"),
            stall_s=params.pop("stall_seconds"),
            action_duration_s=params.pop("action_duration"),
            churn_interval_s=params.pop("churn_interval"),
            **params,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


async def _serve(simulator: Simulator, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with simulator.serve(host, port) as base_url:
            click.echo(
                f"Simulating DigitalOcean at {base_url} ({_describe(simulator)}); "
                "point DIGITALOCEAN_API_URL there. Ctrl-C stops."
            )
            if hint := _pacing_hint(simulator.options):
                click.echo(hint)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _describe(simulator: Simulator) -> str:
    options = simulator.options
    count = len(simulator.account.images)
    if options.from_dir is not None:
        return f"{count} images from {options.from_dir}"
    return f"{count} images, seed {options.seed}"


def _pacing_hint(options: SimulatorOptions) -> str | None:
    """How to make a sync's own budgets match this server's, when they differ."""
    if options.rate_per_minute is None and options.rate_per_hour is None:
        return (
            "Rate limits are off. A sync still keeps DigitalOcean's budgets; for "
            "full speed, lift them too: INVENTORY_RATE_LIMIT_PER_MINUTE=off "
            "INVENTORY_RATE_LIMIT_PER_HOUR=off."
        )
    if options.time_scale != 1.0:
        return (
            f"Rate windows are shrunk {options.time_scale:g} times; set "
            f"INVENTORY_RATE_LIMIT_TIME_SCALE={options.time_scale:g} (or "
            f"rate_limit.time_scale) for a sync to match."
        )
    return None
