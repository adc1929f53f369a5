"""Benchmark: full syncs paced by the rate limiter against the simulator.

Each scenario serves a simulated account with DigitalOcean's budgets on a
shrunk clock, syncs it whole into a temporary SQLite store, and prints the
requests made, the 429s received, the wall time, the least time the budgets
allow for that many requests (`Budget.duration_s`) and their ratio.

    python bench/ratelimit.py            # 2,000 images at x10, 6,000 at x60
    python bench/ratelimit.py --quick    # small variants, a few seconds each
    python bench/ratelimit.py --simulator process   # serve from a subprocess
    python bench/ratelimit.py --latency 0.05        # every answer 50 ms late
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from inventory.client import open_client
from inventory.config import Settings
from inventory.ratelimit import Budget, Headers, RateLimiter
from inventory.simulator import Simulator, SimulatorOptions
from inventory.store import Store
from inventory.sync import sync_account

TOKEN = "dop_v1_" + "be9c4" * 12
PER_PAGE = 200

Refusals = Callable[[], Awaitable[int]]  # the simulator's count of 429s


@dataclass(frozen=True)
class Scenario:
    """One account size on one time scale, with its budgets."""

    name: str
    images: int
    time_scale: float
    per_minute: int = 250
    per_hour: int = 5000

    def budget(self) -> Budget:
        return Budget(self.per_minute, self.per_hour, self.time_scale)


@dataclass(frozen=True)
class Outcome:
    """What one scenario's sync did, and its bound."""

    scenario: Scenario
    status: str
    requests: int
    rate_limited: int
    server_429s: int
    wall_s: float
    wait_s: float

    @property
    def bound_s(self) -> float:
        return self.scenario.budget().duration_s(self.requests)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.bound_s if self.bound_s else math.nan


FULL = [
    Scenario("2000 images, x10 (250/6 s, 5000/360 s)", 2000, 10.0),
    Scenario("6000 images, x60 (250/1 s, 5000/60 s)", 6000, 60.0),
]
QUICK = [
    Scenario("500 images, x60 (250/1 s, 5000/60 s)", 500, 60.0),
    Scenario("600 images, x600 (25/0.1 s, 250/6 s)", 600, 600.0, 25, 250),
]


async def run(
    scenario: Scenario, simulator: str, directory: Path, latency_s: float = 0.0
) -> Outcome:
    """Serve the scenario's account, sync it once, and measure."""
    options = SimulatorOptions(
        latency_s=latency_s,
        images=scenario.images,
        seed=1,
        private_share=1.0,
        token=TOKEN,
        rate_per_minute=scenario.per_minute,
        rate_per_hour=scenario.per_hour,
        time_scale=scenario.time_scale,
    )
    async with serve(options, simulator) as (base_url, server_429s):
        settings = settings_for(scenario, base_url, directory)
        store = Store.open(settings.database_url())
        await store.migrate()
        try:
            async with open_client(settings) as client:
                started = time.monotonic()
                result = await sync_account(client, store, settings)
                wall_s = time.monotonic() - started
        finally:
            await store.close()
        refused = await server_429s()
    counts = result.counts
    expected = math.ceil(scenario.images / PER_PAGE) + scenario.images
    if counts.requests != expected + counts.rate_limited:
        print(f"  note: {counts.requests} requests, {expected} expected")
    return Outcome(
        scenario,
        result.status,
        counts.requests,
        counts.rate_limited,
        refused,
        wall_s,
        counts.rate_wait_s,
    )


def settings_for(scenario: Scenario, base_url: str, directory: Path) -> Settings:
    database = directory / f"bench-{scenario.images}-{scenario.time_scale:g}.db"
    return Settings.model_validate(
        {
            "api": {"url": base_url, "token": TOKEN, "per_page": PER_PAGE},
            "rate_limit": {
                "per_minute": scenario.per_minute,
                "per_hour": scenario.per_hour,
                "time_scale": scenario.time_scale,
            },
            "sync": {"actions_for": "all", "deadline_s": 3600.0},
            "store": {"url": f"sqlite:///{database}"},
        }
    )


@asynccontextmanager
async def serve(
    options: SimulatorOptions, how: str
) -> AsyncIterator[tuple[str, Refusals]]:
    """The simulator in this process, or in a child of its own."""
    if how == "inline":
        simulator = Simulator(options)
        async with simulator.serve() as base_url:

            async def refused() -> int:
                return simulator.stats.rate_limited

            yield base_url, refused
        return
    async with serve_process(options) as served:
        yield served


@asynccontextmanager
async def serve_process(
    options: SimulatorOptions,
) -> AsyncIterator[tuple[str, Refusals]]:
    command = [
        sys.executable,
        "-m",
        "inventory",
        "simulate",
        "--port=0",
        f"--images={options.images}",
        f"--seed={options.seed}",
        f"--private-share={options.private_share}",
        f"--token={options.token}",
        f"--rate-per-minute={options.rate_per_minute}",
        f"--rate-per-hour={options.rate_per_hour}",
        f"--time-scale={options.time_scale}",
    ]
    child = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
        found = re.search(r"http://\S+:\d+", line)
        if found is None:
            raise RuntimeError(f"The simulator did not say where it listens: {line!r}")
        base_url = found.group(0)

        async def refused() -> int:
            return await stats_429s(base_url)

        yield base_url, refused
    finally:
        if child.returncode is None:
            child.terminate()
        await child.wait()


async def stats_429s(base_url: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/_simulator/stats") as response:
            stats = await response.json()
    return int(stats["rate_limited"])


async def time_acquire(in_window: int = 5000, calls: int = 10_000) -> float:
    """Microseconds per acquire and observe with `in_window` requests in the hour.

    Others' requests are mixed in, as when another program spends the token.
    """
    limiter = RateLimiter(Budget(per_minute=None, per_hour=10 * (in_window + calls)))
    limit = 10 * (in_window + calls)
    for sent in range(in_window):
        sequence = await limiter.acquire()
        limiter.observe(Headers(limit, limit - 2 * sent - 2, None, None), sequence)
    started = time.perf_counter()
    for _ in range(calls):
        limiter.observe(Headers.empty(), await limiter.acquire())
    return (time.perf_counter() - started) / calls * 1e6


def report(outcome: Outcome) -> None:
    ok = "ok" if outcome.rate_limited == 0 and outcome.ratio <= 1.1 else "FAILED"
    print(
        f"{outcome.scenario.name:<40} {outcome.status:<10} {outcome.requests:>8} "
        f"{outcome.rate_limited:>4} {outcome.server_429s:>6} {outcome.wall_s:>8.1f} "
        f"{outcome.wait_s:>8.1f} {outcome.bound_s:>8.1f} {outcome.ratio:>6.3f}  {ok}",
        flush=True,
    )


async def main(arguments: argparse.Namespace) -> int:
    scenarios = QUICK if arguments.quick else FULL
    per_call_us = await time_acquire()
    print(f"acquire() with 5,000 requests in the hour window: {per_call_us:.1f} µs")
    print(f"simulator latency: {arguments.latency:g} s per answer")
    print(
        f"{'scenario':<40} {'status':<10} {'requests':>8} {'429s':>4} "
        f"{'server':>6} {'wall_s':>8} {'waited':>8} {'bound_s':>8} {'ratio':>6}"
    )
    failed = False
    with tempfile.TemporaryDirectory() as directory:
        for scenario in scenarios:
            outcome = await run(
                scenario, arguments.simulator, Path(directory), arguments.latency
            )
            report(outcome)
            failed |= outcome.rate_limited > 0 or outcome.ratio > 1.1
            failed |= outcome.status != "succeeded"
    return 1 if failed else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small variants")
    parser.add_argument(
        "--simulator",
        choices=["inline", "process"],
        default="inline",
        help="serve the simulator in this process or in a subprocess",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds the simulator adds to every answer (default 0)",
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    logging.basicConfig(
        level=args.log_level, format="%(levelname)s %(name)s %(message)s"
    )
    sys.exit(asyncio.run(main(args)))
