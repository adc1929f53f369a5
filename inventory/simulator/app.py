"""The API itself: routes, paging, auth, rate budgets and faults over an account.

Only paths under `/v2/` are the API. Faults, auth and rate limits apply to
them alone, so the simulator's own routes stay reliable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inventory.simulator.account import (
    Account,
    ActionRejected,
    ImageFilter,
    Pending,
    now_stamp,
)
from inventory.simulator.budget import RateBudget
from inventory.simulator.faults import Fault, FaultPlan, html_error_page
from inventory.simulator.options import SimulatorOptions
from inventory.simulator.paging import page_body, page_request
from inventory.simulator.stats import SimulatorStats

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NOT_FOUND = "The resource you requested could not be found."
FILTERS = ("type", "private", "tag_name")
ERROR_IDS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    422: "unprocessable_entity",
    429: "too_many_requests",
}


def error(status: int, error_id: str, message: str) -> web.Response:
    """DigitalOcean's error body: `{"id": ..., "message": ...}`."""
    return web.json_response({"id": error_id, "message": message}, status=status)


def not_found() -> web.Response:
    """The 404 DigitalOcean gives for an unknown resource."""
    return error(404, "not_found", NOT_FOUND)


class Api:
    """The `/v2/` routes over one account, with their middleware."""

    def __init__(
        self, options: SimulatorOptions, account: Account, stats: SimulatorStats
    ) -> None:
        self.options = options
        self.account = account
        self.stats = stats
        self.budget = RateBudget(
            options.rate_per_minute, options.rate_per_hour, options.time_scale
        )
        self.faults = FaultPlan(options)
        self._action_rng = random.Random(f"{options.seed}/actions")
        self.app = web.Application(middlewares=[self._middleware])
        self._add_routes(self.app.router)

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        image = "/v2/images/{image_id:\\d+}"
        router.add_get("/v2/images", self.list_images)
        router.add_get("/v2/images/{image_id}", self.get_image)
        router.add_get(f"{image}/actions", self.list_image_actions)
        router.add_post(f"{image}/actions", self.post_image_action)
        router.add_get(f"{image}/actions/{{action_id:\\d+}}", self.get_image_action)
        router.add_get("/v2/actions", self.list_actions)
        router.add_get("/v2/actions/{action_id:\\d+}", self.get_action)

    def settle(self) -> None:
        """Finish API-started actions whose time has come."""
        finished = self.account.settle(time.monotonic())
        self.stats.actions_finished += finished

    # Middleware: latency, drops, auth, budget, stalls, 5xx, then the route.

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if not request.path.startswith("/v2/"):
            return await handler(request)
        self.settle()
        fault = self.faults.decide(request.path_qs)
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.drop:
            return self._drop(request)

        response = await self._guarded(request, handler, fault)
        self.stats.requests[(request.method, _route(request), response.status)] += 1
        return response

    def _drop(self, request: web.Request) -> web.StreamResponse:
        self.stats.dropped += 1
        log.debug("Dropping the connection for %s %s", request.method, request.path_qs)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)

    async def _guarded(
        self, request: web.Request, handler: Handler, fault: Fault
    ) -> web.StreamResponse:
        token = _bearer(request)
        if token is None or not self._accepts(token):
            response = error(401, "unauthorized", "Unable to authenticate you.")
            response.headers.update(self.budget.peek(token or ""))
            return response
        verdict = self.budget.take(token)
        if not verdict.allowed:
            self.stats.rate_limited += 1
            response = error(429, "too_many_requests", "API rate limit exceeded.")
            response.headers.update(verdict.headers)
            return response

        answer = await self._answer(request, handler, fault)
        answer.headers.update(verdict.headers)
        return answer

    def _accepts(self, token: str) -> bool:
        return self.options.token is None or token == self.options.token

    async def _answer(
        self, request: web.Request, handler: Handler, fault: Fault
    ) -> web.StreamResponse:
        if fault.stall_s:
            self.stats.stalled += 1
            await asyncio.sleep(fault.stall_s)
        if fault.error_status is not None:
            self.stats.errors_injected += 1
            return _server_error(fault.error_status, fault.html)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            error_id = ERROR_IDS.get(exc.status, "error")
            message = NOT_FOUND if exc.status == 404 else exc.reason
            return error(exc.status, error_id, message)

    # Routes.

    async def list_images(self, request: web.Request) -> web.Response:
        """`GET /v2/images` with the `type`, `private` and `tag_name` filters."""
        query = request.query
        image_filter = ImageFilter(
            kind=query.get("type") or None,
            private=query.get("private", "").lower() in ("true", "1"),
            tag_name=query.get("tag_name") or None,
        )
        carry = {name: query[name] for name in FILTERS if name in query}
        body = page_body(
            "images",
            self.account.listing(image_filter),
            request.url,
            page_request(query),
            carry,
            repeat_next=self.options.repeat_next,
        )
        return web.json_response(body)

    async def get_image(self, request: web.Request) -> web.Response:
        """`GET /v2/images/{id}`: by id, or by slug for a public image."""
        key = request.match_info["image_id"]
        image = self._image_by_key(key)
        if image is None:
            return not_found()
        return web.json_response({"image": image})

    def _image_by_key(self, key: str) -> dict[str, Any] | None:
        if key.isdigit():
            return self.account.images.get(int(key))
        for image in self.account.listing(ImageFilter()):
            if image.get("public") is True and image.get("slug") == key:
                return image
        return None

    async def list_image_actions(self, request: web.Request) -> web.Response:
        """`GET /v2/images/{id}/actions`, newest first; empty for public images."""
        image_id = int(request.match_info["image_id"])
        if image_id not in self.account.images:
            return not_found()
        actions = self.account.actions_of(image_id)
        body = page_body(
            "actions", actions, request.url, page_request(request.query), {}
        )
        return web.json_response(body)

    async def get_image_action(self, request: web.Request) -> web.Response:
        """`GET /v2/images/{id}/actions/{action_id}`."""
        image_id = int(request.match_info["image_id"])
        action_id = int(request.match_info["action_id"])
        if self.account.owners.get(action_id) != image_id:
            return not_found()
        if image_id not in self.account.images:
            return not_found()
        return web.json_response({"action": self.account.actions[action_id]})

    async def post_image_action(self, request: web.Request) -> web.Response:
        """`POST /v2/images/{id}/actions`: start a transfer or a convert."""
        image_id = int(request.match_info["image_id"])
        try:
            body = await request.json()
        except ValueError:
            return error(422, "unprocessable_entity", "The request body is not JSON.")
        duration_s = self.options.action_duration_s
        pending = Pending(
            deadline=time.monotonic() + duration_s,
            errored=self._action_rng.random() < self.options.action_error_share,
            completed_at=now_stamp(duration_s),
        )
        try:
            action = self.account.start_action(image_id, body, now_stamp(), pending)
        except ActionRejected as exc:
            return error(exc.status, exc.error_id, exc.message)
        self.stats.actions_started += 1
        return web.json_response({"action": action}, status=201)

    async def list_actions(self, request: web.Request) -> web.Response:
        """`GET /v2/actions`: every action of the account, image or not."""
        newest_first = self.options.actions_order == "newest"
        actions = self.account.feed(newest_first)
        body = page_body(
            "actions", actions, request.url, page_request(request.query), {}
        )
        return web.json_response(body)

    async def get_action(self, request: web.Request) -> web.Response:
        """`GET /v2/actions/{action_id}`."""
        action = self.account.actions.get(int(request.match_info["action_id"]))
        if action is None:
            return not_found()
        return web.json_response({"action": action})


def _bearer(request: web.Request) -> str | None:
    """The bearer token, or None when the header is missing, not Bearer or empty."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _server_error(status: int, html: bool) -> web.Response:
    if html:
        return web.Response(
            status=status, text=html_error_page(status), content_type="text/html"
        )
    return error(status, "server_error", "Unexpected server-side error")
