"""The dashboard: server-rendered pages over the operations layer, no JavaScript framework.

``/`` lists the actors (state, next run, last result, failures in a row) with a 24-hour
timeline each, and the pool; ``/actors/{name}`` one actor and its recent runs; ``/runs/{id}``
one run with its traceback and posts. Operators who logged in with the token get pause, resume
and trigger buttons (forms with the session's CSRF token). A few lines of plain JavaScript
reload the page's content every few seconds; without JavaScript it refreshes itself whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..enums import RunStatus
from ..errors import OperationError
from ..operations import ActorStatus, RunInfo, format_duration, when
from .actions import ACTIONS, perform
from .auth import SESSION_COOKIE, SESSION_SECONDS
from .site import SITE, Site, operations, unauthorized

PAGE_SIZE = 25  # actors per page of the overview
TIMELINE_RUNS = 300  # at most this many runs drawn per timeline
TIMELINE_WIDTH = 600  # SVG user units
WINDOW = timedelta(hours=24)
RECENT_RUNS = 50  # on an actor's page
REFRESH_SECONDS = 5


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


# -- the timeline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """One run on a timeline: where it started, where its slot was, how it ended."""

    x: float
    slot_x: float  # left of ``x`` by the run's lateness
    status: RunStatus
    title: str


@dataclass(frozen=True)
class Timeline:
    marks: list[Mark]
    span: str  # what the timeline covers: "24 h", or less when runs were left out
    width: int = TIMELINE_WIDTH


def timeline(runs: list[RunInfo], now: datetime) -> Timeline:
    """The runs of the last 24 hours (at most ``TIMELINE_RUNS``, the newest) on one axis."""
    start = now - WINDOW
    recent = [r for r in runs if r.started_at >= start]
    span = "last 24 h"
    if len(runs) >= TIMELINE_RUNS and recent and len(recent) == len(runs):
        # The limit was hit inside the window: draw only the part the runs cover.
        start = recent[-1].started_at
        span = f"last {_span(now - start)} ({len(recent)} runs)"
    seconds = max((now - start).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        share = (moment - start).total_seconds() / seconds
        return round(min(max(share, 0.0), 1.0) * TIMELINE_WIDTH, 1)

    marks = []
    for r in reversed(recent):  # oldest first: the newest drawn on top
        late = (r.started_at - r.scheduled_for).total_seconds()
        title = (
            f"run {r.id} {r.status} \N{EM DASH} slot {when(r.scheduled_for, r.timezone)}, "
            f"started {late:.1f} s late, took {format_duration(r.duration_ms)}"
        )
        marks.append(Mark(x(r.started_at), x(r.scheduled_for), r.status, title))
    return Timeline(marks, span)


def _span(delta: timedelta) -> str:
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    return f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"


# -- pages -------------------------------------------------------------------------------------


def _common(request: web.Request) -> dict[str, Any]:
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
        "when": when,
        "duration": format_duration,
    }


def _row(a: ActorStatus) -> dict[str, Any]:
    return {
        "name": a.actor,
        "state": a.state,
        "schedule": a.schedule or "-",
        "next_run": when(a.next_run, a.timezone) if not a.paused else "-",
        "last_status": a.last_status or "-",
        "last_run": when(a.last_run_at, a.timezone),
        "failures": a.consecutive_failures,
        "paused": a.paused,
        "paused_reason": a.paused_reason,
        "setup_error": a.setup_error,
        "running": a.running,
        "registered": a.registered,
        "trigger_pending": a.trigger_pending,
        "keyed": a.keyed,  # pending keyed schedules
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
    rows = []
    for a in shown:
        row = _row(a)
        row["timeline"] = timeline(runs.get(a.actor, []), now)
        rows.append(row)
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
        **_common(request),
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
    }


async def actor_page(request: web.Request) -> web.Response:
    site = request.app[SITE]
    ops = operations(request)
    name = request.match_info["name"]
    found = (await ops.status(name)).actors
    if not found:
        raise web.HTTPNotFound(text=f"unknown actor {name!r}")
    history = await ops.history(name, limit=TIMELINE_RUNS)
    row = _row(found[0])
    row["timeline"] = timeline(history, datetime.now(UTC))
    return site.render(
        request,
        "actor.html",
        title=name,
        actor=row,
        runs=history[:RECENT_RUNS],
        **_common(request),
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
