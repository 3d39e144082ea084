"""Putting one runtime together and taking it apart: what ``discord-actor run`` and the
``ActorRuntime`` cog both do, in one place.

``Assembly`` opens (and migrates) the database, builds the ``Runtime`` with its platforms, starts
the HTTP server of ``[http]`` (first, so that ``/readyz`` answers 503 while the runtime starts)
and then the runtime; it stops them in the reverse order and closes the database. A start that
fails or is cancelled leaves nothing behind. As a context manager::

    async with Assembly(config, actors) as runtime:
        await stop.wait()

A host whose lifetime is split across callbacks (the cog: ``cog_load``, then ``cog_unload``)
calls the steps itself: ``open``, ``start``, ``stop``, ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .alerts import AlertSink
from .clock import Clock
from .config.model import Config
from .db import Database, open_database
from .platforms import Platform, build_platforms
from .plugins import LoadedActor
from .runtime import Runtime

if TYPE_CHECKING:
    from .web.server import HttpServer

__all__ = ["Assembly"]

log = logging.getLogger("discord_actor.http")


class Assembly:
    """One runtime with its database and HTTP server, from open to close.

    ``client`` is the bot's ``discord.Client`` (None without Discord: discord actors print on
    the console); ``platforms`` replaces the registry's (tests, benchmarks). ``database``, an
    open database, is used instead of opening one, and left open at the end: its opener closes
    it.
    """

    def __init__(
        self,
        config: Config,
        actors: Mapping[str, LoadedActor],
        *,
        client: Any = None,
        platforms: Mapping[str, Platform] | None = None,
        alerts: AlertSink | None = None,
        clock: Clock | None = None,
        instance_id: str | None = None,
        database: Database | None = None,
    ) -> None:
        self.config = config
        self.actors = dict(actors)
        self.client = client
        self.platforms = dict(platforms) if platforms is not None else build_platforms(client)
        self.alerts = alerts
        self.clock = clock
        self.instance_id = instance_id
        self.database = database
        self._owns_database = database is None
        self.runtime: Runtime | None = None  # built by ``start``; kept while it stops
        self.http: HttpServer | None = None
        self._stopped: asyncio.Future[None] | None = None

    async def open(self) -> Database:
        """Open the database and bring its schema up to date (once).

        Raises ``DatabaseUnavailable`` or ``MigrationError``; on error nothing is left open.
        """
        if self.database is None:
            self.database = await open_database(self.config.database, migrate=True, announce=True)
        return self.database

    async def start(self) -> Runtime:
        """Open the database if not yet, build the runtime, start the HTTP server and the
        runtime. A failure (``HttpUnavailable`` for an unusable address, a database error) or
        a cancellation stops what started and closes the database, then raises."""
        database = await self.open()
        try:
            runtime = self.runtime = Runtime(
                self.config,
                database,
                self.actors,
                clock=self.clock,
                platforms=self.platforms,
                client=self.client,
                alerts=self.alerts,
                instance_id=self.instance_id,
            )
            self._stopped = None
            await self._start_http(runtime)
            await runtime.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._stop()
            self.runtime = None
            with contextlib.suppress(Exception):
                await self.close()
            raise
        return runtime

    async def _start_http(self, runtime: Runtime) -> None:
        """Serve health, metrics, the API and the dashboard when ``[http]`` is enabled.

        An address another process holds already (a second server of the same project, most
        likely) is not fatal: this process runs the actors without HTTP and says so once, the
        other one keeps serving ``/healthz``. Any other problem is (``HttpUnavailable``)."""
        if not self.config.http.enabled:
            return
        from .web.access import AddressInUse
        from .web.server import HttpServer

        server = HttpServer(runtime)  # HttpUnavailable: reading or acting needs a token
        try:
            await server.start()
        except AddressInUse as e:
            log.warning(
                "%s; this process runs the actors without HTTP (no dashboard, API, /metrics or "
                "/healthz from it: the process holding the address, likely another "
                "'discord-actor run' of this project, serves its own); to serve them from this "
                "process too, give it another http.port", e,
            )
            return
        self.http = server

    async def stop(self) -> None:
        """Stop the runtime (running runs get ``shutdown_grace_seconds``), then the HTTP
        server; safe to call again and from several tasks at once."""
        for platform in self.platforms.values():
            close = getattr(platform, "close", None)  # posts waiting for the gateway give up
            if close is not None:
                close()
        if self._stopped is None:
            if self.runtime is None:
                return
            self._stopped = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        try:
            if self.runtime is not None:
                await self.runtime.stop()
        finally:
            http, self.http = self.http, None
            if http is not None:
                await http.stop()

    def cancel_runs(self, reason: str) -> None:
        """Cancel the runs in flight (a second interrupt while stopping gracefully)."""
        if self.runtime is not None:
            self.runtime.cancel_runs(reason)

    async def close(self) -> None:
        """Stop, then close the database (unless it was given: its opener closes it)."""
        try:
            await self.stop()
        finally:
            if self._owns_database:
                database, self.database = self.database, None
                if database is not None:
                    await database.close()  # detaches from the embedded server (stops it if last)

    async def __aenter__(self) -> Runtime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
