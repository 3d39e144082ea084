"""pytest plugin for testing discord-actor actors (loaded automatically through ``pytest11``).

Fixtures available to any test suite once ``discord-actor`` is installed:

- database: ``database_server_url`` (session), ``database_url``, ``db_schema``, ``db_config``,
  ``database``: one real PostgreSQL per test session, a fresh schema per test.
- ``fake_clock``: a clock that steps schedules without sleeping.
- ``run_actor``: runs one actor once with given state and settings, returns the recorded run.
- ``fake_discord``, ``fake_discord_bot``: a wire-level fake of Discord on loopback, and a real
  discord.py bot connected to it (discord_actor.testing.fake_discord).

Heavy imports (asyncpg, the embedded server) happen inside the fixtures, so merely having the
plugin installed costs other test suites nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from discord_actor.config import DatabaseConfig
    from discord_actor.db import Database

try:
    import pytest_asyncio
except ImportError:  # the async fixtures below need it; the sync ones do not
    pytest_asyncio = None  # type: ignore[assignment]

_T = TypeVar("_T")

# The wire-level fake Discord: fixtures ``fake_discord`` and ``fake_discord_bot``.
pytest_plugins = ["discord_actor.testing.fake_discord.fixtures"]


# --------------------------------------------------------------------------------------------
# Database: one server per session, one schema per test.
# --------------------------------------------------------------------------------------------

TEST_DIR_PREFIX = "discord_actor-test-"


def _run_in_thread(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on a private event loop in a worker thread.

    Sync fixtures use this so they neither need pytest-asyncio nor disturb the loop it manages.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def reap_stale_test_servers(root: Path | None = None) -> None:
    """Stop and delete embedded servers left by test sessions that were killed (kill -9)."""
    import psutil

    from discord_actor.db.server import EmbeddedPostgres

    root = Path(tempfile.gettempdir()) if root is None else root
    for path in root.glob(f"{TEST_DIR_PREFIX}*"):
        match = re.match(rf"{re.escape(TEST_DIR_PREFIX)}(\d+)-", path.name)
        if match is None or psutil.pid_exists(int(match.group(1))):
            continue
        try:
            if (path / "pgdata" / "postmaster.pid").exists():
                server = EmbeddedPostgres()
                server.start(path / "pgdata")  # attach (dead owners are dropped) ...
                server.stop()  # ... and detach as the last user: the server stops
            shutil.rmtree(path, ignore_errors=True)
        except Exception as exc:  # never fail a session over someone else's leftovers
            warnings.warn(f"could not clean up {path}: {exc}", stacklevel=1)


def start_test_server() -> tuple[str, Any]:
    """Start an embedded server in a fresh temporary directory; return (url, stop function)."""
    from discord_actor.db.server import EmbeddedPostgres

    reap_stale_test_servers()
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEST_DIR_PREFIX}{os.getpid()}-"))
    server = EmbeddedPostgres()

    def stop() -> None:
        try:
            server.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    try:
        url = server.start(tmp / "pgdata")
    except BaseException:
        stop()
        raise
    return url, stop


def unique_schema_name(test_name: str) -> str:
    """A schema name unique to one test, readable in ``\\dn``: ``t_<test name>_<random>``."""
    slug = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[:40]
    return f"t_{slug}_{secrets.token_hex(4)}"


def drop_schema(url: str, schema: str, *, lock_timeout_seconds: float = 10.0) -> None:
    """``DROP SCHEMA ... CASCADE`` from a sync context; clear error if connections still hold it."""
    import asyncpg

    from discord_actor.db.migrations import quote_ident

    async def drop() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(f"SET lock_timeout = '{int(lock_timeout_seconds * 1000)}ms'")
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        except asyncpg.LockNotAvailableError:
            raise RuntimeError(
                f"could not drop test schema {schema!r} within {lock_timeout_seconds:g} s: "
                "a connection opened by the test still holds locks in it (close pools and "
                "connections before the test ends)"
            ) from None
        finally:
            await conn.close()

    _run_in_thread(drop())


@pytest.fixture(scope="session")
def database_server_url() -> Iterator[str]:
    """URL of the PostgreSQL server shared by the whole test session.

    ``DATABASE_URL`` if set (only per-test schemas are created and dropped there); otherwise one
    embedded PostgreSQL started in a temporary directory on first use, stopped and deleted at
    the end of the session.
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    url, stop = start_test_server()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def database_url(database_server_url: str) -> str:
    """URL of the test database (see ``database_server_url``); override it to use another."""
    return database_server_url


@pytest.fixture
def db_schema(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """A fresh schema name for this test (not created yet); dropped with CASCADE afterwards."""
    schema = unique_schema_name(request.node.name)
    yield schema
    drop_schema(database_url, schema)


@pytest.fixture
def db_config(database_url: str, db_schema: str) -> DatabaseConfig:
    """A ``DatabaseConfig`` for the test database and this test's schema.

    Small pool (1..4) and short timeouts so a hung or exhausted pool fails the test quickly.
    Use ``dataclasses.replace(db_config, ...)`` to change a setting.
    """
    from discord_actor.config import DatabaseConfig

    return DatabaseConfig(
        url=database_url,
        schema=db_schema,
        min_pool_size=1,
        max_pool_size=4,
        acquire_timeout_seconds=5.0,
        connect_timeout_seconds=5.0,
        idle_timeout_seconds=30.0,
        command_timeout_seconds=30.0,
    )


async def _database(db_config: DatabaseConfig) -> AsyncIterator[Database]:
    """An open ``Database`` on this test's schema, migrated; closed after the test.

    Runs on the test's event loop (pytest-asyncio), so use it from ``async def`` tests.
    """
    from discord_actor.db import open_database

    db = await open_database(db_config)
    try:
        yield db
    finally:
        await db.close()


if pytest_asyncio is not None:
    database = pytest_asyncio.fixture(_database, name="database")
else:

    @pytest.fixture(name="database")
    def _database_unavailable() -> None:
        """Needs pytest-asyncio (``pip install pytest-asyncio``)."""
        pytest.fail("the 'database' fixture needs pytest-asyncio: pip install pytest-asyncio")


# --------------------------------------------------------------------------------------------
# Time and actors: a fake clock, and running one actor once.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_clock() -> Any:
    """A ``FakeClock`` at 2026-01-05 12:00 UTC; ``advance()`` steps schedules without sleeping.

    Pass it to ``ActorHarness(database, actors, clock=fake_clock)`` (discord_actor.testing.harness).
    """
    from datetime import UTC, datetime

    from discord_actor.clock import FakeClock

    return FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))


@pytest.fixture
def run_actor(database: Database) -> Any:
    """``await run_actor(MyActor, state={...}, settings={...})`` runs an actor once on the test
    database and returns the recorded run (status, error, posts and the stored state after)."""
    from discord_actor.testing.harness import run_actor_once

    async def run(actor: Any, **kwargs: Any) -> Any:
        return await run_actor_once(database, actor, **kwargs)

    return run
