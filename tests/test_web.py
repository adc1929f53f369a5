"""The endpoints: status codes and bodies from a probe, served by aiohttp."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST

from inventory.errors import ConfigError
from inventory.web import Check, Endpoints, build_app

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


class FakeProbe:
    """Answers whatever the test sets."""

    def __init__(self) -> None:
        self.alive = Check(True, {"status": "ok"})
        self.ready = Check(False, {"status": "no run has succeeded yet"})
        self.metrics = b"# HELP inventory_up Up.\n# TYPE inventory_up gauge\n"

    def health(self) -> Check:
        return self.alive

    async def readiness(self) -> Check:
        return self.ready

    def exposition(self) -> bytes:
        return self.metrics


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
async def client(probe: FakeProbe) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(probe))) as test_client:
        yield test_client


async def test_healthz_answers_200_with_the_probes_detail(client: Client) -> None:
    response = await client.get("/healthz")

    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_healthz_answers_503_when_the_probe_says_dead(
    client: Client, probe: FakeProbe
) -> None:
    probe.alive = Check(False, {"status": "scheduler stopped"})

    response = await client.get("/healthz")

    assert (response.status, await response.json()) == (
        503,
        {"status": "scheduler stopped"},
    )


async def test_readyz_follows_the_readiness_probe(
    client: Client, probe: FakeProbe
) -> None:
    before = await client.get("/readyz")
    probe.ready = Check(True, {"status": "ready", "age_s": 1.5})
    after = await client.get("/readyz")

    assert (before.status, await before.json()) == (
        503,
        {"status": "no run has succeeded yet"},
    )
    assert (after.status, await after.json()) == (
        200,
        {"status": "ready", "age_s": 1.5},
    )


async def test_metrics_serve_the_exposition_as_prometheus_text(
    client: Client, probe: FakeProbe
) -> None:
    response = await client.get("/metrics")

    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert await response.read() == probe.metrics


async def test_unknown_paths_are_404(client: Client) -> None:
    response = await client.get("/")

    assert response.status == 404


async def test_endpoints_bind_a_free_port_and_stop(probe: FakeProbe) -> None:
    endpoints = Endpoints(probe)
    url = await endpoints.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as response:
                status = response.status
    finally:
        await endpoints.stop()

    assert url.startswith("http://127.0.0.1:")
    assert status == 200


async def test_a_port_in_use_is_a_configuration_error_naming_the_settings(
    probe: FakeProbe,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ConfigError, match=r"daemon\.http_port"):
            await Endpoints(probe).start("127.0.0.1", port)
