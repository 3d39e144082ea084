"""The dashboard: server-rendered pages over the operations layer, no JavaScript framework.

``/`` lists the actors (state, next run, last result, failures in a row) with a timeline of
their recent runs each (``timeline``), and the pool; ``/actors/{name}`` one actor and its recent
runs; ``/runs/{id}`` one run with its traceback and posts. Operators who logged in with the
token get pause, resume and trigger buttons (forms with the session's CSRF token). A few lines
of plain JavaScript reload the page's content every few seconds; without JavaScript it refreshes
itself whole. Times are shown relative to when the page was made, exactly on hover (``moments``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..errors import OperationError
from ..operations import ActorStatus, RunInfo, format_duration
from .actions import ACTIONS, perform
from .auth import SESSION_COOKIE, SESSION_SECONDS
from .moments import moment
from .site import SITE, Site, operations, unauthorized
from .timeline import TIMELINE_RUNS, WIDTH, timeline
from .timeline import WINDOW as WINDOW  # "as": the timeline's names still importable from here
from .timeline import Mark as Mark
from .timeline import Timeline as Timeline

PAGE_SIZE = 25  # actors per page of the overview
RECENT_RUNS = 50  # on an actor's page
#: the states in which an actor runs on its schedule: in the others no next run is coming
SCHEDULED = ("active", "running")
#: the states shown in the next run's place ("not started" and "not in config" have none: "-")
HALTED = ("paused", "broken", "disabled")
REFRESH_SECONDS = 5
TIMELINE_WIDTH = WIDTH  # its name here before the timeline had a module of its own


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/actors/{name}", actor_page)
    app.router.add_get("/runs/{run_id}", run_page)
    app.router.add_post("/actors/{name}/{action}", act)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static/", _static_dir(), append_version=False)


def _static_dir() -> str:
    from pathlib import Path

    return str(Path(__file__).parent / "static")


# -- pages -------------------------------------------------------------------------------------


def _common(request: web.Request, now: datetime | None = None) -> dict[str, Any]:
    """What every page's template reads; ``now`` is the moment its times are relative to."""
    site = request.app[SITE]
    session = site.auth.session(request)
    return {
        "operator": session is not None,
        "csrf": session.csrf if session is not None else "",
        "can_log_in": site.auth.token is not None,
        "token_env": site.config.http.token_env,
        "notice": request.query.get("notice", "")[:300],
        "refresh": REFRESH_SECONDS,
        "instance": site.runtime.instance_id,
        # at(value, tz): a Moment, for the templates' moment(); "now" is one for the whole page
        "at": partial(moment, now=now or datetime.now(UTC)),
        "duration": format_duration,
    }


def _row(a: ActorStatus, runs: list[RunInfo], now: datetime) -> dict[str, Any]:
    """One actor as the templates show it, its runs (newest first) on its timeline."""
    scheduled = a.state in SCHEDULED
    return {
        "name": a.actor,
        "state": a.state,
        "schedule": a.schedule or "-",
        # Paused, broken or disabled: no next run is coming, whatever slot the row still holds.
        "next_run": moment(a.next_run, a.timezone, now) if scheduled else None,
        "halted": a.state if a.state in HALTED else None,
        "last_status": a.last_status or "-",
        "last_run": moment(a.last_run_at, a.timezone, now),
        "failures": a.consecutive_failures,
        "paused": a.paused,
        "paused_reason": a.paused_reason,
        "setup_error": a.setup_error,
        "running": a.running,
        "registered": a.registered,
        "trigger_pending": a.trigger_pending,
        "keyed": a.keyed,  # pending keyed schedules
        "refusal": a.refusal,  # posts Discord refused, and why
        "timeline": timeline(runs, now, a.next_run if scheduled else None, a.timezone),
    }


async def overview(request: web.Request) -> web.Response:
    site = request.app[SITE]
    ops = operations(request)
    status = await ops.status()
    page_text = request.query.get("page", "1")
    pages = max(1, math.ceil(len(status.actors) / PAGE_SIZE))
    page = min(max(int(page_text), 1), pages) if page_text.isdigit() else 1
    shown = status.actors[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    now = datetime.now(UTC)
    runs = await ops.recent_runs([a.actor for a in shown if a.registered], TIMELINE_RUNS)
    rows = [_row(a, runs.get(a.actor, []), now) for a in shown]
    counts: dict[str, int] = {}
    for a in status.actors:
        counts[a.state] = counts.get(a.state, 0) + 1
    return site.render(
        request,
        "overview.html",
        title="Actors",
        actors=rows,
        counts=sorted(counts.items()),
        total=len(status.actors),
        page=page,
        pages=pages,
        pool=_pool(site),
        initialized=status.initialized,
        **_common(request, now),
    )


def _pool(site: Site) -> dict[str, Any]:
    runtime = site.runtime
    pool = runtime.database.pool
    idle = pool.get_idle_size()
    waits = runtime.metrics.acquire_waits
    return {
        "size": pool.get_size(),
        "in_use": pool.get_size() - idle,
        "idle": idle,
        "max": pool.get_max_size(),
        "by_actor": sorted((a, n) for a, n in runtime.budget.in_use.items() if n),
        "waits": waits.count,
        "mean_wait": format_duration(1000 * waits.total / waits.count) if waits.count else "-",
        "longest_wait": format_duration(1000 * waits.longest) if waits.count else "-",
        "slow_waits": waits.slow,
        "posts_waiting": runtime.posts_waiting,  # the queue: posts waiting for Discord's limits
    }


async def actor_page(request: web.Request) -> web.Response:
    site = request.app[SITE]
    ops = operations(request)
    name = request.match_info["name"]
    found = (await ops.status(name)).actors
    if not found:
        raise web.HTTPNotFound(text=f"unknown actor {name!r}")
    history = await ops.history(name, limit=TIMELINE_RUNS)
    now = datetime.now(UTC)
    return site.render(
        request,
        "actor.html",
        title=name,
        actor=_row(found[0], history, now),
        runs=history[:RECENT_RUNS],
        **_common(request, now),
    )


async def run_page(request: web.Request) -> web.Response:
    site = request.app[SITE]
    text = request.match_info["run_id"]
    try:
        if not text.isdigit():
            raise web.HTTPNotFound(text=f"no run with id {text!r}")
        found = await operations(request).run(int(text))
    except OperationError as e:
        raise web.HTTPNotFound(text=str(e)) from None
    return site.render(request, "run.html", title=f"Run {found.id}", run=found,
                         **_common(request))


# -- operator actions --------------------------------------------------------------------------


async def act(request: web.Request) -> web.Response:
    site = request.app[SITE]
    form = await request.post()
    csrf = form.get("csrf")
    if not site.auth.may_act(request, csrf if isinstance(csrf, str) else None):
        raise unauthorized("log in with the token first (your session may have expired)")
    name, action = request.match_info["name"], request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text=f"unknown action {action!r}")
    reason = form.get("reason")
    try:
        await perform(request, name, action, reason if isinstance(reason, str) else None,
                      via="dashboard")
        done = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}[action]
        notice = f"{done} {name}"
    except OperationError as e:
        notice = str(e)
    back = form.get("back")
    target = back if isinstance(back, str) and _local(back) else "/"
    separator = "&" if "?" in target else "?"
    raise web.HTTPSeeOther(f"{target}{separator}notice={quote(notice)}")


def _local(path: str) -> bool:
    """A path on this server (not ``//elsewhere``), safe to redirect to."""
    return path.startswith("/") and not path.startswith("//") and "\\" not in path


async def login_form(request: web.Request) -> web.Response:
    site = request.app[SITE]
    return site.render(request, "login.html", title="Log in", failed=False,
                         next=request.query.get("next", "/"), **_common(request))


async def login(request: web.Request) -> web.Response:
    site = request.app[SITE]
    form = await request.post()
    token, target = form.get("token"), form.get("next")
    started = site.auth.login(token) if isinstance(token, str) else None
    target = target if isinstance(target, str) and _local(target) else "/"
    if started is None:
        response = site.render(request, "login.html", title="Log in", failed=True,
                                 next=target, **_common(request))
        response.set_status(401)
        return response
    session_id, _ = started
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    site = request.app[SITE]
    site.auth.logout(request)
    response = web.HTTPSeeOther("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response
