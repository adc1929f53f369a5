"""The DigitalOcean client: paging, retries, errors, and the token's safety."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inventory.client import DigitalOceanClient, open_client, proxy_for
from inventory.errors import (
    APIError,
    AuthError,
    IncompleteListingError,
    NotFoundError,
)

from conftest import TOKEN, make_settings
from fakeapi import FakeAPI, serve_fake_api

FIRST = "/v2/images?per_page=200"


def page(ids: list[int], links: Any = None, total: int | None = None) -> dict:
    body: dict[str, Any] = {"images": [{"id": i} for i in ids]}
    if links is not None:
        body["links"] = links
    if total is not None:
        body["meta"] = {"total": total}
    return body


def next_link(api: FakeAPI, target: str) -> dict:
    return {"pages": {"next": api.url + target}}


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with serve_fake_api() as fake:
        yield fake


@pytest.fixture
async def client(api: FakeAPI) -> AsyncIterator[DigitalOceanClient]:
    settings = make_settings(api.url, api={"max_retries": 2, "read_timeout_s": 0.5})
    async with open_client(settings) as opened:
        yield opened


async def listed(client: DigitalOceanClient, **filters: str) -> list[int]:
    ids = []
    async for found in client.fetch_image_pages(filters):
        ids.extend(item["id"] for item in found.items)
    return ids


async def test_three_pages_are_walked_by_their_next_links(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    second, third = "/v2/images?page=2&per_page=200", "/v2/images?page=3&per_page=200"
    last = api.url + third
    api.get(
        FIRST, payload=page([1, 2], {"pages": {"next": api.url + second, "last": last}})
    )
    api.get(
        second,
        payload=page(
            [3, 4], {"pages": {"first": "x", "prev": "x", "next": last, "last": last}}
        ),
    )
    api.get(third, payload=page([5], {"pages": {"first": "x", "prev": "x"}}, total=5))

    assert await listed(client) == [1, 2, 3, 4, 5]
    assert client.requests == 3


@pytest.mark.parametrize(
    "body",
    [
        page([1], {"pages": {}}, total=1),
        page([1], {}, total=1),
        page([1], None, total=1),
        page([1]),
    ],
    ids=["empty-pages", "empty-links", "no-links", "no-links-no-meta"],
)
async def test_each_single_page_shape_ends_the_listing(
    client: DigitalOceanClient, api: FakeAPI, body: dict
) -> None:
    api.get(FIRST, payload=body)
    assert await listed(client) == [1]


async def test_a_short_page_with_a_next_link_is_not_the_end(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    second = "/v2/images?page=2&per_page=200"
    api.get(FIRST, payload=page([1], next_link(api, second)))
    api.get(second, payload=page([2]))
    assert await listed(client) == [1, 2]


async def test_a_next_link_that_repeats_a_page_ends_the_listing_as_incomplete(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    second = "/v2/images?page=2&per_page=200"
    api.get(FIRST, payload=page([1], next_link(api, second)))
    api.get(second, payload=page([2], next_link(api, "/v2/images?per_page=200&page=2")))
    with pytest.raises(IncompleteListingError, match="links back to a page"):
        await listed(client)


async def test_filters_missing_from_a_next_link_are_added_back(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(
        "/v2/images?per_page=200&private=true&tag_name=prod",
        payload=page([1], {"pages": {"next": f"{api.url}/v2/images/?page=2"}}),
    )
    api.get(
        "/v2/images?page=2&per_page=200&private=true&tag_name=prod", payload=page([2])
    )
    assert await listed(client, private="true", tag_name="prod") == [1, 2]


async def test_a_next_link_to_another_host_is_fetched_from_ours(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    """The token goes only to the configured host, whatever a link says."""
    evil = {"pages": {"next": "https://evil.example/v2/images?page=2"}}
    api.get(FIRST, payload=page([1], evil))
    api.get("/v2/images?page=2&per_page=200", payload=page([2]))
    assert await listed(client) == [1, 2]


async def test_a_base_url_with_a_path_keeps_it_once_in_next_links(
    api: FakeAPI,
) -> None:
    """A gateway at /do: the link already carries /do, it must not double."""
    settings = make_settings(f"{api.url}/do")
    api.get(
        "/do/v2/images?per_page=200",
        payload=page([1], {"pages": {"next": f"{api.url}/do/v2/images?page=2"}}),
    )
    api.get("/do/v2/images?page=2&per_page=200", payload=page([2]))
    async with open_client(settings) as client:
        assert await listed(client) == [1, 2]


async def test_the_token_is_sent_as_a_bearer_header(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(FIRST, payload=page([1]))
    await listed(client)
    assert api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(client)


async def test_image_actions_are_walked_to_their_last_page(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    base = "/v2/images/7/actions"
    api.get(
        f"{base}?per_page=200",
        payload={
            "actions": [{"id": 1}],
            "meta": {"total": 2},
            "links": next_link(api, f"{base}?page=2&per_page=200"),
        },
    )
    api.get(f"{base}?page=2&per_page=200", payload={"actions": [{"id": 2}]})
    assert await client.fetch_image_actions(7) == [{"id": 1}, {"id": 2}]


async def test_a_5xx_then_a_200_is_retried_whatever_the_error_body(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(
        FIRST,
        status=500,
        payload={"id": "server_error", "message": "Unexpected server-side error"},
    )
    api.get(
        FIRST,
        status=502,
        body="<html><body>Bad gateway</body></html>",
        content_type="text/html",
    )
    api.get(FIRST, payload=page([1]))
    assert await listed(client) == [1]
    assert client.requests == 3


async def test_a_dropped_connection_and_a_timeout_are_retried(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(FIRST, drop=True)
    api.get(FIRST, payload=page([0]), delay_s=2.0)
    api.get(FIRST, payload=page([1]))
    assert await listed(client) == [1]
    # aiohttp itself may retry a request whose connection was dropped once.
    assert client.responses[("/v2/images", "error")] >= 1
    assert client.responses[("/v2/images", 200)] == 1


async def test_retries_end_with_a_message_naming_the_request(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    for _ in range(3):
        api.get(FIRST, status=503, body="", content_type="text/plain")
    with pytest.raises(
        APIError,
        match=r"/v2/images\?per_page=200 answered HTTP 503: "
        r"an empty body",
    ):
        await listed(client)
    assert client.requests == 3


async def test_a_429_with_retry_after_waits_then_carries_on(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(
        FIRST,
        status=429,
        headers={"Retry-After": "0", "RateLimit-Remaining": "0"},
        payload={"id": "too_many_requests", "message": "API rate limit exceeded."},
    )
    api.get(FIRST, payload=page([1]))
    assert await listed(client) == [1]
    assert client.limiter.rate_limited == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_a_rejected_token_ends_at_once_saying_what_to_check(
    client: DigitalOceanClient, api: FakeAPI, status: int
) -> None:
    api.get(
        FIRST,
        status=status,
        payload={"id": "unauthorized", "message": "Unable to authenticate you."},
    )
    with pytest.raises(AuthError, match="lacks the image:read scope") as caught:
        await listed(client)
    assert client.requests == 1
    assert TOKEN not in str(caught.value)


async def test_a_missing_image_is_not_found(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(
        "/v2/images/9/actions?per_page=200",
        status=404,
        payload={
            "id": "not_found",
            "message": "The resource you requested could not be found.",
        },
    )
    with pytest.raises(NotFoundError):
        await client.fetch_image_actions(9)


async def test_a_body_without_the_expected_list_is_an_error(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(FIRST, payload={"image": {"id": 1}})
    with pytest.raises(APIError, match="without a 'images' list"):
        await listed(client)


async def test_a_200_that_is_not_json_is_retried_then_reported(
    client: DigitalOceanClient, api: FakeAPI
) -> None:
    api.get(
        FIRST, body="<html>maintenance</html>", content_type="text/html", repeat=True
    )
    with pytest.raises(APIError, match="body that is not JSON"):
        await listed(client)
    assert client.requests == 3


@pytest.mark.parametrize(
    ("environ", "url", "expected"),
    [
        ({}, "https://api.digitalocean.com", None),
        (
            {"HTTPS_PROXY": "http://proxy:3128"},
            "https://api.digitalocean.com",
            "http://proxy:3128",
        ),
        (
            {"https_proxy": "http://proxy:3128", "NO_PROXY": ".digitalocean.com"},
            "https://api.digitalocean.com",
            None,
        ),
        (
            {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,127.0.0.1"},
            "http://127.0.0.1:8080",
            None,
        ),
        # A proxy cannot reach this machine's loopback: a local simulator is
        # asked directly, NO_PROXY or not.
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://127.0.0.1:8080", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://localhost:8080", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://[::1]:8080", None),
        (
            {"HTTP_PROXY": "http://proxy:3128"},
            "http://10.0.0.5:8080",
            "http://proxy:3128",
        ),
    ],
)
def test_the_proxy_comes_from_the_usual_environment_variables(
    monkeypatch: pytest.MonkeyPatch, environ: dict, url: str, expected: str | None
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


async def test_a_token_read_when_a_run_opens_its_client_is_redacted_from_logs(
    api: FakeAPI, tmp_path: Path
) -> None:
    """A token file rotated under a running daemon: the new token is a secret too."""
    import logging

    from inventory.logs import RedactSecrets

    redact = RedactSecrets([])  # set up before the token was known
    rotated = "dop_v1_" + "0a1b2c" * 10
    (tmp_path / "token").write_text(rotated)
    token_file = str(tmp_path / "token")
    settings = make_settings(api.url, api={"token": None, "token_file": token_file})
    async with open_client(settings):
        pass
    record = logging.LogRecord("x", logging.WARNING, "", 0, "sent %s", (rotated,), None)

    redact.filter(record)

    assert record.getMessage() == "sent ***"


@pytest.mark.parametrize(
    "echoed",
    [
        pytest.param(TOKEN, id="whole"),
        pytest.param(TOKEN[:40], id="cut-short"),
        pytest.param(TOKEN.upper(), id="upper-case"),
        pytest.param(f"Bearer {TOKEN[:12]}", id="its-first-twelve"),
        pytest.param(TOKEN[7:], id="without-its-prefix"),
        pytest.param(TOKEN[10:30], id="a-middle-slice"),
        pytest.param(f"secret={TOKEN[-12:].upper()}", id="its-last-twelve-re-cased"),
    ],
)
def test_a_token_echoed_whole_cut_short_or_re_cased_is_masked(echoed: str) -> None:
    import logging

    from inventory.logs import RedactSecrets, keep_secret, redact

    keep_secret(TOKEN)
    text = f"you sent {echoed}. Check it."
    record = logging.LogRecord("x", logging.WARNING, "", 0, "%s", (text,), None)

    RedactSecrets([TOKEN]).filter(record)

    for masked in (record.getMessage(), redact(text)):
        assert masked.endswith("***. Check it.")
        for start in range(len(TOKEN) - 11):
            assert TOKEN[start : start + 12].lower() not in masked.lower()


@pytest.mark.parametrize("start", range(len(TOKEN) - 11))
def test_any_twelve_characters_of_the_token_in_an_answer_are_scrubbed(
    start: int,
) -> None:
    """The quick scan for halves of a window misses no slice of the token."""
    import json

    from inventory.logs import keep_secret, scrubbed

    keep_secret(TOKEN)
    echoed = TOKEN[start : start + 12].upper()
    data = {"images": [{"name": f"x {echoed} y", "tags": [echoed], "id": 1}]}

    assert scrubbed(json.dumps(data).encode(), data) == {
        "images": [{"name": "x *** y", "tags": ["***"], "id": 1}]
    }


def test_text_merely_like_the_token_is_left_alone() -> None:
    from inventory.logs import keep_secret, redact

    keep_secret(TOKEN)

    assert redact("dop_v1_ and per_page=200") == "dop_v1_ and per_page=200"
    eleven = TOKEN[20:31]  # shorter than a window: no proof of the token
    assert redact(f"id {eleven} and more") == f"id {eleven} and more"
