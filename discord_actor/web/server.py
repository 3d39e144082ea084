"""The aiohttp server of one runtime: its lifecycle, the probes and ``/metrics``.

``GET /healthz`` answers 200 when the event loop keeps time, the database answers and (for a
bot) the gateway is connected, else 503 with the reasons; ``GET /readyz`` answers 200 once the
runtime has started and while the database answers. Both are what systemd, Docker and
Kubernetes poll. Nothing here runs unless someone sends a request.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config.model import Config
from ..config.redaction import redact_text
from ..metrics import CONTENT_TYPE, discord_readings
from . import api, dashboard
from .access import AddressInUse, HttpUnavailable
from .site import SITE, Site, unauthorized

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["HttpServer", "HttpUnavailable", "base_url", "unauthorized"]

log = logging.getLogger("discord_actor.http")

DATABASE_CHECK_SECONDS = 2.0  # a health check waits this long for ``SELECT 1``
OPEN_PATHS = ("/login", "/static/")  # served to anyone, even where reading needs the token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def base_url(config: Config) -> str:
    host = config.http.host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{config.http.port}/"


class HttpServer(Site):
    """Serves one runtime over HTTP until ``stop``: the probes and ``/metrics`` here, the API
    and the dashboard from their modules."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app[SITE] = self
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        api.add_routes(app)
        dashboard.add_routes(app)
        return app

    async def start(self) -> None:
        cfg = self.config.http
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.host, cfg.port).start()
        except OSError as e:
            await runner.cleanup()
            why = e.strerror or str(e)
            error = AddressInUse if e.errno == errno.EADDRINUSE else HttpUnavailable
            raise error(
                f"cannot listen on {cfg.host}:{cfg.port} (http.host, http.port in "
                f"{self.config.path}): {why}"
            ) from None
        self._runner = runner
        reads = "reading needs the token" if self.auth.reads_need_token else "reading is open"
        acting = (
            f"actions need the token in ${cfg.token_env}"
            if self.auth.token
            else f"no actions (${cfg.token_env} is not set)"
        )
        log.info(
            "dashboard, API, /metrics and /healthz at %s (%s; %s)",
            base_url(self.config),
            reads,
            acting,
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- who may read ----------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Reading needs the token where the host is not loopback; answers carry headers that
        keep the dashboard out of frames and out of caches."""
        if request.method in ("GET", "HEAD") and not request.path.startswith(OPEN_PATHS):
            if not self.auth.may_read(request):
                if request.path.startswith(("/api/", "/metrics", "/healthz", "/readyz")):
                    raise unauthorized("this server needs the token to read: send it as "
                                       "'Authorization: Bearer <token>'")
                raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
        response = await handler(request)
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none';"
            " form-action 'self'",
        )
        if not request.path.startswith("/static/"):
            headers.setdefault("Cache-Control", "no-store")
        return response

    # -- probes and metrics ----------------------------------------------------------------------

    async def health(self, *, gateway: bool = True) -> tuple[bool, dict[str, Any]]:
        """(healthy, the checks and their findings)."""
        checks: dict[str, dict[str, Any]] = {}
        lag = self.runtime.loop_lag.lag
        limit = self.runtime.loop_lag.warn_after
        checks["event_loop"] = {"ok": lag <= limit, "lag_seconds": round(lag, 4)}
        if lag > limit:
            checks["event_loop"]["reason"] = f"the event loop lagged {lag:.1f} s at its last check"
        checks["database"] = await self._database_check()
        # Not a failure (every change is still found at the next poll), but worth seeing.
        listener = self.runtime.listener
        checks["notifications"] = {"ok": True, "arrive": not listener.polls_only}
        if listener.problem is not None:
            checks["notifications"]["note"] = listener.problem
        if gateway and self.runtime.client is not None:
            connected, latency = discord_readings(self.runtime.client)
            checks["gateway"] = {"ok": bool(connected)}
            if connected:
                checks["gateway"]["latency_seconds"] = round(latency, 4)
            else:
                checks["gateway"]["reason"] = "not connected to the Discord gateway"
        return all(c["ok"] for c in checks.values()), checks

    async def _database_check(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(DATABASE_CHECK_SECONDS):
                await self.runtime.database.pool.fetchval("SELECT 1")
        except TimeoutError:
            reason = f"the database did not answer within {DATABASE_CHECK_SECONDS:g} s"
            return {"ok": False, "reason": reason}
        except Exception as e:  # refused, reset, shutting down: all mean "not healthy"
            error = redact_text(f"{type(e).__name__}: {e}".rstrip(": "))
            return {"ok": False, "reason": f"the database is unreachable ({error})"}
        return {"ok": True}

    async def healthz(self, request: web.Request) -> web.Response:
        healthy, checks = await self.health()
        return _probe_answer(healthy, checks)

    async def readyz(self, request: web.Request) -> web.Response:
        started = self.runtime.started
        checks: dict[str, dict[str, Any]] = {"runtime": {"ok": started}}
        if not started:
            checks["runtime"]["reason"] = "the runtime is starting or stopping"
        checks["database"] = await self._database_check()
        return _probe_answer(all(c["ok"] for c in checks.values()), checks)

    async def metrics(self, request: web.Request) -> web.Response:
        from ..exposition import render  # prometheus_client, loaded at the first scrape

        # In a thread: with thousands of actors rendering takes long enough to delay runs.
        body = await asyncio.to_thread(render, self.runtime.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _probe_answer(ok: bool, checks: dict[str, dict[str, Any]]) -> web.Response:
    reasons = [c["reason"] for c in checks.values() if not c["ok"] and "reason" in c]
    body = {"status": "ok" if ok else "unavailable", "checks": checks, "reasons": reasons}
    return web.json_response(body, status=200 if ok else 503)
