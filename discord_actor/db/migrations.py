"""Versioned ``.sql`` migrations, applied into the configured schema.

Files live in ``discord_actor/db/migrations/`` and are named ``NNNN_name.sql``. Each is applied
once, in version order, in a savepoint of its own with ``search_path`` set to the schema, and
recorded in ``<schema>.schema_migrations``. Then the schema's server-side functions
(``sql/functions.sql``) are applied with ``CREATE OR REPLACE``, at every start: their one
definition is that file, not a copy in each migration that changes them. Everything happens in
one transaction under a transaction advisory lock keyed on the schema name, so processes
starting together do not race (the second one waits and then finds nothing left to do), also
behind a pooler that lends a server connection per transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from ..errors import DiscordActorError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
FUNCTIONS_FILE = Path(__file__).with_name("sql") / "functions.sql"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(DiscordActorError):
    """A migration could not be applied, or the database is newer than this code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # e.g. "initial"
    path: Path

    @property
    def label(self) -> str:
        """File stem, e.g. ``0001_initial``: what ``migrate()`` reports."""
        return self.path.stem


def quote_ident(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier (schema names come from the user's config)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid PostgreSQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str) -> int:
    """The advisory lock key (a signed 64-bit int) guarding migrations of ``schema``."""
    digest = hashlib.sha256(f"discord_actor.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files shipped with the package, in version order."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} also used by {found[version].path}")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


async def applied_versions(conn: asyncpg.Connection, schema: str) -> list[int]:
    """Versions recorded in ``schema``; empty if the schema or its table does not exist yet."""
    table = await conn.fetchval(
        "SELECT to_regclass($1)", f"{quote_ident(schema)}.schema_migrations"
    )
    if table is None:
        return []
    rows = await conn.fetch(
        f"SELECT version FROM {quote_ident(schema)}.schema_migrations ORDER BY version"
    )
    return [int(r["version"]) for r in rows]


async def migrate(
    conn: asyncpg.Connection,
    schema: str,
    *,
    directory: Path = MIGRATIONS_DIR,
    functions: Path | None = FUNCTIONS_FILE,
) -> list[str]:
    """Bring ``schema`` up to date; return the migrations applied by this call (``0001_initial``).

    ``functions`` (None: none) is applied after the migrations, whether any was applied or not.
    ``conn`` must not be inside a transaction. Safe to run from several processes at once, and
    through a transaction-mode pooler: everything happens in one transaction that holds a
    transaction-level advisory lock (a session lock and its unlock could land on different
    server connections there), so a failed migration leaves the schema as it was.
    """
    migrations = available_migrations(directory)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        applied_now = await _migrate_locked(conn, schema, migrations)
        if functions is not None:
            await _apply(conn, schema, functions)
    return applied_now


async def _migrate_locked(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration]
) -> list[str]:
    q = quote_ident(schema)
    applied_now: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q}.schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        done = set(await applied_versions(conn, schema))
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"preparing schema {schema!r} for migrations failed: {type(exc).__name__}: {exc}"
        ) from exc
    known = {m.version for m in migrations}
    newer = sorted(done - known)
    if newer:
        raise MigrationError(
            f"schema {schema!r} has migrations {newer} that this version of discord-actor "
            f"does not know (it knows up to {max(known, default=0)}): upgrade discord-actor"
        )
    for m in migrations:
        if m.version in done:
            continue
        await _apply(
            conn,
            schema,
            m.path,
            f"INSERT INTO {q}.schema_migrations (version, name) VALUES ($1, $2)",
            m.version,
            m.name,
        )
        applied_now.append(m.label)
    return applied_now


def _read(path: Path) -> str:
    """A migration's (or the functions') SQL: a small file, read once at a start."""
    return path.read_text(encoding="utf-8")


async def _apply(
    conn: asyncpg.Connection, schema: str, path: Path, then: str | None = None, *args: object
) -> None:
    """Run the file ``path`` in one transaction with ``search_path`` set to ``schema``, and
    ``then`` (with ``args``) in the same transaction."""
    sql = _read(path)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
            await conn.execute(sql)
            if then is not None:
                await conn.execute(then, *args)
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            f"applying {path.name} to schema {schema!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
