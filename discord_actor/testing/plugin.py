"""pytest plugin for testing discord-actor actors (loaded automatically through ``pytest11``).

Fixtures available to any test suite once ``discord-actor`` is installed:

- database: ``database_server_url`` (session), ``database_url``, ``db_schema``, ``db_config``,
  ``database``: one real PostgreSQL per test session, a fresh schema per test.
- ``fake_clock``: a clock that only moves when a test moves it (``ActorHarness.tick``).
- ``run_actor``: runs one actor once with given state and settings, returns the recorded run.
- ``fake_discord``, ``fake_discord_bot``: a wire-level fake of Discord on loopback, and a real
  discord.py bot connected to it (discord_actor.testing.fake_discord).
- ``actor_server_config``: the project's own ``actor_server.toml``, loaded.

Out of the box, with no pytest configuration in the project:

- ``async def`` tests that use one of these fixtures are marked ``asyncio`` for pytest-asyncio
  (its default "strict" mode would otherwise refuse them);
- pytest-asyncio's ``asyncio_default_fixture_loop_scope``, which it warns about on every run
  while it is unset, is set to what unset means (``fill_fixture_loop_scope``);
- the project's ``actors_dir`` is put on ``sys.path``, so tests import actor modules as the
  runtime does. The project's config is ``actor_server.toml`` in the rootdir or a directory
  above it (or above the directory pytest was started in), or the ini option
  ``discord_actor_config``.

Heavy imports (asyncpg, the embedded server) happen inside the fixtures, so merely having the
plugin installed costs other test suites nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import inspect
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from discord_actor.clock import FakeClock
    from discord_actor.config.model import Config, DatabaseConfig
    from discord_actor.db import Database
    from discord_actor.testing.harness import ActorRunner

try:
    import pytest_asyncio
except ImportError:  # the async fixtures below need it; the sync ones do not
    pytest_asyncio = None  # type: ignore[assignment]

_T = TypeVar("_T")

# The wire-level fake Discord: fixtures ``fake_discord`` and ``fake_discord_bot``.
pytest_plugins = ["discord_actor.testing.fake_discord.fixtures"]


# --------------------------------------------------------------------------------------------
# Working in a user's project without configuration.
# --------------------------------------------------------------------------------------------

CONFIG_INI = "discord_actor_config"
#: The fixtures of this plugin; an ``async def`` test using any of them is an asyncio test.
PLUGIN_FIXTURES = frozenset(
    {
        "database_server_url",
        "database_url",
        "db_schema",
        "actor_schema",
        "db_config",
        "database",
        "fake_clock",
        "run_actor",
        "actor_server_config",
        "fake_discord",
        "fake_discord_bot",
    }
)
#: Markers of async test runners other than pytest-asyncio: tests carrying them are left alone.
OTHER_ASYNC_MARKERS = ("anyio", "trio", "curio")

_project_config_key = pytest.StashKey[Path | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        CONFIG_INI,
        "the project's actor_server.toml, relative to the rootdir (default: actor_server.toml "
        "in the rootdir or a directory above it)",
        default="",
    )


def find_project_config(config: pytest.Config) -> Path | None:
    """The project's ``actor_server.toml``: the ini option, else the nearest one found going up
    from the rootdir, then from the directory pytest was started in."""
    configured = str(config.getini(CONFIG_INI) or "")
    if configured:
        path = Path(configured)
        return path if path.is_absolute() else config.rootpath / path
    for start in (config.rootpath, config.invocation_params.dir):
        for directory in (start, *start.parents):
            candidate = directory / "actor_server.toml"
            if candidate.is_file():
                return candidate
    return None


#: pytest-asyncio's option that it warns about while unset (its default is to change).
LOOP_SCOPE_INI = "asyncio_default_fixture_loop_scope"
#: Its value for what unset means: each async fixture's loop lives as long as the fixture.
#: pytest-asyncio knows it from 1.5 on.
FIXTURE_SCOPE = "fixture-scope"


def _knows_fixture_scope() -> bool:
    try:
        version = importlib.metadata.version("pytest-asyncio")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2]) >= (1, 5)


def fill_fixture_loop_scope(config: pytest.Config) -> None:
    """Set ``asyncio_default_fixture_loop_scope`` to ``"fixture-scope"`` where the project does
    not set it, so that a project with no pytest configuration runs without pytest-asyncio's
    deprecation warning and with exactly the behaviour it had.

    A value the project sets is kept. With a pytest-asyncio older than 1.5, which has no value
    meaning "as unset", the option is left alone (and pytest-asyncio warns): "function" would
    make the project's own module- or session-scoped async fixtures fail. pytest has no public
    way for a plugin to give another plugin's option a value; ``getini`` answers from its cache,
    so the value goes there (tests/test_testing_plugin.py runs a project to check it).
    """
    if pytest_asyncio is None or not _knows_fixture_scope():
        return
    try:
        if config.getini(LOOP_SCOPE_INI):
            return  # the project's own
    except ValueError:  # not registered: pytest-asyncio is disabled (-p no:asyncio)
        return
    cache = getattr(config, "_inicache", None)
    if isinstance(cache, dict):
        cache[LOOP_SCOPE_INI] = FIXTURE_SCOPE


@pytest.hookimpl(tryfirst=True)  # before pytest-asyncio's, which reads the loop scope
def pytest_configure(config: pytest.Config) -> None:
    """Fill in pytest-asyncio's loop scope, and put the project's ``actors_dir`` on
    ``sys.path`` before test modules are imported."""
    fill_fixture_loop_scope(config)
    path = find_project_config(config)
    config.stash[_project_config_key] = path
    if path is None:
        return
    from discord_actor.config.model import ConfigError
    from discord_actor.config.reader import load_config
    from discord_actor.plugins import make_importable

    try:
        actors_dir = load_config(path).server.actors_dir
    except ConfigError as e:
        # Only tests that need the configuration fail (actor_server_config says why).
        warnings.warn(
            pytest.PytestConfigWarning(
                f"discord-actor: {path} has problems, so its actors_dir is not on sys.path:\n"
                + "\n".join(str(p) for p in e.problems)
            ),
            stacklevel=1,
        )
        return
    make_importable(actors_dir)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Mark ``async def`` tests that use this plugin's fixtures for pytest-asyncio.

    pytest-asyncio's default (strict) mode only runs marked tests; without this, a project with
    no pytest configuration gets "async def functions are not natively supported". Running
    before the test items are built, the mark is seen as if the user had written it.
    """
    if pytest_asyncio is None or not inspect.iscoroutinefunction(metafunc.function):
        return
    if PLUGIN_FIXTURES.isdisjoint(metafunc.fixturenames):
        return
    definition = metafunc.definition
    if any(definition.get_closest_marker(m) for m in ("asyncio", *OTHER_ASYNC_MARKERS)):
        return
    definition.add_marker(pytest.mark.asyncio)
    function = getattr(metafunc.function, "__func__", metafunc.function)
    pytest.mark.asyncio(function)  # stored on the function: the items built from it see it


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


def create_schema(url: str, schema: str) -> None:
    """``CREATE SCHEMA`` from a sync context."""
    import asyncpg

    from discord_actor.db.migrations import quote_ident

    async def create() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        finally:
            await conn.close()

    _run_in_thread(create())


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
def actor_schema(database_url: str, db_schema: str) -> Iterator[str]:
    """A fresh, created schema that comes first on the ``search_path`` of this test's database
    connections: what actors create through ``ctx.db()`` (``CREATE TABLE items ...``) lands
    here instead of ``public``, and is dropped with CASCADE after the test.

    It is not ``db_schema`` so that an actor's table may be called ``runs`` or ``tasks``
    without meeting discord-actor's own, as in production.
    """
    schema = f"{db_schema}_actors"
    create_schema(database_url, schema)
    yield schema
    drop_schema(database_url, schema)


def with_search_path(url: str, *schemas: str) -> str:
    """``url`` whose connections start with ``search_path`` set to ``schemas`` (then public).

    asyncpg sends unknown query parameters as server settings at connect time, so the setting
    survives the ``RESET ALL`` a connection gets when an actor gives it back.
    """
    from discord_actor.db.migrations import quote_ident

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    path = ", ".join([*(quote_ident(s) for s in schemas), "public"])
    query.append(("search_path", path))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def db_config(database_url: str, db_schema: str, actor_schema: str) -> DatabaseConfig:
    """A ``DatabaseConfig`` for the test database and this test's schema.

    Its connections have ``actor_schema`` first on their ``search_path``. Small pool (1..4) and
    short timeouts so a hung or exhausted pool fails the test quickly. Use
    ``dataclasses.replace(db_config, ...)`` to change a setting.
    """
    from discord_actor.config.model import DatabaseConfig

    return DatabaseConfig(
        url=with_search_path(database_url, actor_schema),
        schema=db_schema,
        min_pool_size=1,
        max_pool_size=4,
        acquire_timeout_seconds=5.0,
        connect_timeout_seconds=5.0,
        idle_timeout_seconds=30.0,
        command_timeout_seconds=30.0,
    )


def _async_fixture(function: Any, name: str) -> Any:
    """``function`` as an async fixture, or, without pytest-asyncio, one that says what to do."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(function, name=name)

    def unavailable() -> None:
        pytest.fail(f"the {name!r} fixture needs pytest-asyncio: pip install pytest-asyncio")

    return pytest.fixture(unavailable, name=name)


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


database = _async_fixture(_database, "database")


# --------------------------------------------------------------------------------------------
# Time and actors: a fake clock, and running one actor once.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_clock() -> FakeClock:
    """A ``FakeClock`` at Monday 2026-01-05 12:00 UTC, which moves only when told to.

    Pass it to ``ActorHarness(database, actors, clock=fake_clock)``: ``harness.tick(span)``
    steps it through every slot and retry in the span, ``harness.advance(span)`` jumps. The
    ``run_actor`` fixture uses it too.
    """
    from datetime import UTC, datetime

    from discord_actor.clock import FakeClock

    return FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def actor_server_config(pytestconfig: pytest.Config) -> Config:
    """The project's ``actor_server.toml``, loaded (see ``find_project_config``).

    Fails the test with the file's problems, or when the project has none.
    """
    from discord_actor.config.model import ConfigError
    from discord_actor.config.reader import load_config

    path = pytestconfig.stash.get(_project_config_key, None)
    if path is None:
        pytest.fail(
            "no actor_server.toml in the rootdir or above it; set the ini option "
            f"{CONFIG_INI} to its path",
            pytrace=False,
        )
    try:
        return load_config(path)
    except ConfigError as e:
        pytest.fail("\n".join(str(p) for p in e.problems), pytrace=False)


async def _run_actor(
    request: pytest.FixtureRequest, database: Database, fake_clock: FakeClock
) -> AsyncIterator[ActorRunner]:
    """``await run_actor(MyActor, state={...}, settings={...})`` runs an actor on the test
    database and returns the recorded run (status, error, posts and the stored state after).

    Call it again to run the actor again, its stored state carried over: a pending retry runs
    (the fake clock moves to its time), else a manual trigger. ``run_actor("name")`` runs the
    actor configured under that name in the project's ``actor_server.toml``.
    """
    from discord_actor.testing.harness import ActorRunner

    def project() -> Config:
        config: Config = request.getfixturevalue("actor_server_config")
        return config

    runner = ActorRunner(database, clock=fake_clock, project=project)
    try:
        yield runner
    finally:
        await runner.close()


run_actor = _async_fixture(_run_actor, "run_actor")
