"""The JSON API: the operations layer over HTTP, for scripts and other tools.

``GET /api/actors``, ``GET /api/runs?actor=&status=&limit=``, ``GET /api/runs/{id}`` (with the
traceback and what was posted), and ``POST /api/actors/{name}/pause|resume|trigger``. Every
``POST`` needs ``Authorization: Bearer <token>`` (or a dashboard session and its CSRF token in
``X-CSRF-Token``); without it: 401 and nothing changes.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..errors import OperationError, UnknownActor
from ..operations import ActorDisabled, ActorPaused, ActorRemoved, NotStarted, RunNotFound
from .actions import ACTIONS, perform
from .site import SITE, operations, unauthorized

MAX_LIMIT = 1000  # runs in one answer


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/actors", actors)
    app.router.add_get("/api/runs", runs)
    app.router.add_get("/api/runs/{run_id}", run)
    app.router.add_post("/api/actors/{name}/{action}", act)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def refusal(e: OperationError) -> web.Response:
    """An operation's refusal as an HTTP answer: 404 for what does not exist, else 409."""
    if isinstance(e, UnknownActor | RunNotFound):
        return error(404, str(e))
    if isinstance(e, NotStarted | ActorRemoved | ActorPaused | ActorDisabled):
        return error(409, str(e))
    return error(400, str(e))


async def actors(request: web.Request) -> web.Response:
    status = await operations(request).status()
    return web.json_response(
        {"initialized": status.initialized, "actors": [a.to_json() for a in status.actors]}
    )


async def runs(request: web.Request) -> web.Response:
    query = request.query
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        return error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit_text!r}")
    try:
        found = await operations(request).history(
            query.get("actor") or None, query.get("status") or None, int(limit_text)
        )
    except OperationError as e:
        return refusal(e)
    return web.json_response({"runs": [r.to_json() for r in found]})


async def run(request: web.Request) -> web.Response:
    text = request.match_info["run_id"]
    if not text.isdigit():
        return error(404, f"no run with id {text!r}")
    try:
        found = await operations(request).run(int(text))
    except OperationError as e:
        return refusal(e)
    return web.json_response(found.to_json(traceback=True))


async def act(request: web.Request) -> web.Response:
    site = request.app[SITE]
    if not site.auth.may_act(request, request.headers.get("X-CSRF-Token")):
        raise unauthorized("send the token as 'Authorization: Bearer <token>'"
                           + ("" if site.auth.token else
                              f" (none is set: set ${site.config.http.token_env})"))
    name, action = request.match_info["name"], request.match_info["action"]
    if action not in ACTIONS:
        return error(404, f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    reason = None
    if action == "pause" and request.can_read_body:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, 'the body must be JSON, such as {"reason": "maintenance"}')
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason is not None and not isinstance(reason, str):
            return error(400, "reason must be a string")
    try:
        return web.json_response(await perform(request, name, action, reason, via="HTTP API"))
    except OperationError as e:
        return refusal(e)
