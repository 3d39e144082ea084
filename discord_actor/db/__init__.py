"""Where the data lives: connect (or start the embedded server), pool, migrate.

``open_database`` is the single entry point the runtime and the CLI use; ``Database.close`` undoes
everything it did, including stopping the embedded server it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import asyncpg

from discord_actor.config.model import DatabaseConfig
from discord_actor.config.redaction import redact_url
from discord_actor.db.migrations import MigrationError, applied_versions, migrate, quote_ident
from discord_actor.db.migrations import migrate as _migrate  # open_database(migrate=) shadows it
from discord_actor.db.pool import (
    DatabaseUnavailable,
    create_pool,
    describe_error,
    pooler_symptom,
)
from discord_actor.db.server import EmbeddedPostgres, holds_cluster
from discord_actor.db.transient import Servers
from discord_actor.errors import DiscordActorError

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "EmbeddedPostgres",
    "MigrationError",
    "NoDatabase",
    "create_pool",
    "migrate",
    "open_database",
    "quote_ident",
    "resolve_url",
]

log = logging.getLogger("discord_actor.db")

POOL_CLOSE_TIMEOUT = 10.0  # seconds to wait for borrowed connections before terminating them


@dataclass
class Database:
    """An open pool on a migrated schema, plus the embedded server if we started one."""

    pool: asyncpg.Pool
    url: str = field(repr=False)  # may hold a password
    schema: str
    config: DatabaseConfig
    server: EmbeddedPostgres | None = None
    applied_migrations: list[str] = field(default_factory=list)  # applied by this open
    direct_url: str | None = field(default=None, repr=False)  # not through the pooler
    #: which node the pooled connections lead to (a URL may list a primary and its standbys)
    servers: Servers = field(default_factory=Servers)

    @property
    def listen_url(self) -> str | None:
        """Where ``LISTEN`` can work: the direct address if there is one, else ``url`` unless
        it is a transaction-mode pooler (None: poll only), which lends its server connections
        per transaction and so drops the notifications of a session that is not there."""
        if self.direct_url is not None:
            return self.direct_url
        pooled = self.config.transaction_pooled and self.server is None
        return None if pooled else self.url

    async def close(self) -> None:
        """Close the pool (terminating connections still borrowed after a grace period), then
        detach from the embedded server, which stops unless another process still uses it."""
        try:
            try:
                await asyncio.wait_for(self.pool.close(), POOL_CLOSE_TIMEOUT)
            except TimeoutError:
                self.pool.terminate()
        finally:
            server, self.server = self.server, None
            if server is not None:
                await asyncio.to_thread(server.stop)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class NoDatabase(DiscordActorError):
    """``open_database(create=False)`` found no database to open: the embedded server has no
    data directory yet, or the schema has no tables. Nothing was created; the message names
    what is missing (``discord-actor run`` or ``migrate`` creates it)."""


def announce_embedded(server: EmbeddedPostgres) -> None:
    """Log a new database (a deleted ``.discord_actor`` or a lost volume starts from nothing)
    and other processes attached to the same data directory (a second server by mistake)."""
    if server.created:
        log.warning(
            "created a new, empty database in %s: no data directory was there (if one was "
            "expected, its volume or directory is missing; state and run history start afresh)",
            server.data_dir,
        )
    if server.shared_with:
        pids = ", ".join(str(p) for p in server.shared_with)
        log.warning(
            "another process is using this data directory: pid %s (%s); both run the actors "
            "(each slot still runs once; an immediate actor runs again for this start)",
            pids,
            server.data_dir,
        )


def resolve_url(cfg: DatabaseConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The URL to connect to: ``cfg.url``, else ``DATABASE_URL``; None means the embedded server."""
    env = os.environ if environ is None else environ
    return cfg.url or env.get("DATABASE_URL") or None


async def _migrate_directly(direct_url: str, cfg: DatabaseConfig) -> list[str]:
    """Migrate over a connection of its own to ``direct_url`` (not through the pooler)."""
    try:
        conn = await asyncpg.connect(direct_url, timeout=cfg.connect_timeout_seconds,
                                     statement_cache_size=0)
    except Exception as exc:
        raise DatabaseUnavailable(
            f"cannot connect to database.direct_url {redact_url(direct_url)} to migrate: "
            f"{describe_error(exc, direct_url)}"
        ) from None
    try:
        return await _migrate(conn, cfg.schema)
    finally:
        await conn.close()


async def open_database(
    cfg: DatabaseConfig,
    *,
    migrate: bool = True,
    environ: Mapping[str, str] | None = None,
    announce: bool = False,
    create: bool = True,
) -> Database:
    """Connect (starting the embedded server under ``cfg.data_dir`` if no URL is configured),
    create the pool and, unless ``migrate=False``, bring ``cfg.schema`` up to date.

    ``create=False`` (a command that only reads, or changes what must exist already) opens only
    a database that is there: without the embedded server's data directory, or with a schema
    that has no tables, it raises ``NoDatabase`` and leaves nothing behind, not even an empty
    data directory (whose creation the next ``discord-actor run`` would then not announce).

    ``announce=True`` (a server starting) logs what an operator must notice about the embedded
    server: a new, empty database was created, or other processes use the same one.

    Raises ``DatabaseUnavailable`` (unreachable database, server that will not start),
    ``MigrationError`` or ``NoDatabase``; on error nothing is left open.
    """
    quote_ident(cfg.schema)  # reject an unusable schema name before starting anything
    url = resolve_url(cfg, environ)
    server: EmbeddedPostgres | None = None
    if url is None:
        if not create and not holds_cluster(Path(cfg.data_dir)):
            raise NoDatabase(f"no database yet: the embedded PostgreSQL has no data directory "
                             f"at {cfg.data_dir}")
        server = EmbeddedPostgres()
        url = await asyncio.to_thread(server.start, Path(cfg.data_dir))
        if announce:
            announce_embedded(server)
            if cfg.pooler != "none":
                log.warning("database.pooler = %r does not apply to the embedded server (no "
                            "database.url and no DATABASE_URL): it is reached directly",
                            cfg.pooler)
    servers = Servers()
    try:
        pool = await create_pool(cfg, url, init=servers.note)
    except BaseException:
        if server is not None:
            await asyncio.to_thread(server.stop)
        raise
    direct_url = cfg.direct_url or None
    db = Database(pool=pool, url=url, schema=cfg.schema, config=cfg, server=server,
                  direct_url=direct_url, servers=servers)
    if create and not migrate:
        return db
    try:
        async with pool.acquire() as conn:
            if not create and not await applied_versions(conn, cfg.schema):
                where = (f"the embedded PostgreSQL in {cfg.data_dir}" if server is not None
                         else redact_url(url))
                raise NoDatabase(f"no database yet: schema {cfg.schema!r} of {where} has no "
                                 "discord-actor tables")
            if migrate and direct_url is None:
                db.applied_migrations = await _migrate(conn, cfg.schema)
        if migrate and direct_url is not None:
            db.applied_migrations = await _migrate_directly(direct_url, cfg)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await db.close()
        cause = exc.__cause__ if isinstance(exc, MigrationError) else exc
        symptom = pooler_symptom(cause) if cause is not None else None
        if symptom is not None:
            raise DatabaseUnavailable(f"database {redact_url(url)}: {symptom}") from None
        raise
    return db
