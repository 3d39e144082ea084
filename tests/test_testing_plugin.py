"""The pytest plugin as a user of the package would use it for their own actors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from discord_actor import Actor, FakeClock, RunContext, actor
from discord_actor.testing import (
    ActorHarness,
    ActorRunner,
    Database,
    RetryPolicy,
    ScheduleConfig,
    actor_config,
)


class Digest(Actor):
    async def run(self, ctx: RunContext) -> None:
        seen = ctx.state.get("seen", 0) + ctx.settings["batch"]
        ctx.state["seen"] = seen
        await ctx.post(f"{seen} items so far")


async def test_run_actor_returns_the_recorded_run(run_actor: ActorRunner) -> None:
    run = await run_actor(Digest, state={"seen": 10}, settings={"batch": 5})
    assert run.status == "succeeded"
    assert run.state == {"seen": 15}
    assert run.posted[0]["content"] == "15 items so far"


async def test_fake_clock_steps_a_cron_schedule(database: Database, fake_clock: FakeClock) -> None:
    weekdays_nine = ScheduleConfig(type="cron", timezone="Europe/Berlin", expression="0 9 * * 1-5")
    cfg = actor_config("digest", schedule=weekdays_nine, settings={"batch": 1})
    async with ActorHarness(database, [(Digest, cfg)], clock=fake_clock) as harness:
        # 2026-01-05 is a Monday, 12:00 UTC: the next slot is Tuesday 09:00 Berlin.
        assert await harness.tick() == []
        runs = await harness.tick(timedelta(hours=20))
        assert [r.scheduled_for.isoformat() for r in runs] == ["2026-01-06T08:00:00+00:00"]
        # tick steps through every slot on the way: Wednesday's, Thursday's, Friday's.
        runs = await harness.tick(timedelta(days=3))
        assert [(r.trigger, r.state["seen"]) for r in runs] == [
            ("schedule", 2), ("schedule", 3), ("schedule", 4),
        ]
        # advance jumps, as a server that was down sees it: of the week's missed slots,
        # catch_up = "latest" runs the most recent one once.
        runs = await harness.advance(timedelta(days=7))
        assert [(r.trigger, r.state["seen"]) for r in runs] == [("catch_up", 5)]


# --------------------------------------------------------------------------------------------
# Running an actor again, as a counter, a retry or a circuit breaker test does.


@actor(platform="none")
async def flaky(ctx: RunContext) -> None:
    ctx.state["attempts"] = ctx.state.get("attempts", 0) + 1
    await ctx.checkpoint()  # kept although the run fails
    if ctx.settings.get("fail") or ctx.attempt == 1:
        raise ConnectionError(f"attempt {ctx.attempt} failed")


async def test_run_actor_runs_again_with_its_state(run_actor: ActorRunner) -> None:
    runs = [await run_actor(Digest, settings={"batch": 2}) for _ in range(3)]
    assert [(r.status, r.state) for r in runs] == [
        ("succeeded", {"seen": 2}),
        ("succeeded", {"seen": 4}),
        ("succeeded", {"seen": 6}),
    ]
    assert len({r.id for r in runs}) == 3
    assert [r.posted[0]["content"] for r in runs][-1] == "6 items so far"
    # state= replaces the stored state before the run.
    assert (await run_actor(Digest, state={"seen": 100}, settings={"batch": 1})).state == {
        "seen": 101
    }


async def test_run_actor_runs_the_pending_retry_at_its_time(
    run_actor: ActorRunner, fake_clock: FakeClock
) -> None:
    policy = RetryPolicy(attempts=3, backoff_seconds=30, max_backoff_seconds=300)
    first = await run_actor(flaky, retry=policy)
    started = fake_clock.now()
    second = await run_actor(flaky, retry=policy)
    assert [(r.status, r.trigger, r.attempt) for r in (first, second)] == [
        ("failed", "startup", 1),
        ("succeeded", "retry", 2),
    ]
    assert first.error_message == "attempt 1 failed"
    assert second.state == {"attempts": 2}
    assert fake_clock.now() - started == timedelta(seconds=30)  # moved to the retry's time


async def test_run_actor_shows_the_circuit_breaker(run_actor: ActorRunner) -> None:
    runs = [
        await run_actor(flaky, settings={"fail": True}, max_consecutive_failures=3)
        for _ in range(3)
    ]
    assert [(r.status, r.consecutive_failures, r.paused) for r in runs] == [
        ("failed", 1, False),
        ("failed", 2, False),
        ("failed", 3, True),
    ]
    assert runs[-1].state == {"attempts": 3}
    with pytest.raises(AssertionError, match="did not run: paused"):
        await run_actor(flaky, settings={"fail": True}, max_consecutive_failures=3)


# --------------------------------------------------------------------------------------------
# Tables an actor creates stay in the test.


@actor(platform="none")
async def table_maker(ctx: RunContext) -> None:
    async with ctx.db() as conn:
        await conn.execute("CREATE TABLE items (id int)")  # fails if a table leaked in
        ctx.state["schema"] = await conn.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'items'"
        )


@pytest.mark.parametrize("test_run", [1, 2])
async def test_tables_created_by_actors_stay_in_the_test(
    run_actor: ActorRunner, actor_schema: str, database_url: str, test_run: int
) -> None:
    run = await run_actor(table_maker)
    assert run.status == "succeeded", run.error_message
    assert run.state == {"schema": actor_schema}
    conn = await asyncpg.connect(database_url)
    try:
        in_public = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'items'"
        )
    finally:
        await conn.close()
    assert in_public == 0


# --------------------------------------------------------------------------------------------
# The public API in one place.


def test_discord_actor_testing_exports_what_a_test_needs() -> None:
    import discord_actor.testing as testing

    assert sorted(testing.__all__) == sorted(set(testing.__all__))
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    assert testing.ActorHarness is ActorHarness and testing.ScheduleConfig is ScheduleConfig
    with pytest.raises(AttributeError):
        _ = testing.NoSuchThing


def test_fixtures_are_typed() -> None:
    from discord_actor.testing import plugin
    from discord_actor.testing.fake_discord import fixtures

    returns = {
        "fake_clock": plugin.fake_clock.__wrapped__.__annotations__["return"],  # type: ignore[attr-defined]
        "run_actor": plugin._run_actor.__annotations__["return"],
        "database": plugin._database.__annotations__["return"],
        "fake_discord": fixtures._fake_discord.__annotations__["return"],
        "fake_discord_bot": fixtures._fake_discord_bot.__annotations__["return"],
    }
    assert returns == {
        "fake_clock": "FakeClock",
        "run_actor": "AsyncIterator[ActorRunner]",
        "database": "AsyncIterator[Database]",
        "fake_discord": "AsyncIterator[FakeDiscord]",
        "fake_discord_bot": "AsyncIterator[commands.Bot]",
    }


# --------------------------------------------------------------------------------------------
# The testing page's example, in a fresh project with no pytest configuration.

TESTING_PAGE = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def files_of_the_testing_page() -> dict[str, str]:
    """The files docs/testing.md shows, by the path in their first line."""
    blocks = re.findall(r"```(?:python|toml)\n# (\S+)\n(.*?)```", TESTING_PAGE.read_text(), re.S)
    return {path: body for path, body in blocks}


@pytest.mark.slow
def test_testing_page_example_passes_in_a_fresh_project(tmp_path: Path, database_url: str) -> None:
    files = files_of_the_testing_page()
    assert {"actor_server.toml", "actors/digest.py", "tests/test_digest.py"} <= set(files)
    for path, body in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DISCORD_"))}
    env["DATABASE_URL"] = database_url  # this session's server: no second one to start
    # "pytest tests": the rootdir is tests/, the config is found above it.
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{len(re.findall(r'^async def test_', ''.join(files.values()), re.M))} passed" in (
        p.stdout
    )
    for complaint in (
        "PytestConfigWarning", "PytestUnhandledCoroutineWarning", "asyncio_mode",
        "PytestDeprecationWarning",
    ):
        assert complaint not in p.stdout, p.stdout


# --------------------------------------------------------------------------------------------
# No warning from pytest-asyncio in a project with no pytest configuration.

SCRATCH_TEST = '''\
import asyncio

import pytest_asyncio
from counter import count

from discord_actor.testing import ActorRunner


@pytest_asyncio.fixture(scope="module")
async def module_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def test_counts(run_actor: ActorRunner, module_loop: asyncio.AbstractEventLoop) -> None:
    assert (await run_actor(count)).state == {"n": 1}


async def test_counts_again(run_actor: ActorRunner, module_loop: asyncio.AbstractEventLoop) -> None:
    assert (await run_actor(count)).state == {"n": 1}
'''


def scratch_project(root: Path, pytest_config: str | None = None) -> None:
    """A user's project: actors/, actor_server.toml and a test, and no pytest configuration
    unless ``pytest_config`` (a pytest.ini) is given."""
    (root / "actors").mkdir()
    (root / "actors" / "counter.py").write_text(
        "from discord_actor import RunContext, actor\n\n\n"
        '@actor(platform="none")\n'
        "async def count(ctx: RunContext) -> None:\n"
        '    ctx.state["n"] = ctx.state.get("n", 0) + 1\n'
    )
    (root / "actor_server.toml").write_text('[server]\nactors_dir = "actors"\n')
    (root / "test_counter.py").write_text(SCRATCH_TEST)
    if pytest_config is not None:
        (root / "pytest.ini").write_text(pytest_config)


def run_pytest(root: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DISCORD_"))}
    env["DATABASE_URL"] = database_url  # this session's server: no second one to start
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def test_a_project_without_pytest_configuration_gets_no_asyncio_warning(
    tmp_path: Path, database_url: str
) -> None:
    scratch_project(tmp_path)
    p = run_pytest(tmp_path, database_url, "-W", "error::pytest.PytestDeprecationWarning")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout
    assert '"asyncio_default_fixture_loop_scope" is unset' not in p.stdout + p.stderr
    assert "warning" not in p.stdout.lower(), p.stdout


def test_the_projects_own_fixture_loop_scope_is_kept(tmp_path: Path, database_url: str) -> None:
    # "function" makes the module-scoped async fixture an error: the project's value was used.
    scratch_project(tmp_path, "[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    p = run_pytest(tmp_path, database_url)
    assert "asyncio_default_fixture_loop_scope=function" in p.stdout, p.stdout
    assert "ScopeMismatch" in p.stdout and p.returncode != 0, p.stdout
