"""The simulator as one object: its account, its API app and a local server.

`Simulator` builds the account (generated or loaded), serves it, applies
churn on demand or on a timer, and exposes the data as the API would list it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from inventory.simulator.account import Account, snapshot
from inventory.simulator.app import Api
from inventory.simulator.churn import ChurnReport, churn_account
from inventory.simulator.generate import generate_account
from inventory.simulator.loader import load_account
from inventory.simulator.options import SimulatorOptions
from inventory.simulator.stats import SimulatorStats

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 1.0


class Simulator:
    """A local DigitalOcean API over one simulated account."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self.stats = SimulatorStats()
        self.account = _build_account(self.options)
        self._api = Api(self.options, self.account, self.stats)
        self._churn_steps = 0
        self.app: web.Application = self._api.app
        self.app.router.add_get("/_simulator/health", self._health)
        self.app.router.add_get("/_simulator/stats", self._stats)
        self.app.router.add_post("/_simulator/churn", self._churn)
        if self.options.churn_interval_s is not None:
            self.app.cleanup_ctx.append(self._churn_timer)

    def images(self) -> list[dict[str, Any]]:
        """The current images exactly as `GET /v2/images` lists them."""
        self._api.settle()
        return snapshot(self.account.listing_all())

    def actions_for(self, image_id: int) -> list[dict[str, Any]]:
        """An image's current actions, in the order served (KeyError if unknown)."""
        self._api.settle()
        return snapshot(self.account.actions_of(image_id))

    def all_actions(self) -> list[dict[str, Any]]:
        """The account-wide feed, in the order `GET /v2/actions` serves it."""
        self._api.settle()
        return snapshot(self.account.feed(self.options.actions_order == "newest"))

    def churn(self) -> ChurnReport:
        """Apply the next deterministic churn step."""
        self._churn_steps += 1
        rng = random.Random(f"{self.options.seed}/churn/{self._churn_steps}")
        report = churn_account(self.account, rng, self.options.action_error_share)
        self.stats.churn_steps += 1
        log.info(
            "Churn step %d: images_added=%d images_removed=%d images_updated=%d "
            "actions_added=%d actions_finished=%d",
            self._churn_steps,
            report.images_added,
            report.images_removed,
            report.images_updated,
            report.actions_added,
            report.actions_finished,
        )
        return report

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on `host`:`port` (0 picks a free port); yields the base URL."""
        server_log = logging.getLogger("aiohttp.server")
        if not any(isinstance(f, _MalformedRequests) for f in server_log.filters):
            server_log.addFilter(_MalformedRequests())
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0][1]
            shown = f"[{host}]" if ":" in host else host
            log.info("Simulator listening on %s:%s", shown, bound)
            yield f"http://{shown}:{bound}"
        finally:
            await runner.cleanup()

    async def _churn_timer(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._churn_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _churn_forever(self) -> None:
        interval_s = self.options.churn_interval_s or 1.0
        while True:
            await asyncio.sleep(interval_s)
            self.churn()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "images": len(self.account.images)})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _churn(self, request: web.Request) -> web.Response:
        report = self.churn()
        return web.json_response(report.__dict__)


def _build_account(options: SimulatorOptions) -> Account:
    if options.from_dir is not None:
        return load_account(Path(options.from_dir))
    return generate_account(
        options.images, options.seed, options.actions_per_image, options.private_share
    )


class _MalformedRequests(logging.Filter):
    """A request aiohttp cannot parse (a header over 8 KiB) as one WARNING
    line, not a traceback quoting the start of the header: an Authorization
    header's start is the token's."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            record.msg = "Refused a request it could not read: HTTP %d, %s"
            record.args = (exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
