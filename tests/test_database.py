"""The database layer on a real PostgreSQL: migrations, advisory lock, embedded server, pool."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from discord_actor.config import DatabaseConfig
from discord_actor.db import (
    Database,
    DatabaseUnavailable,
    EmbeddedPostgres,
    create_pool,
    migrate,
    open_database,
    quote_ident,
)
from discord_actor.db.migrations import available_migrations, lock_key

ALL_MIGRATIONS = [m.label for m in available_migrations()]
TABLES = {"instances", "tasks", "runs", "retries", "schema_migrations", "keyed_counts",
          "keyed_owner_counts", "keyed_count_changes", "keyed_owner_count_changes",
          "rate_budgets"}


async def _tables(conn: asyncpg.Connection, schema: str) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {r["tablename"] for r in rows}


async def test_migrations_apply_once_and_are_idempotent(database: Database) -> None:
    assert database.applied_migrations == ALL_MIGRATIONS == [
        "0001_initial", "0002_due_indexes", "0003_finish_run", "0004_setup_errors",
        "0005_keyed_schedules", "0006_keyed_counters", "0007_rate_budgets",
        "0008_instance_notifications", "0009_own_due_index"]
    async with database.pool.acquire() as conn:
        assert await _tables(conn, database.schema) == TABLES
        assert await migrate(conn, database.schema) == []
        assert await migrate(conn, database.schema) == []
        table = f"{quote_ident(database.schema)}.schema_migrations"
        rows = await conn.fetch(f"SELECT version, name, applied_at FROM {table}")
        # The advisory lock is released: another session can take it at once.
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(database.schema))
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(database.schema))
    assert [(r["version"], r["name"]) for r in rows] == [
            (1, "initial"), (2, "due_indexes"), (3, "finish_run"), (4, "setup_errors"),
            (5, "keyed_schedules"), (6, "keyed_counters"), (7, "rate_budgets"),
            (8, "instance_notifications"), (9, "own_due_index")]
    assert rows[0]["applied_at"] is not None


async def test_concurrent_migrations_apply_once(db_config: DatabaseConfig) -> None:
    url, schema = db_config.url, db_config.schema
    holder, c1, c2 = [await asyncpg.connect(url) for _ in range(3)]
    try:
        # Hold the lock so both migrations provably queue on it, then let them race.
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(schema))
        both = asyncio.gather(migrate(c1, schema), migrate(c2, schema))
        waiting = 0
        for _ in range(500):
            waiting = await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND pid = ANY($1::int[])",
                [c1.get_server_pid(), c2.get_server_pid()],
            )
            if waiting == 2:
                break
            await asyncio.sleep(0.01)
        assert waiting == 2
        await holder.execute("SELECT pg_advisory_unlock($1)", lock_key(schema))
        results = await asyncio.wait_for(both, 30)
        assert sorted(results) == [[], ALL_MIGRATIONS]
        count = await holder.fetchval(
            f"SELECT count(*) FROM {quote_ident(schema)}.schema_migrations"
        )
        assert count == len(ALL_MIGRATIONS)
    finally:
        for conn in (holder, c1, c2):
            await conn.close()


# What a schema is made of, its name left out: columns, indexes, constraints, functions.
CATALOG_SQL = """
SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, is_nullable,
              column_default) AS part
FROM information_schema.columns WHERE table_schema = $1
UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = $1
UNION ALL SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = $1
UNION ALL SELECT 'function ' || pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
"""


async def _catalog(conn: asyncpg.Connection, schema: str) -> list[str]:
    return sorted(r["part"].replace(schema, "S") for r in await conn.fetch(CATALOG_SQL, schema))


# finish_run as the releases before sql/functions.sql left it, by the last migration they had
# applied (its arguments, and the columns it returned); None: it did not exist yet.
FINISH_RUN_ARGUMENTS = (
    "p_run_id bigint, p_status text, p_error_type text, p_error_message text,"
    " p_error_traceback text, p_posted jsonb, p_state jsonb, p_retry_at timestamptz,"
    " p_counts_as_failure boolean, p_max_failures integer"
)
FINISH_RUN_0003 = (
    "id bigint, actor text, enabled boolean, paused boolean, max_instances integer,"
    " next_run timestamptz, due_at timestamptz, manual_at timestamptz, paused_reason text,"
    " consecutive_failures integer, was_paused boolean, scheduled_for timestamptz,"
    " attempt integer, retry_slot timestamptz, retry_attempt integer, retry_at timestamptz"
)
EARLIER_RELEASES = {
    2: None,
    3: FINISH_RUN_0003,
    4: FINISH_RUN_0003,
    5: FINISH_RUN_0003 + ", key text, keyed_schedule text",
}


@pytest.mark.parametrize("version", sorted(EARLIER_RELEASES))
async def test_a_database_of_an_earlier_release_migrates_to_a_new_ones_schema(
    database: Database, version: int, tmp_path: Path
) -> None:
    """A database that an earlier release migrated up to ``version`` (with the finish_run it
    created then) starts with this code: the rest is applied, and its schema, functions
    included, is the one a new database gets. It fails when sql/functions.sql changes what a
    function takes or returns without a migration that drops the old one first."""
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for m in available_migrations()[:version]:
        shutil.copy(m.path, earlier)
    schema = f"{database.schema}_v{version}"
    async with database.pool.acquire() as conn:
        try:
            await migrate(conn, schema, directory=earlier, functions=None)
            returned = EARLIER_RELEASES[version]
            if returned is not None:  # its body does not matter here, only what it looks like
                await conn.execute(
                    f"CREATE FUNCTION {quote_ident(schema)}.finish_run({FINISH_RUN_ARGUMENTS})"
                    f" RETURNS TABLE ({returned}) LANGUAGE plpgsql AS $$ BEGIN END $$"
                )
            assert await migrate(conn, schema) == ALL_MIGRATIONS[version:]
            assert await _catalog(conn, schema) == await _catalog(conn, database.schema)
        finally:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


async def test_schema_name_is_quoted(db_config: DatabaseConfig) -> None:
    schema = db_config.schema + '_Odd "Name"'
    conn = await asyncpg.connect(db_config.url)
    try:
        assert await migrate(conn, schema) == ALL_MIGRATIONS
        assert await _tables(conn, schema) == TABLES
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        await conn.close()


async def test_pool_settings_are_applied(db_config: DatabaseConfig) -> None:
    cfg = dataclasses.replace(
        db_config, min_pool_size=2, max_pool_size=3, command_timeout_seconds=0.2
    )
    pool = await create_pool(cfg, cfg.url)
    try:
        assert (pool.get_min_size(), pool.get_max_size(), pool.get_size()) == (2, 3, 2)
        assert await pool.fetchval("SHOW application_name") == "discord-actor"
        with pytest.raises(TimeoutError):
            await pool.execute("SELECT pg_sleep(5)")
    finally:
        await pool.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_database_is_retried_then_reported() -> None:
    port = _closed_port()
    url = f"postgresql://bot:s3cret-pw@127.0.0.1:{port}/actors"
    cfg = DatabaseConfig(url=url, connect_timeout_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        await open_database(cfg, environ={})
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert 1.4 <= elapsed < 5, elapsed
    assert f"postgresql://bot:***@127.0.0.1:{port}/actors" in message
    assert "s3cret-pw" not in message
    assert "connect_timeout_seconds = 1.5" in message
    attempts = int(message.split("gave up after ")[1].split()[0])
    assert attempts >= 3  # backoff 0.1, 0.2, 0.4, 0.8 s: retried, not hammered
    assert attempts <= 10


async def test_permanent_connection_error_is_reported_at_once(database_url: str) -> None:
    url = database_url.replace("/postgres?", "/no_such_database?", 1)
    if url == database_url:
        pytest.skip("database_url has an unexpected shape")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="no_such_database"):
        await create_pool(DatabaseConfig(url=url, connect_timeout_seconds=5), url)
    assert time.monotonic() - started < 2


_ATTACH_AND_EXIT = """
import sys
from pathlib import Path
from discord_actor.db.server import EmbeddedPostgres

server = EmbeddedPostgres()
server.start(Path(sys.argv[1]))
if sys.argv[2] == "stop":
    server.stop()
# else: exit while attached; the library's atexit hook detaches
"""


async def test_embedded_server_keeps_data_and_is_shared_between_processes() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="discord_actor-persist-"))
    data_dir = tmp / "nested" / "pgdata"  # parents are created
    cfg = DatabaseConfig(url="", data_dir=data_dir, schema="persist", connect_timeout_seconds=10)
    try:
        db = await open_database(cfg, environ={})
        try:
            assert db.server is not None and db.url.startswith("postgresql://")
            await db.pool.execute("CREATE TABLE persist.kept (v text)")
            await db.pool.execute("INSERT INTO persist.kept VALUES ('survives')")
            # A second process (a CLI command) attaching and leaving must not stop our server.
            for how in ("stop", "exit"):
                child = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-c", _ATTACH_AND_EXIT, str(data_dir), how],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert child.returncode == 0, child.stderr[-3000:]
                assert await db.pool.fetchval("SELECT count(*) FROM persist.kept") == 1
        finally:
            await db.close()
        assert not (data_dir / "postmaster.pid").exists()  # really stopped

        db = await open_database(cfg, environ={})
        try:
            assert db.applied_migrations == []
            assert await db.pool.fetchval("SELECT v FROM persist.kept") == "survives"
        finally:
            await db.close()
        assert not (data_dir / "postmaster.pid").exists()
    finally:
        # Should the test fail half-way, do not leave a server behind.
        if (data_dir / "postmaster.pid").exists():
            server = EmbeddedPostgres()
            server.start(data_dir)
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_pid_file_of_a_single_user_backend_is_understood(tmp_path: Path) -> None:
    """PostgreSQL's single-user mode writes its pid negated into postmaster.pid; a start that
    finds such a file must read it, not fail on it (here the pid is this test's own process,
    which is not PostgreSQL, so the file is stale and removed)."""
    from discord_actor.db.server import _drop_stale_postmaster_pid

    (tmp_path / "postmaster.pid").write_text(f"-{os.getpid()}\n{tmp_path}\n")
    _drop_stale_postmaster_pid(tmp_path)
    assert not (tmp_path / "postmaster.pid").exists()


async def test_pooler_setting_does_not_stop_the_embedded_server_from_listening(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # pooler = "transaction" left in a file whose url is empty: the embedded server has no
    # pooler, so the runtime says so and listens as usual instead of polling.
    cfg = DatabaseConfig(url="", data_dir=tmp_path / "pgdata", schema="pooled",
                         pooler="transaction", statement_cache_size=0)
    with caplog.at_level(logging.WARNING, logger="discord_actor.db"):
        db = await open_database(cfg, environ={}, announce=True)
    try:
        assert db.listen_url == db.url
        assert "does not apply to the embedded server" in caplog.text
    finally:
        await db.close()
