"""A scripted local HTTP server standing in for DigitalOcean in narrow tests.

aioresponses cannot build responses on aiohttp 3.14 (it lacks `stream_writer`;
pnuckowski/aioresponses#289), so narrow cases use a real local server instead:
each GET is answered by the next scripted reply for its path and query.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    payload: Any = None
    body: str | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay_s: float = 0.0


def key(target: str) -> str:
    """A request's identity: path without trailing slash, sorted query."""
    parts = urlsplit(target)
    query = urlencode(sorted(parse_qsl(parts.query)))
    return f"{parts.path.rstrip('/')}?{query}"


class FakeAPI:
    """Scripted replies by path and query; every request is recorded."""

    def __init__(self) -> None:
        self.replies: dict[str, deque[Reply]] = defaultdict(deque)
        self.sticky: dict[str, Reply] = {}
        self.requests: list[web.Request] = []
        self.url = ""

    def get(self, target: str, *, repeat: bool = False, **reply: Any) -> None:
        """Answer the next GET of `target` (path?query) with this reply."""
        if repeat:
            self.sticky[key(target)] = Reply(**reply)
        else:
            self.replies[key(target)].append(Reply(**reply))

    def count(self, target: str) -> int:
        return sum(1 for r in self.requests if key(str(r.rel_url)) == key(target))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        wanted = key(str(request.rel_url))
        queue = self.replies.get(wanted)
        reply = queue.popleft() if queue else self.sticky.get(wanted)
        if reply is None:
            return web.json_response(
                {"id": "not_found", "message": f"no reply scripted for {wanted}"},
                status=404,
            )
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        text = reply.body if reply.body is not None else json.dumps(reply.payload)
        return web.Response(
            status=reply.status,
            text=text,
            content_type=reply.content_type,
            headers=reply.headers,
        )


@asynccontextmanager
async def serve_fake_api() -> AsyncIterator[FakeAPI]:
    fake = FakeAPI()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
