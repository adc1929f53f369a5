"""The DigitalOcean API simulator: shapes, paging, auth, budgets, data and faults."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from yarl import URL

from inventory.records import parse_timestamp
from inventory.simulator import Simulator, SimulatorOptions
from inventory.simulator.budget import RateBudget
from inventory.simulator.command import _pacing_hint, simulate
from inventory.simulator.faults import FaultPlan

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "do-api-examples"
if not EXAMPLES.is_dir():
    EXAMPLES = Path(__file__).resolve().parent / "data" / "do-api-examples"
AUTH = {"Authorization": "Bearer dop_v1_test"}
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
NOT_FOUND = {
    "id": "not_found",
    "message": "The resource you requested could not be found.",
}
UNAUTHORIZED = {"id": "unauthorized", "message": "Unable to authenticate you."}
TOO_MANY = {"id": "too_many_requests", "message": "API rate limit exceeded."}
SERVER_ERROR = {"id": "server_error", "message": "Unexpected server-side error"}

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


def options(**overrides: Any) -> SimulatorOptions:
    """Small, quick defaults for tests; rate limits on unless overridden."""
    values: dict[str, Any] = {"images": 40, "seed": 7}
    values.update(overrides)
    return SimulatorOptions(**values)


@pytest.fixture
def sim() -> Simulator:
    return Simulator(options())


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[Client]:
    async with TestClient(TestServer(sim.app)) as test_client:
        yield test_client


async def client_for(simulator: Simulator) -> Client:
    test_client: Client = TestClient(TestServer(simulator.app))
    await test_client.start_server()
    return test_client


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


def url(client: Client, path_qs: str) -> str:
    return str(client.make_url(path_qs))


# Paging.


async def test_first_page_links_hold_only_next_and_last(client: Client) -> None:
    body = await get_json(client, "/v2/images?per_page=10")

    assert body["links"]["pages"] == {
        "next": url(client, "/v2/images?page=2&per_page=10"),
        "last": url(client, "/v2/images?page=4&per_page=10"),
    }
    assert body["meta"] == {"total": 40}
    assert len(body["images"]) == 10


async def test_middle_page_links_hold_all_four_pages(client: Client) -> None:
    body = await get_json(client, "/v2/images?page=2&per_page=10")

    assert body["links"]["pages"] == {
        "first": url(client, "/v2/images?page=1&per_page=10"),
        "prev": url(client, "/v2/images?page=1&per_page=10"),
        "next": url(client, "/v2/images?page=3&per_page=10"),
        "last": url(client, "/v2/images?page=4&per_page=10"),
    }


async def test_last_page_links_hold_only_first_and_prev(client: Client) -> None:
    body = await get_json(client, "/v2/images?page=4&per_page=10")

    assert body["links"]["pages"] == {
        "first": url(client, "/v2/images?page=1&per_page=10"),
        "prev": url(client, "/v2/images?page=3&per_page=10"),
    }


async def test_a_single_page_has_an_empty_pages_object(client: Client) -> None:
    body = await get_json(client, "/v2/images?per_page=200")

    assert body["links"] == {"pages": {}}
    assert len(body["images"]) == 40


async def test_page_links_carry_the_filters_and_per_page(client: Client) -> None:
    body = await get_json(client, "/v2/images?private=true&per_page=5&tag_name=")
    pages = body["links"]["pages"]

    assert pages["next"] == url(
        client, "/v2/images?page=2&per_page=5&private=true&tag_name="
    )
    assert pages["next"].startswith("http://127.0.0.1:")


async def test_a_page_beyond_the_last_lists_no_images(client: Client) -> None:
    body = await get_json(client, "/v2/images?page=9&per_page=10")

    assert body["images"] == []
    assert body["meta"] == {"total": 40}
    assert "next" not in body["links"]["pages"]


async def test_walking_next_links_lists_every_image_once(
    sim: Simulator, client: Client
) -> None:
    seen: list[int] = []
    path: str | None = "/v2/images?per_page=7"
    while path is not None:
        body = await get_json(client, path)
        seen.extend(image["id"] for image in body["images"])
        next_url = body["links"]["pages"].get("next")
        path = URL(next_url).path_qs if next_url else None

    assert seen == [image["id"] for image in sim.images()]


async def test_per_page_defaults_to_20_and_is_capped_at_200() -> None:
    simulator = Simulator(options(images=450))
    client = await client_for(simulator)
    try:
        default = await get_json(client, "/v2/images")
        capped = await get_json(client, "/v2/images?per_page=500")
    finally:
        await client.close()

    assert len(default["images"]) == 20
    assert len(capped["images"]) == 200
    assert capped["links"]["pages"]["next"].endswith("page=2&per_page=200")


# Filters.


async def test_type_filter_lists_public_images_of_that_kind(
    sim: Simulator, client: Client
) -> None:
    distributions = await get_json(client, "/v2/images?type=distribution&per_page=200")
    applications = await get_json(client, "/v2/images?type=application&per_page=200")

    dist_slugs = {image["slug"] for image in distributions["images"]}
    app_slugs = {image["slug"] for image in applications["images"]}
    public = {image["slug"] for image in sim.images() if image.get("public")}
    assert dist_slugs | app_slugs == public
    assert dist_slugs and app_slugs and not dist_slugs & app_slugs
    assert all(slug.endswith("-x64") for slug in dist_slugs)
    assert all(image["public"] for image in distributions["images"])


async def test_private_filter_lists_only_the_users_own_images(
    sim: Simulator, client: Client
) -> None:
    body = await get_json(client, "/v2/images?private=true&per_page=200")

    expected = [image for image in sim.images() if image.get("public") is not True]
    assert body["images"] == expected
    assert body["meta"]["total"] == len(expected) < 40


async def test_tag_name_filter_lists_only_tagged_images(
    sim: Simulator, client: Client
) -> None:
    tags = [tag for image in sim.images() for tag in image.get("tags") or []]
    tag = max(set(tags), key=tags.count)

    body = await get_json(client, f"/v2/images?tag_name={tag}&per_page=200")

    assert body["images"]
    assert all(tag in image["tags"] for image in body["images"])
    assert body["meta"]["total"] == tags.count(tag)


# Auth.


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer wrong"},
    ],
    ids=["missing", "empty", "not-bearer", "wrong-token"],
)
async def test_a_missing_or_wrong_token_gets_digitaloceans_401(
    headers: dict[str, str],
) -> None:
    client = await client_for(Simulator(options(token="right")))
    try:
        response = await client.get("/v2/images", headers=headers)
        body = await response.json()
    finally:
        await client.close()

    assert response.status == 401
    assert body == UNAUTHORIZED
    assert all(name in response.headers for name in RATE_HEADERS)


async def test_the_configured_token_is_accepted() -> None:
    client = await client_for(Simulator(options(token="right")))
    try:
        response = await client.get(
            "/v2/images", headers={"Authorization": "Bearer right"}
        )
    finally:
        await client.close()

    assert response.status == 200


async def test_any_non_empty_token_is_accepted_when_none_is_configured(
    client: Client,
) -> None:
    response = await client.get("/v2/images", headers={"Authorization": "bearer x"})

    assert response.status == 200


def test_the_token_never_appears_in_the_options_repr() -> None:
    assert "s3cret" not in repr(options(token="s3cret"))


# Image actions.


def private_image_with_actions(simulator: Simulator) -> dict[str, Any]:
    return next(
        image
        for image in simulator.images()
        if image.get("public") is False and len(simulator.actions_for(image["id"])) > 1
    )


async def test_unknown_image_actions_get_digitaloceans_404(client: Client) -> None:
    assert await get_json(client, "/v2/images/123/actions", 404) == NOT_FOUND
    assert await get_json(client, "/v2/images/123/actions/5", 404) == NOT_FOUND
    assert await get_json(client, "/v2/nothing-here", 404) == NOT_FOUND


async def test_a_removed_images_actions_get_404_but_stay_in_the_feed(
    sim: Simulator, client: Client
) -> None:
    image = private_image_with_actions(sim)
    action_id = sim.actions_for(image["id"])[0]["id"]
    sim.account.remove_image(image["id"])

    assert await get_json(client, f"/v2/images/{image['id']}/actions", 404) == NOT_FOUND
    body = await get_json(client, f"/v2/actions/{action_id}")
    assert body["action"]["id"] == action_id


async def test_public_images_answer_an_empty_action_list(
    sim: Simulator, client: Client
) -> None:
    public = next(image for image in sim.images() if image.get("public"))

    body = await get_json(client, f"/v2/images/{public['id']}/actions")

    assert body == {"actions": [], "links": {"pages": {}}, "meta": {"total": 0}}


async def test_image_actions_are_served_newest_first_in_pages(
    sim: Simulator, client: Client
) -> None:
    image = private_image_with_actions(sim)
    expected = sim.actions_for(image["id"])

    first = await get_json(client, f"/v2/images/{image['id']}/actions?per_page=1")

    assert first["actions"] == expected[:1]
    assert first["meta"] == {"total": len(expected)}
    assert first["links"]["pages"]["next"] == url(
        client, f"/v2/images/{image['id']}/actions?page=2&per_page=1"
    )
    ids = [action["id"] for action in expected]
    assert ids == sorted(ids, reverse=True)


async def test_one_image_action_is_wrapped_in_an_action_key(
    sim: Simulator, client: Client
) -> None:
    image = private_image_with_actions(sim)
    action = sim.actions_for(image["id"])[0]

    body = await get_json(client, f"/v2/images/{image['id']}/actions/{action['id']}")

    assert body == {"action": action}


async def test_the_account_feed_mixes_image_and_droplet_actions(
    sim: Simulator, client: Client
) -> None:
    body = await get_json(client, "/v2/actions?per_page=200")
    kinds = {action["resource_type"] for action in body["actions"]}
    ids = [action["id"] for action in body["actions"]]

    assert kinds == {"image", "droplet"}
    assert ids == sorted(ids, reverse=True)
    assert body["actions"] == sim.all_actions()[:200]


async def test_the_account_feed_can_be_served_oldest_first() -> None:
    simulator = Simulator(options(actions_order="oldest"))
    client = await client_for(simulator)
    try:
        body = await get_json(client, "/v2/actions?per_page=200")
    finally:
        await client.close()

    ids = [action["id"] for action in body["actions"]]
    assert ids == sorted(ids)


async def test_an_unknown_account_action_gets_404(client: Client) -> None:
    assert await get_json(client, "/v2/actions/1", 404) == NOT_FOUND


# Posting image actions.


def image_of_type(simulator: Simulator, image_type: str) -> dict[str, Any]:
    return next(
        image
        for image in simulator.images()
        if image.get("type") == image_type
        and image.get("public") is False
        and image.get("status") == "available"
    )


async def test_an_action_completes_at_its_start_plus_its_duration() -> None:
    """Not whenever the next request happens to come after its deadline."""
    simulator = Simulator(options(action_duration_s=3600, action_error_share=0.0))
    image = image_of_type(simulator, "backup")
    client = await client_for(simulator)
    try:
        response = await client.post(
            f"/v2/images/{image['id']}/actions", json={"type": "convert"}, headers=AUTH
        )
        started = (await response.json())["action"]
    finally:
        await client.close()

    simulator.account.settle(time.monotonic() + 7200)

    finished = simulator.actions_for(image["id"])[0]
    assert finished["id"] == started["id"]
    took = parse_timestamp(finished["completed_at"]) - parse_timestamp(
        started["started_at"]
    )
    assert abs(took.total_seconds() - 3600) <= 1


async def test_a_transfer_runs_then_completes_and_adds_the_region() -> None:
    simulator = Simulator(options(action_duration_s=0.05, action_error_share=0.0))
    image = image_of_type(simulator, "snapshot")
    region = next(
        slug for slug in ("nyc2", "fra1", "tor1") if slug not in image["regions"]
    )
    client = await client_for(simulator)
    try:
        response = await client.post(
            f"/v2/images/{image['id']}/actions",
            json={"type": "transfer", "region": region},
            headers=AUTH,
        )
        started = (await response.json())["action"]
        await asyncio.sleep(0.1)
        path = f"/v2/images/{image['id']}/actions/{started['id']}"
        finished = (await get_json(client, path))["action"]
    finally:
        await client.close()

    assert response.status == 201
    assert started["status"] == "in-progress"
    assert started["completed_at"] is None
    assert started["region_slug"] == region
    assert started["resource_id"] == image["id"]
    assert finished["status"] == "completed"
    assert finished["completed_at"] is not None
    current = next(item for item in simulator.images() if item["id"] == image["id"])
    assert current["regions"] == [*image["regions"], region]
    assert simulator.actions_for(image["id"])[0] == finished


async def test_a_completed_convert_turns_a_backup_into_a_snapshot() -> None:
    simulator = Simulator(options(action_duration_s=0.0, action_error_share=0.0))
    backup = image_of_type(simulator, "backup")
    client = await client_for(simulator)
    try:
        response = await client.post(
            f"/v2/images/{backup['id']}/actions", json={"type": "convert"}, headers=AUTH
        )
    finally:
        await client.close()

    assert response.status == 201
    current = next(item for item in simulator.images() if item["id"] == backup["id"])
    assert current["type"] == "snapshot"


async def test_an_errored_action_leaves_the_image_alone() -> None:
    simulator = Simulator(options(action_duration_s=0.0, action_error_share=1.0))
    backup = image_of_type(simulator, "backup")
    client = await client_for(simulator)
    try:
        await client.post(
            f"/v2/images/{backup['id']}/actions", json={"type": "convert"}, headers=AUTH
        )
    finally:
        await client.close()

    assert simulator.actions_for(backup["id"])[0]["status"] == "errored"
    current = next(item for item in simulator.images() if item["id"] == backup["id"])
    assert current["type"] == "backup"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 404, "The specified action type is not available."),
        ({"type": "resize"}, 404, "The specified action type is not available."),
        (["convert"], 422, "The request body must be a JSON object."),
        (
            {"type": "transfer"},
            422,
            "You specified an invalid region for Image Transfer.",
        ),
        (
            {"type": "transfer", "region": ["nyc3"]},
            422,
            "You specified an invalid region for Image Transfer.",
        ),
        ({"type": "convert"}, 422, "Only backups can be converted to snapshots."),
    ],
)
async def test_a_bad_action_body_gets_digitaloceans_error(
    sim: Simulator, client: Client, body: object, status: int, message: str
) -> None:
    image = image_of_type(sim, "snapshot")

    response = await client.post(
        f"/v2/images/{image['id']}/actions", json=body, headers=AUTH
    )

    assert response.status == status
    error_id = "not_found" if status == 404 else "unprocessable_entity"
    assert await response.json() == {"id": error_id, "message": message}


async def test_a_transfer_to_a_region_the_image_has_gets_422(
    sim: Simulator, client: Client
) -> None:
    image = image_of_type(sim, "snapshot")
    body = {"type": "transfer", "region": image["regions"][0]}

    response = await client.post(
        f"/v2/images/{image['id']}/actions", json=body, headers=AUTH
    )

    assert response.status == 422
    assert await response.json() == {
        "id": "unprocessable_entity",
        "message": "The image is already available in that region.",
    }


async def test_actions_on_a_public_image_get_404(
    sim: Simulator, client: Client
) -> None:
    public = next(image for image in sim.images() if image.get("public"))

    response = await client.post(
        f"/v2/images/{public['id']}/actions", json={"type": "convert"}, headers=AUTH
    )

    assert response.status == 404
    assert await response.json() == NOT_FOUND


async def test_one_image_is_served_by_id_or_public_slug(
    sim: Simulator, client: Client
) -> None:
    public = next(image for image in sim.images() if image.get("public"))

    by_id = await get_json(client, f"/v2/images/{public['id']}")
    by_slug = await get_json(client, f"/v2/images/{public['slug']}")

    assert by_id == by_slug == {"image": public}
    assert await get_json(client, "/v2/images/no-such-slug", 404) == NOT_FOUND


async def test_a_body_that_is_not_json_gets_422(sim: Simulator, client: Client) -> None:
    image = image_of_type(sim, "snapshot")

    response = await client.post(
        f"/v2/images/{image['id']}/actions", data="{nope", headers=AUTH
    )

    assert response.status == 422
    assert (await response.json())["id"] == "unprocessable_entity"


# Rate limits.


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_budget(
    per_minute: int | None, per_hour: int | None
) -> tuple[RateBudget, FakeClock]:
    clock = FakeClock()
    return RateBudget(per_minute, per_hour, clock=clock, wall=clock), clock


def test_the_minute_budget_sends_retry_after_and_zero_remaining() -> None:
    budget, clock = fake_budget(per_minute=2, per_hour=100)
    budget.take("t")
    clock.now += 10
    second = budget.take("t")
    clock.now += 5
    rejected = budget.take("t")

    assert second.allowed and second.headers["ratelimit-remaining"] == "0"
    assert not rejected.allowed
    assert rejected.exceeded == "minute"
    assert rejected.headers == {
        "ratelimit-limit": "100",
        "ratelimit-remaining": "0",
        "ratelimit-reset": str(1000 + 3600),
        "retry-after": "45",
    }


def test_the_hour_budget_sends_no_retry_after() -> None:
    budget, clock = fake_budget(per_minute=None, per_hour=2)
    budget.take("t")
    clock.now += 100
    budget.take("t")
    rejected = budget.take("t")

    assert rejected.exceeded == "hour"
    assert "retry-after" not in rejected.headers
    assert rejected.headers["ratelimit-remaining"] == "0"


def test_each_request_counts_for_one_full_sliding_window() -> None:
    budget, clock = fake_budget(per_minute=None, per_hour=3)
    for _ in range(3):
        budget.take("t")
        clock.now += 1000

    assert budget.take("t").allowed is False
    clock.now = 1000 + 3600.5
    verdict = budget.take("t")

    assert verdict.allowed
    assert verdict.headers["ratelimit-remaining"] == "0"
    assert verdict.headers["ratelimit-reset"] == str(2000 + 3600)


def test_rejected_requests_do_not_count() -> None:
    budget, clock = fake_budget(per_minute=1, per_hour=None)
    budget.take("t")
    for _ in range(5):
        assert not budget.take("t").allowed
    clock.now += 60.5

    assert budget.take("t").allowed


def test_budgets_are_kept_per_token() -> None:
    budget, _ = fake_budget(per_minute=1, per_hour=None)

    assert budget.take("a").allowed
    assert budget.take("b").allowed
    assert not budget.take("a").allowed


async def test_a_minute_429_carries_retry_after_and_the_error_body() -> None:
    client = await client_for(Simulator(options(rate_per_minute=2)))
    try:
        statuses = [(await client.get("/v2/images", headers=AUTH)).status for _ in "ab"]
        rejected = await client.get("/v2/images", headers=AUTH)
        body = await rejected.json()
    finally:
        await client.close()

    assert statuses == [200, 200]
    assert rejected.status == 429
    assert body == TOO_MANY
    assert 1 <= int(rejected.headers["retry-after"]) <= 60
    assert rejected.headers["ratelimit-remaining"] == "0"
    assert rejected.headers["ratelimit-limit"] == "5000"


async def test_an_hour_429_carries_no_retry_after() -> None:
    simulator = Simulator(options(rate_per_minute=None, rate_per_hour=1))
    client = await client_for(simulator)
    try:
        await client.get("/v2/images", headers=AUTH)
        rejected = await client.get("/v2/images", headers=AUTH)
    finally:
        await client.close()

    assert rejected.status == 429
    assert "retry-after" not in rejected.headers
    assert int(rejected.headers["ratelimit-reset"]) > time.time() + 3500
    assert simulator.stats.rate_limited == 1


async def test_the_budget_comes_back_after_the_scaled_window() -> None:
    """time_scale=120 shrinks the minute to half a second."""
    simulator = Simulator(
        options(rate_per_minute=2, rate_per_hour=None, time_scale=120)
    )
    client = await client_for(simulator)
    try:
        for _ in range(2):
            await client.get("/v2/images", headers=AUTH)
        rejected = await client.get("/v2/images", headers=AUTH)
        await asyncio.sleep(0.6)
        again = await client.get("/v2/images", headers=AUTH)
    finally:
        await client.close()

    assert rejected.status == 429
    assert rejected.headers["retry-after"] == "1"
    assert again.status == 200


async def test_rate_headers_are_on_every_api_response() -> None:
    simulator = Simulator(options(rate_per_minute=5, token="t"))
    client = await client_for(simulator)
    good = {"Authorization": "Bearer t"}
    try:
        responses = [
            await client.get("/v2/images", headers=good),
            await client.get("/v2/images"),
            await client.get("/v2/images/1/actions", headers=good),
            await client.post("/v2/images/1/actions", json={}, headers=good),
            await client.get("/v2/actions", headers=good),
            await client.get("/v2/actions/1", headers=good),
            await client.get("/v2/images", headers=good),
        ]
    finally:
        await client.close()

    statuses = [response.status for response in responses]
    assert statuses == [200, 401, 404, 404, 200, 404, 429]
    for response in responses:
        assert all(response.headers[name].isdigit() for name in RATE_HEADERS)


async def test_rate_headers_stay_when_limits_are_off() -> None:
    simulator = Simulator(options(rate_per_minute=None, rate_per_hour=None))
    client = await client_for(simulator)
    try:
        responses = [await client.get("/v2/images", headers=AUTH) for _ in range(3)]
    finally:
        await client.close()

    for response in responses:
        assert response.status == 200
        assert response.headers["ratelimit-limit"] == "5000"
        assert response.headers["ratelimit-remaining"] == "5000"
        assert int(response.headers["ratelimit-reset"]) > time.time()


# Data.


def test_the_same_seed_gives_the_same_data() -> None:
    first, second = Simulator(options(seed=3)), Simulator(options(seed=3))

    assert first.images() == second.images()
    assert first.all_actions() == second.all_actions()


def test_a_different_seed_gives_different_data() -> None:
    assert Simulator(options(seed=3)).images() != Simulator(options(seed=4)).images()


def test_the_image_count_and_private_share_are_honoured() -> None:
    images = Simulator(options(images=500, private_share=0.6)).images()

    private = [image for image in images if image.get("public") is not True]
    assert len(images) == 500
    assert len(private) == 300


def test_ids_above_two_to_the_31_are_present() -> None:
    simulator = Simulator(options(images=100))

    assert any(image["id"] > 2**31 for image in simulator.images())
    assert all(action["id"] >= 3_100_000_000 for action in simulator.all_actions())


def test_generated_data_carries_digitaloceans_quirks() -> None:
    simulator = Simulator(options(images=1500))
    images = simulator.images()
    actions = simulator.all_actions()
    new_custom = [image for image in images if image.get("status") in ("NEW", "new")]

    assert new_custom and all(image["regions"] == [] for image in new_custom)
    assert not {"slug", "public", "min_disk_size", "size_gigabytes"} & set(
        new_custom[0]
    )
    assert any(len(set(i["regions"])) < len(i["regions"]) for i in images)
    assert any(image.get("size_gigabytes", 0) is None for image in images)
    assert any(image.get("tags", []) is None for image in images)
    assert any("type" not in image for image in images)
    assert any("Rocky Linux" == image["distribution"] for image in images)
    assert {"ubuntu-22-04-x64", "docker-20-04"} <= {
        image.get("slug") for image in images
    }
    assert {action.get("region", "absent") == {} for action in actions} == {True, False}
    assert any(action.get("region", "absent") is None for action in actions)
    assert any("completed_at" not in action for action in actions)
    assert any(action["resource_id"] is None for action in actions)
    assert any("." in action["started_at"] for action in actions)
    statuses = {action.get("status") for action in actions}
    assert statuses == {"in-progress", "completed", "errored"}


def test_a_public_image_carries_a_real_looking_slug() -> None:
    public = [i for i in Simulator(options()).images() if i.get("public")]

    assert public
    assert all(
        image["slug"] and image["type"] in ("snapshot", "base") for image in public
    )


# Loading captured responses.


def test_loading_the_examples_deduplicates_image_ids() -> None:
    simulator = Simulator(options(from_dir=EXAMPLES))
    images = simulator.images()

    ids = [image["id"] for image in images]
    assert ids == [1, 2, 6918990, 7555620, 7555621, 38413969, 63663980]
    assert images[4]["name"] == "An APP image"


def test_loaded_image_actions_join_their_image_and_others_only_the_feed() -> None:
    simulator = Simulator(options(from_dir=EXAMPLES))

    assert [a["id"] for a in simulator.actions_for(7555620)] == [29410565]
    feed = [action["id"] for action in simulator.all_actions()]
    assert feed == [36805527, 36804636, 29410565, 12345]
    with pytest.raises(KeyError):
        simulator.actions_for(7938269)


async def test_loaded_data_is_filtered_and_paged_by_the_simulator() -> None:
    client = await client_for(Simulator(options(from_dir=EXAMPLES)))
    try:
        distributions = await get_json(client, "/v2/images?type=distribution")
        tagged = await get_json(client, "/v2/images?tag_name=simple-image")
        paged = await get_json(client, "/v2/images?per_page=3&page=3")
    finally:
        await client.close()

    assert [i["slug"] for i in distributions["images"]] == [
        "ubuntu-16-04-x64",
        "ubuntu-20-04-x64",
    ]
    assert tagged["meta"] == {"total": 0}
    assert [image["id"] for image in paged["images"]] == [63663980]


def test_a_captured_action_list_says_its_image_when_resource_id_is_null(
    tmp_path: Path,
) -> None:
    """Captures tell their image by their links, else by their path."""
    images = {"images": [{"id": 5, "name": "a"}, {"id": 6, "name": "b"}]}
    (tmp_path / "images.json").write_text(json.dumps(images))
    first = {"id": 3_100_000_001, "status": "completed", "resource_id": None}
    linked = {
        "actions": [first],
        "links": {"pages": {"next": "https://x/v2/images/5/actions?page=2"}},
    }
    (tmp_path / "first.json").write_text(json.dumps(linked))
    (tmp_path / "images" / "6").mkdir(parents=True)
    second = {"id": 3_100_000_002, "status": "completed", "resource_id": None}
    (tmp_path / "images" / "6" / "actions.json").write_text(
        json.dumps({"actions": [second], "links": {}})
    )
    orphan = {"id": 3_100_000_003, "status": "completed", "resource_id": None}
    (tmp_path / "feed.json").write_text(json.dumps({"actions": [orphan]}))

    simulator = Simulator(options(from_dir=tmp_path))

    assert [a["id"] for a in simulator.actions_for(5)] == [3_100_000_001]
    assert [a["id"] for a in simulator.actions_for(6)] == [3_100_000_002]
    assert len(simulator.all_actions()) == 3


def test_files_of_other_shapes_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "text.json").write_text("not json at all")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "headers.json").write_text('{"ratelimit-limit": "5000"}')
    (tmp_path / "image.json").write_text(json.dumps({"image": {"id": 5, "name": "x"}}))

    assert Simulator(options(from_dir=tmp_path)).images() == [{"id": 5, "name": "x"}]


def test_a_directory_without_any_images_is_refused_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Junk, or the wrong directory: not an empty account served silently."""
    (tmp_path / "text.json").write_text("not json at all")
    (tmp_path / "headers.json").write_text('{"ratelimit-limit": "5000"}')

    with pytest.raises(ValueError, match=f"^No \\*.json file under {tmp_path} "):
        Simulator(options(from_dir=tmp_path))
    assert f"Skipping {tmp_path / 'text.json'}, which is not readable JSON" in (
        caplog.text
    )

    result = CliRunner().invoke(simulate, ["--from-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "holds DigitalOcean images" in result.output
    assert "Traceback" not in result.output


def test_json_nested_too_deeply_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "image.json").write_text(json.dumps({"image": {"id": 5}}))

    assert Simulator(options(from_dir=tmp_path)).images() == [{"id": 5}]
    assert "deep.json, which is not readable JSON" in caplog.text


def test_an_empty_listing_is_an_empty_account(tmp_path: Path) -> None:
    (tmp_path / "images.json").write_text('{"images": [], "links": {}}')

    assert Simulator(options(from_dir=tmp_path)).images() == []


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        Simulator(options(from_dir=tmp_path / "nope"))


# Churn.


def test_churn_changes_the_data_deterministically() -> None:
    first, second = Simulator(options()), Simulator(options())
    before = first.images()

    report = first.churn()
    second.churn()

    assert first.images() != before
    assert first.images() == second.images()
    assert first.all_actions() == second.all_actions()
    assert report.images_added >= 1


def test_churn_finishes_running_actions_and_starts_new_ones() -> None:
    simulator = Simulator(options(images=200))
    running = {a["id"] for a in simulator.all_actions() if a["status"] == "in-progress"}
    newest = simulator.all_actions()[0]["id"]

    for _ in range(10):
        simulator.churn()

    after = {action["id"]: action for action in simulator.all_actions()}
    assert any(after[action_id]["status"] != "in-progress" for action_id in running)
    assert any(action_id > newest for action_id in after)


async def test_churn_applies_itself_while_serving() -> None:
    simulator = Simulator(options(churn_interval_s=0.02))
    async with simulator.serve() as base_url:
        await asyncio.sleep(0.15)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base_url}/_simulator/churn") as response:
                report = await response.json()

    assert simulator.stats.churn_steps >= 3
    assert report["images_added"] >= 1


# Faults.


async def test_latency_delays_each_answer() -> None:
    client = await client_for(Simulator(options(latency_s=0.1, jitter_s=0.02)))
    try:
        started = time.monotonic()
        response = await client.get("/v2/images", headers=AUTH)
        elapsed = time.monotonic() - started
    finally:
        await client.close()

    assert response.status == 200
    assert elapsed >= 0.1


def test_jitter_stays_within_its_bound_and_repeats_per_seed() -> None:
    opts = options(latency_s=1.0, jitter_s=0.5, error_rate=0.5, drop_rate=0.2)
    plan_a, plan_b = FaultPlan(opts), FaultPlan(opts)
    run_a = [plan_a.decide("/v2/images") for _ in range(50)]
    run_b = [plan_b.decide("/v2/images") for _ in range(50)]

    assert run_a == run_b
    assert all(1.0 <= fault.delay_s <= 1.5 for fault in run_a)
    assert {fault.error_status for fault in run_a} == {None, 500, 502, 503}


@pytest.mark.parametrize("html_share", [0.0, 1.0])
async def test_the_error_rate_answers_5xx_as_json_or_html(html_share: float) -> None:
    simulator = Simulator(options(error_rate=1.0, html_error_share=html_share))
    client = await client_for(simulator)
    try:
        response = await client.get("/v2/images", headers=AUTH)
        text = await response.text()
    finally:
        await client.close()

    assert response.status in (500, 502, 503)
    assert "ratelimit-remaining" in response.headers
    if html_share:
        assert response.content_type == "text/html"
        assert f"<h1>{response.status} " in text
    else:
        assert json.loads(text) == SERVER_ERROR
    assert simulator.stats.errors_injected == 1


async def test_the_drop_rate_closes_the_connection_without_an_answer() -> None:
    simulator = Simulator(options(drop_rate=1.0))
    client = await client_for(simulator)
    try:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.get("/v2/images", headers=AUTH)
        health = await client.get("/_simulator/health")
    finally:
        await client.close()

    assert simulator.stats.dropped == 1
    assert health.status == 200


async def test_a_stall_hangs_the_answer() -> None:
    simulator = Simulator(options(stall_rate=1.0, stall_s=0.5))
    async with simulator.serve() as base_url:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            timeout = aiohttp.ClientTimeout(total=0.1)
            with pytest.raises(asyncio.TimeoutError):
                await session.get(f"{base_url}/v2/images", timeout=timeout)

    assert simulator.stats.stalled == 1


async def test_a_stall_path_stalls_only_matching_requests() -> None:
    simulator = Simulator(options(stall_path=r"page=3\b", stall_s=0.5))
    async with simulator.serve() as base_url:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            timeout = aiohttp.ClientTimeout(total=0.1)
            ok = await session.get(f"{base_url}/v2/images?page=2", timeout=timeout)
            with pytest.raises(asyncio.TimeoutError):
                await session.get(f"{base_url}/v2/images?page=3", timeout=timeout)

    assert ok.status == 200


def test_a_stall_path_with_a_rate_stalls_that_share_of_its_requests_only() -> None:
    from inventory.simulator.faults import FaultPlan

    plan = FaultPlan(options(stall_path=r"/actions", stall_rate=0.5, stall_s=9.0))
    matching = [plan.decide("/v2/images/1/actions").stall_s for _ in range(400)]
    others = [plan.decide("/v2/images?page=1").stall_s for _ in range(400)]

    assert set(others) == {0.0}
    assert 120 < matching.count(9.0) < 280  # about half, seeded


async def test_repeat_next_points_page_three_back_at_page_two() -> None:
    client = await client_for(Simulator(options(repeat_next=True)))
    try:
        third = await get_json(client, "/v2/images?page=3&per_page=5")
        fourth = await get_json(client, "/v2/images?page=4&per_page=5")
    finally:
        await client.close()

    assert URL(third["links"]["pages"]["next"]).query == {"page": "2", "per_page": "5"}
    assert URL(fourth["links"]["pages"]["next"]).query == {"page": "5", "per_page": "5"}


async def test_faults_leave_the_simulators_own_routes_alone() -> None:
    simulator = Simulator(options(error_rate=1.0, drop_rate=1.0, token="t"))
    client = await client_for(simulator)
    try:
        responses = [await client.get("/_simulator/health") for _ in range(5)]
        stats = await (await client.get("/_simulator/stats")).json()
    finally:
        await client.close()

    assert [response.status for response in responses] == [200] * 5
    assert stats["total"] == 0


async def test_stats_count_requests_by_method_route_and_status(
    sim: Simulator, client: Client
) -> None:
    await client.get("/v2/images", headers=AUTH)
    await client.get("/v2/images/1/actions", headers=AUTH)
    await client.get("/v2/images")

    assert sim.stats.requests == {
        ("GET", "/v2/images", 200): 1,
        ("GET", "/v2/images/{image_id}/actions", 404): 1,
        ("GET", "/v2/images", 401): 1,
    }


# Options and the command.


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("private_share", 1.5, "private_share must be between 0 and 1"),
        ("rate_per_minute", 0, "rate_per_minute must be 1 or more"),
        ("time_scale", 0, "time_scale must be greater than 0"),
        ("actions_order", "random", "actions_order must be"),
    ],
)
def test_bad_options_are_refused_early(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatorOptions(**{field: value})


def test_a_bad_command_value_gives_a_one_line_error() -> None:
    result = CliRunner().invoke(simulate, ["--error-rate", "2"])

    assert result.exit_code == 2
    assert "Invalid value for '--error-rate'" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def command_process() -> Iterator[subprocess.Popen[str]]:
    code = "from inventory.simulator.command import simulate; simulate()"
    args = ["--port", "0", "--images", "12", "--seed", "5"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    with process:
        yield process
        if process.poll() is None:
            process.kill()


@pytest.mark.e2e
def test_the_command_serves_until_interrupted(
    command_process: subprocess.Popen[str],
) -> None:
    assert command_process.stdout is not None
    line = command_process.stdout.readline()
    command_process.send_signal(signal.SIGINT)

    assert line.startswith("Simulating DigitalOcean at http://127.0.0.1:")
    assert "(12 images, seed 5); point DIGITALOCEAN_API_URL there." in line
    assert command_process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        (SimulatorOptions(), None),
        (
            SimulatorOptions(rate_per_minute=None, rate_per_hour=None),
            "INVENTORY_RATE_LIMIT_PER_MINUTE=off INVENTORY_RATE_LIMIT_PER_HOUR=off",
        ),
        (SimulatorOptions(time_scale=60), "INVENTORY_RATE_LIMIT_TIME_SCALE=60 "),
    ],
)
def test_the_command_says_how_a_sync_matches_its_budgets(
    options: SimulatorOptions, hint: str | None
) -> None:
    said = _pacing_hint(options)
    assert said is None if hint is None else hint in (said or "")


async def test_a_request_it_cannot_read_is_one_line_without_its_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp refuses a header over 8 KiB with a traceback that quotes the
    header's start: for an Authorization header, the token's."""
    caplog.set_level(logging.INFO)
    token = "dop_v1_" + "7" * 9000
    async with Simulator(SimulatorOptions(images=1)).serve() as url:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{url}/v2/images", headers=headers) as response:
                status = response.status

    assert status == 400
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in refused] == [
        ("WARNING", "Refused a request it could not read: HTTP 400, LineTooLong", None)
    ]
    assert "7777777777" not in caplog.text


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_more_images_than_memory_holds_are_refused_at_once(command: str) -> None:
    """A hundred million images grew past 5 GB before anyone was told."""
    from inventory.cli import cli

    result = CliRunner().invoke(cli, [command, "--images", "100000000"])

    assert result.exit_code == 2
    assert "'--images': 100000000 is not in the range" in result.output
    assert "<=200000" in result.output
