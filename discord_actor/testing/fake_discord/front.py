"""The fake's HTTP front door: authentication, injected faults, rate limits and recording.

Every REST answer carries ``Via`` (without it discord.py takes a 429 for a Cloudflare ban),
Discord's ``X-RateLimit-*`` headers, and ``Content-Type: application/json`` exactly.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
import math
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import ApiError
from .limits import GlobalWindow
from .models import API_PREFIX, Fault, RecordedRequest
from .rest import ApiRequest, RestApi, Route, parse_body

if TYPE_CHECKING:
    from .world import FakeWorld

log = logging.getLogger(__name__)

#: the route whose per-channel bucket ``DiscordLimits.channel_messages`` sets
MESSAGE_ROUTE = "POST /channels/{channel_id}/messages"


def fault_matches(pattern: str, method: str, path: str, route_key: str | None) -> bool:
    """``pattern`` globs ``"METHOD /path"`` or a route template; no method means any."""
    if " " not in pattern:
        pattern = "* " + pattern
    if fnmatch.fnmatchcase(f"{method} {path}", pattern):
        return True
    return route_key is not None and fnmatch.fnmatchcase(route_key, pattern.replace("[", "[[]"))


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    headers = {"Via": "1.1 google", **(headers or {})}
    if body is None:
        return web.Response(status=status, headers=headers)
    # Exactly "application/json": aiohttp's json_response would add "; charset=utf-8".
    headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)


def rate_limited(retry_after: float, is_global: bool, headers: dict[str, str]) -> web.Response:
    """A 429 as Discord sends it: ``retry_after`` and ``global`` in the body, scope headers."""
    headers = {
        **headers,
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Scope": "global" if is_global else "user",
        "Retry-After": str(max(1, math.ceil(retry_after))),
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    body = {
        "message": "You are being rate limited.",
        "retry_after": retry_after,
        "global": is_global,
        "code": 0,
    }
    return json_response(429, body, headers)


class RateLimiter:
    """Fixed windows per bucket (route + major parameter), like Discord's per-route limits."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}

    def take(self, route_key: str, major: str, *, count: bool) -> tuple[dict[str, str], float]:
        """Headers for the bucket; the float is >0 (seconds to wait) when it is exhausted."""
        now = time.monotonic()
        start, used = self._windows.get((route_key, major), (now, 0))
        if now - start >= self.window:
            start, used = now, 0
        if count:
            used += 1
            self._windows[(route_key, major)] = (start, used)
        reset_after = max(0.0, start + self.window - now)
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(route_key.encode()).hexdigest()[:12],
        }
        return headers, (reset_after if used > self.limit else 0.0)


class HttpFront:
    def __init__(self, fake: FakeWorld, rest: RestApi) -> None:
        self.fake = fake
        self.rest = rest
        self.limiter = RateLimiter(*fake.rate_limit)
        limits = fake.limits
        self.global_window = None if limits is None else GlobalWindow(limits.global_per_second)
        self.message_limiter = (
            None if limits is None else RateLimiter(limits.channel_messages, limits.channel_window)
        )

    def take_fault(
        self, method: str, path: str, route_key: str | None, *, after_write: bool = False
    ) -> Fault | None:
        for fault in self.fake.faults:
            if (
                fault.after_write == after_write
                and fault.remaining > 0
                and fault_matches(fault.pattern, method, path, route_key)
                and (fault.fraction >= 1.0 or self.fake.random.random() < fault.fraction)
            ):
                fault.hits += 1
                return fault
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        path, method, query = request.path, request.method, dict(request.query)
        if path.startswith("/attachments/") and method == "GET":
            return self.serve_attachment(path)
        api_path = path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else ""
        matched = self.rest.match(method, api_path) if api_path else None
        if matched is None:
            body = (await request.read())[:2000].decode("utf-8", "replace")
            record = RecordedRequest(method, path, query, None, 404, body)
            fake.unknown_requests.append(record)
            fake.requests.append(record)
            fake.notify()
            log.warning("fake Discord does not implement %s %s", method, path)
            return json_response(404, {"message": "404: Not Found", "code": 0})
        route, params = matched
        record = RecordedRequest(method, api_path, query, route.key, 0)
        fake.requests.append(record)
        response = await self.answer(request, route, params, record)
        record.status = response.status
        fake.counts.answered(response.status, response.headers.get("X-RateLimit-Scope"))
        fake.notify()
        return response

    async def answer(
        self, request: web.Request, route: Route, params: dict[str, str], record: RecordedRequest
    ) -> web.StreamResponse:
        major = params.get("channel_id") or params.get("guild_id") or params.get("webhook_id")
        limiter = self.limiter
        if self.message_limiter is not None and route.key == MESSAGE_ROUTE:
            limiter = self.message_limiter
        headers, _ = limiter.take(route.key, major or "", count=False)
        try:
            if route.auth and request.headers.get("Authorization") != f"Bot {self.fake.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            # Read the whole request first: a slow answer still means Discord got the request.
            payload, uploads = await parse_body(request)
            record.body = payload
            fault = self.take_fault(request.method, record.path, route.key)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.disconnect:
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=499)  # never reaches the client
                if fault.status == 429:
                    return rate_limited(fault.retry_after, fault.is_global, headers)
                if fault.status:
                    message = fault.message or f"{fault.status}: {HTTPStatus(fault.status).phrase}"
                    return json_response(
                        fault.status, {"message": message, "code": fault.code}, headers
                    )
            if route.auth and self.global_window is not None:
                wait = self.global_window.take()  # interaction responses are exempt
                if wait:
                    return rate_limited(wait, True, {})
            headers, wait = limiter.take(route.key, major or "", count=True)
            if wait:
                return rate_limited(wait, False, headers)
            api_request = ApiRequest(request.method, params, record.query, payload, uploads)
            status, body = await route.handler(api_request)
            if 200 <= status < 300:
                after = self.take_fault(request.method, record.path, route.key, after_write=True)
                if after is not None:
                    return self.fail_after_write(request, after, headers)
            return json_response(status, body, headers)
        except ApiError as error:
            return json_response(error.status, error.body(), headers)

    @staticmethod
    def fail_after_write(
        request: web.Request, fault: Fault, headers: dict[str, str]
    ) -> web.Response:
        """What a client sees when Discord did the work but the answer was lost or failed."""
        if fault.disconnect:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)  # never reaches the client
        message = fault.message or f"{fault.status}: {HTTPStatus(fault.status).phrase}"
        return json_response(fault.status, {"message": message, "code": fault.code}, headers)

    def serve_attachment(self, path: str) -> web.StreamResponse:
        """``/attachments/{channel}/{id}/{name}``: the bytes uploaded (``Attachment.read()``)."""
        parts = path.split("/")
        if len(parts) >= 4 and parts[3].isdigit():
            for message in self.fake.messages:
                for attachment in message.attachments:
                    if attachment.id == int(parts[3]):
                        return web.Response(
                            body=attachment.data, headers={"Content-Type": attachment.content_type}
                        )
        return web.Response(status=404)
