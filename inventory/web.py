"""The daemon's HTTP endpoints: /healthz, /readyz and /metrics, served by aiohttp.

They run in the daemon's own event loop and ask a Probe (the Daemon) for
answers, so this module knows nothing of scheduling or syncing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from inventory.errors import ConfigError

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Check:
    """One probe's answer: whether all is well, and why, for people."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Probe(Protocol):
    """What the endpoints ask."""

    def health(self) -> Check: ...

    async def readiness(self) -> Check: ...

    def exposition(self) -> bytes: ...


def build_app(probe: Probe) -> web.Application:
    """The three routes over one Probe."""

    async def healthz(request: web.Request) -> web.Response:
        return _json(probe.health())

    async def readyz(request: web.Request) -> web.Response:
        return _json(await probe.readiness())

    async def metrics(request: web.Request) -> web.Response:
        body = probe.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def _json(check: Check) -> web.Response:
    return web.json_response(check.detail, status=200 if check.ok else 503)


class Endpoints:
    """The endpoints' server: `start()` binds and returns its URL, `stop()` ends."""

    def __init__(self, probe: Probe) -> None:
        self._app = build_app(probe)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> str:
        """Listen on host:port (0 picks a free port); return the base URL."""
        runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"Cannot serve the endpoints on {host}:{port} ({exc.strerror}); "
                "change daemon.http_host or daemon.http_port (INVENTORY_HTTP_HOST, "
                "INVENTORY_HTTP_PORT)."
            ) from None
        self._runner = runner
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}"
        logger.info("Serving /healthz, /readyz and /metrics on %s", url)
        return url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
