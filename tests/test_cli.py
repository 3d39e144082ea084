"""The ``discord-actor`` command, run as a user runs it: one subprocess per command.

Each subprocess costs about half a second of imports, so the tests chain the commands of one
story (status, then pause, then trigger...) instead of starting from scratch for each check.
The database is the test session's PostgreSQL, with a fresh schema per test.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from discord_actor import Actor, RunContext
from discord_actor.clock import FakeClock
from discord_actor.config import load_config, redact_url
from discord_actor.db import open_database
from discord_actor.runtime import Runtime
from discord_actor.testing import RecordingPlatform
from discord_actor.testing.harness import ActorHarness, load

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # the fake clock of the populated database

COUNTER_PY = '''
from discord_actor import Actor, RunContext


class Counter(Actor):
    async def run(self, ctx: RunContext) -> None:
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        await ctx.post(f"tick {ctx.state['count']}")
'''

FAILING_PY = '''
from discord_actor import RunContext, actor


@actor
async def failing(ctx: RunContext) -> None:
    raise RuntimeError("boom")
'''

SLEEPER_PY = '''
import asyncio

from discord_actor import RunContext, actor


@actor
async def sleeper(ctx: RunContext) -> None:
    await ctx.post("sleeping")
    await asyncio.sleep(600)
'''


# --------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


CLI = [sys.executable, "-m", "discord_actor.cli"]


def cli(*args: str, cwd: Path, timeout: float = 60) -> Result:
    """Run ``discord-actor ARGS`` in ``cwd``; no command a user runs may print a traceback."""
    p = subprocess.run([*CLI, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert "Traceback" not in p.stderr, p.stderr
    return Result(p.returncode, p.stdout, p.stderr)


def toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_project(root: Path, database: str, actors: str, *, server: str = "",
                  modules: dict[str, str] | None = None) -> Path:
    """An ``actor_server.toml`` (with the given [database] body and actors) and its modules."""
    (root / "actors").mkdir(parents=True, exist_ok=True)
    for name, code in (modules or {}).items():
        (root / "actors" / f"{name}.py").write_text(code)
    path = root / "actor_server.toml"
    path.write_text(f'[server]\nactors_dir = "actors"\n{server}\n[database]\n{database}\n'
                    f"{actors}")
    return path


def db_section(url: str, schema: str) -> str:
    return f"url = {toml_str(url)}\nschema = {toml_str(schema)}\nconnect_timeout_seconds = 5\n"


STORY_ACTORS = """
[[actors]]
name = "counter"
module = "counter"
platform = "console"
schedule = { type = "interval", seconds = 10 }

[[actors]]
name = "failing"
module = "failing"
platform = "none"
schedule = { type = "interval", seconds = 3600 }

[[actors]]
name = "berlin"
module = "counter"
platform = "console"
schedule = { type = "cron", expression = "0 9 * * *", timezone = "Europe/Berlin" }
"""


@pytest.fixture
def project(tmp_path: Path, database_url: str, db_schema: str) -> Path:
    """A project on this test's schema: counter (10 s), failing (hourly), berlin (cron)."""
    write_project(tmp_path, db_section(database_url, db_schema), STORY_ACTORS,
                  modules={"counter": COUNTER_PY, "failing": FAILING_PY})
    return tmp_path


class Counter(Actor):
    async def run(self, ctx: RunContext) -> None:
        ctx.state["count"] = ctx.state.get("count", 0) + 1


class Failing(Actor):
    async def run(self, ctx: RunContext) -> None:
        raise RuntimeError("boom")


def populate(project: Path, pairs: Sequence[tuple[type[Actor], str]] = (
        (Counter, "counter"), (Failing, "failing"))) -> list[str]:
    """Run these actors once at START, in process, as a server would have; their statuses."""
    config = load_config(project / "actor_server.toml")

    async def go() -> list[str]:
        database = await open_database(config.database)
        try:
            actors = [(impl, config.actor(name)) for impl, name in pairs]
            async with ActorHarness(database, actors, clock=FakeClock(START)) as harness:
                return sorted(r.status for r in await harness.tick())
        finally:
            await database.close()

    return asyncio.run(go())


def query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


# --------------------------------------------------------------------------------------------
# Without a database


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["history", "--limit", "0"], "must be at least 1"),
        (["next", "counter", "--after", "yesterday"], "not an ISO 8601 date-time"),
        (["status", "--config", "missing.toml"], "missing.toml: configuration file not found"),
    ],
)
def test_usage_and_configuration_errors_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    r = cli(*args, cwd=tmp_path)
    assert r.code == 2
    assert message in r.err


# The commands that print no data, only what they did: the rest take --json.
WITHOUT_JSON = {
    "init": "says which files it wrote",
    "run": "serves until stopped; its log has --log-format json",
    "sandbox": "an interactive console: the lines a person reads of what the bot does",
    "pause": "says what it did", "resume": "says what it did", "trigger": "says what it did",
    "schedules remove": "says what it did",
    "config show": "prints TOML that load_config reads again",
}


def test_every_command_that_prints_data_takes_json() -> None:
    from discord_actor.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
        found: dict[str, Any] = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found |= commands(sub, f"{prefix}{name} ") or {f"{prefix}{name}": sub}
        return found

    every = commands(build_parser())
    assert set(WITHOUT_JSON) <= set(every)
    for name, parser in every.items():
        takes_json = any("--json" in a.option_strings for a in parser._actions)
        assert takes_json == (name not in WITHOUT_JSON), name
    assert {"check", "prune", "migrate", "schedules add", "status", "history", "next",
            "schedules list"} <= {n for n in every if n not in WITHOUT_JSON}


def test_init_writes_a_starter_that_checks_and_refuses_to_overwrite(tmp_path: Path) -> None:
    r = cli("init", "--config", "proj/actor_server.toml", cwd=tmp_path)  # DIR from --config
    assert r.code == 0, r.err
    config = tmp_path / "proj" / "actor_server.toml"
    assert config.is_file() and (tmp_path / "proj" / "actors" / "hello.py").is_file()
    config.write_text(config.read_text() + "\n# mine\n")

    r = cli("init", "proj", cwd=tmp_path)
    assert r.code == 2  # a usage error: the user asked to overwrite without --force
    assert "actor_server.toml already exists" in r.err and "--force" in r.err
    assert config.read_text().endswith("# mine\n")  # nothing was overwritten

    r = cli("init", "proj", "--force", cwd=tmp_path)
    assert r.code == 0 and "# mine" not in config.read_text()

    # The starter is valid and runnable: check loads its actor and shows three slots.
    r = cli("check", "--config", "proj/actor_server.toml", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "hello" in r.out and "every 10 s" in r.out
    (slots,) = [line for line in r.out.splitlines() if line.strip().startswith("next:")]
    assert len(slots.split(", ")) == 3
    times = [datetime.fromisoformat(s) for s in slots.split(": ", 1)[1].split(", ")]
    assert all(t.tzinfo for t in times)
    # A new interval actor runs when it is created, then every 10 s.
    assert abs((times[0] - datetime.now(UTC)).total_seconds()) < 5
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [10, 10]


CONFIG_PROBLEMS = """
[[actors]]
name = "a"
module = "a"
shedule = { type = "interval", seconds = 5 }

[[actors]]
name = "b"
module = "b"
schedule = { type = "cron", expression = "0 25 * * *", timezone = "Mars/Olympus" }
"""

PLUGIN_PROBLEMS = """
[[actors]]
name = "ghost"
module = "no_such_module"
schedule = { type = "immediate" }

[[actors]]
name = "broken"
module = "broken"
schedule = { type = "immediate" }

[[actors]]
name = "empty"
module = "empty"
schedule = { type = "immediate" }
"""


@pytest.mark.parametrize(
    ("actors", "expected"),
    [
        (CONFIG_PROBLEMS, ["actors[0].shedule: unknown key; did you mean 'schedule'?",
                           "actors[1].schedule.expression: bad hour field '25'",
                           "actors[1].schedule.timezone"]),
        (PLUGIN_PROBLEMS, ["'ghost'", "no_such_module", "'broken'", "SyntaxError",
                           "'empty'", "defines no actor"]),
    ],
    ids=["config", "plugins"],
)
def test_check_reports_every_problem_at_once(
    tmp_path: Path, actors: str, expected: list[str]
) -> None:
    write_project(tmp_path, 'url = "postgresql://nobody@127.0.0.1:1/none"', actors,
                  modules={"broken": "x = 1\ndef oops(:\n", "empty": "X = 1\n"})
    r = cli("check", cwd=tmp_path)
    assert r.code == 2
    problems = r.err.strip().splitlines()
    for text in expected:
        assert text in r.err
    # One line each, all of them at once, each naming the file (and the line where known).
    assert len(problems) == 3, r.err
    assert all("actor_server.toml" in line.split(": ", 1)[0] for line in problems)


def test_run_refuses_broken_actors_before_touching_the_database(tmp_path: Path) -> None:
    write_project(tmp_path, 'url = "postgresql://nobody@127.0.0.1:1/none"', PLUGIN_PROBLEMS,
                  modules={"broken": "def oops(:\n", "empty": "X = 1\n"})
    r = cli("run", cwd=tmp_path, timeout=20)
    assert r.code == 2
    assert "defines no actor" in r.err
    assert "database" not in r.err  # it stopped before opening it


@pytest.mark.parametrize("position", ["before", "after"])
def test_config_show_redacts_secrets(tmp_path: Path, position: str) -> None:
    write_project(
        tmp_path / "elsewhere",
        'url = "postgresql://bot:hunter2@db.example:5432/bot"',
        '[[actors]]\nname = "a"\nmodule = "a"\nschedule = { type = "immediate" }\n'
        'settings = { api_token = "tok-123", top_n = 3 }\n',
    )
    config = ["--config", "elsewhere/actor_server.toml"]
    args = [*config, "config", "show"] if position == "before" else ["config", "show", *config]
    r = cli(*args, cwd=tmp_path)
    assert r.code == 0, r.err
    assert "hunter2" not in r.out and "tok-123" not in r.out
    assert 'url = "postgresql://bot:***@db.example:5432/bot"' in r.out
    assert 'api_token = "***"' in r.out and "top_n = 3" in r.out


def test_unreachable_database(tmp_path: Path) -> None:
    """next falls back to the schedule alone; status fails with exit 1 and a clear message."""
    write_project(tmp_path, 'url = "postgresql://bot:hunter2@127.0.0.1:1/bot"\n'
                  "connect_timeout_seconds = 0.3", STORY_ACTORS, modules={"counter": COUNTER_PY})
    r = cli("next", "berlin", "--count", "3", "--after", "2026-03-28T00:00:00+01:00", "--json",
            cwd=tmp_path)
    assert r.code == 0, r.err
    # Daily at 09:00 in Berlin across the spring-forward of 2026-03-29: the offset changes.
    assert r.json() == ["2026-03-28T09:00:00+01:00", "2026-03-29T09:00:00+02:00",
                        "2026-03-30T09:00:00+02:00"]
    assert "schedule alone" in r.err and "hunter2" not in r.err

    r = cli("status", cwd=tmp_path)
    assert r.code == 1
    assert "postgresql://bot:***@127.0.0.1:1/bot is unavailable" in r.err
    assert "hunter2" not in r.err


# --------------------------------------------------------------------------------------------
# On the test database


NO_DATABASE_COMMANDS = [
    ["status"], ["status", "--json"], ["history"], ["history", "counter", "--json"],
    ["history", "--show", "1"], ["schedules", "list", "counter"],
    ["schedules", "remove", "counter", "k"], ["pause", "counter"], ["resume", "counter"],
    ["trigger", "counter"], ["prune"], ["prune", "--dry-run"],
]


def test_commands_before_the_first_run(project: Path, database_url: str, db_schema: str) -> None:
    """A server whose schema has no tables yet: no command but migrate (and run) creates them;
    each says there is no database yet and how to make one, with exit code 3."""
    for args in NO_DATABASE_COMMANDS:
        r = cli(*args, cwd=project)
        assert (r.code, r.out) == (3, ""), (args, r)
        assert (f"no database yet: schema {db_schema!r} of {redact_url(database_url)} has no "
                "discord-actor tables; 'discord-actor run' creates it") in r.err, (args, r.err)
    r = cli("next", "counter", "--count", "1", cwd=project)  # the schedule alone is enough
    assert r.code == 0 and len(r.out.split()) == 1, r
    assert "no database yet" in r.err and "from the schedule alone" in r.err
    assert query(database_url, "SELECT 1 FROM information_schema.schemata "
                 "WHERE schema_name = $1", db_schema) == []  # nothing was created

    r = cli("migrate", cwd=project)
    assert r.code == 0, r.err
    assert "applied 0001_initial\napplied 0002_due_indexes\napplied 0003_finish_run" in r.out
    assert db_schema in r.out
    r = cli("migrate", cwd=project)
    assert r.code == 0 and "already up to date" in r.out
    r = cli("migrate", "--json", cwd=project)
    assert (r.code, r.json()["applied"]) == (0, []) and db_schema in r.json()["database"]
    assert query(database_url, f'SELECT version FROM "{db_schema}".schema_migrations') == [
        {"version": 1}, {"version": 2}, {"version": 3}, {"version": 4},
        {"version": 5}, {"version": 7}]

    # Migrated, but no server has run: the actors are not started yet.
    r = cli("status", "--json", cwd=project)
    assert r.code == 0, r.err
    assert [(a["actor"], a["registered"], a["next_run"]) for a in r.json()] == [
        ("counter", False, None), ("failing", False, None), ("berlin", False, None)]
    r = cli("pause", "counter", cwd=project)
    assert r.code == 1 and "start 'discord-actor run' once first" in r.err


def test_status_history_and_next_after_runs(project: Path) -> None:
    assert populate(project) == ["failed", "succeeded"]

    r = cli("status", "--json", cwd=project)
    assert r.code == 0, r.err
    status = {a["actor"]: a for a in r.json()}
    assert list(status) == ["counter", "failing", "berlin"]
    counter, failing = status["counter"], status["failing"]
    for key in ("actor", "enabled", "paused", "paused_reason", "next_run", "last_status",
                "last_run_at", "consecutive_failures", "running"):
        assert key in counter
    assert counter["enabled"] is True and counter["paused"] is False
    assert counter["next_run"] == "2026-01-05T12:00:10+00:00"
    assert (counter["last_status"], counter["consecutive_failures"]) == ("succeeded", 0)
    assert datetime.fromisoformat(counter["last_run_at"]).utcoffset() is not None
    assert (failing["last_status"], failing["consecutive_failures"]) == ("failed", 1)
    assert status["berlin"]["registered"] is False and counter["running"] == 0

    r = cli("status", cwd=project)
    assert r.code == 0, r.err
    header, *rows = r.out.splitlines()
    assert header.split()[:3] == ["ACTOR", "STATE", "NEXT"]
    assert rows[0].index("2026-01-05T12:00:10+00:00") == header.index("NEXT RUN")  # aligned

    r = cli("history", "--json", cwd=project)
    assert r.code == 0, r.err
    runs = r.json()
    assert [run["actor"] for run in runs] == ["failing", "counter"]  # newest first
    assert runs[0]["id"] > runs[1]["id"]
    for key in ("id", "actor", "scheduled_for", "started_at", "finished_at", "duration_ms",
                "status", "attempt", "trigger", "error"):
        assert key in runs[0]
    assert runs[1]["error"] is None and runs[1]["scheduled_for"] == "2026-01-05T12:00:00+00:00"
    assert datetime.fromisoformat(runs[1]["finished_at"]).utcoffset() is not None

    r = cli("history", "failing", "--status", "failed", "--limit", "1", "--json", cwd=project)
    assert r.code == 0, r.err
    (run,) = r.json()
    assert (run["status"], run["attempt"], run["trigger"]) == ("failed", 1, "schedule")
    assert run["error"] == "RuntimeError: boom"

    r = cli("history", "countr", cwd=project)
    assert r.code == 2 and "did you mean 'counter'?" in r.err

    # Anchored at the stored next slot (12:00:10), not at --after: the grid is 10, 20, 30.
    r = cli("next", "counter", "--count", "3", "--after", "2026-01-05T12:00:03Z", "--json",
            cwd=project)
    assert r.code == 0, r.err
    assert r.json() == ["2026-01-05T12:00:10+00:00", "2026-01-05T12:00:20+00:00",
                        "2026-01-05T12:00:30+00:00"]


def test_check_and_next_give_the_same_next_slots(project: Path) -> None:
    """Both count an interval actor's slots from its stored next slot, as the runtime does."""
    populate(project)  # failing: hourly from 2026-01-05T12:00:00+00:00
    check = cli("check", cwd=project)
    assert check.code == 0, check.err
    lines = check.out.splitlines()
    shown = lines[lines.index(next(x for x in lines if x.startswith("failing "))) + 2]
    nxt = cli("next", "failing", "--count", "3", cwd=project)
    assert nxt.code == 0, nxt.err
    assert shown == "  next: " + ", ".join(nxt.out.split()), (shown, nxt.out)
    assert shown.count(":00:00+00:00") == 3  # on the stored hourly grid, not from "now"


BROKEN_SETUP_PY = '''
from discord_actor import Actor, RunContext


class Fragile(Actor):
    async def setup(self) -> None:
        raise ConnectionError("token file missing")

    async def run(self, ctx: RunContext) -> None:
        pass
'''


def test_an_actor_whose_setup_fails_shows_as_broken(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    actors = STORY_ACTORS + """
[[actors]]
name = "fragile"
module = "fragile"
platform = "none"
schedule = { type = "interval", seconds = 60 }
"""
    write_project(tmp_path, db_section(database_url, db_schema), actors,
                  modules={"counter": COUNTER_PY, "failing": FAILING_PY,
                           "fragile": BROKEN_SETUP_PY})
    r = cli("check", "--setup", cwd=tmp_path)
    assert r.code == 1, (r.out, r.err)
    assert "actor fragile: setup() failed: ConnectionError: token file missing" in r.err
    assert "counter" not in r.err
    config = load_config(tmp_path / "actor_server.toml")

    class Fragile(Counter):
        async def setup(self) -> None:
            raise ConnectionError("token file missing")

    async def go() -> None:
        database = await open_database(config.database)
        try:
            pairs = [(Counter, config.actor("counter")), (Fragile, config.actor("fragile"))]
            async with ActorHarness(database, pairs, clock=FakeClock(START)) as harness:
                await harness.tick()
        finally:
            await database.close()

    asyncio.run(go())
    status = {i["actor"]: i for i in cli("status", "--json", cwd=tmp_path).json()}
    assert status["fragile"]["broken"] is True
    assert status["fragile"]["setup_error"] == "ConnectionError: token file missing"
    assert status["counter"]["broken"] is False
    r = cli("status", cwd=tmp_path)
    row = next(line for line in r.out.splitlines() if line.startswith("fragile "))
    assert row.split()[1:3] == ["broken", "broken"]  # its state, and in place of its next run
    assert "fragile is broken: setup() failed: ConnectionError: token file missing" in r.out
    r = cli("next", "fragile", "--count", "1", cwd=tmp_path)
    assert r.out.splitlines()[0] == (
        "broken (setup() failed: ConnectionError: token file missing): no run until it is "
        "fixed and the server restarted ('discord-actor check --setup' tries it); then:"), r.out


NEW_YORK_ACTORS = """
[[actors]]
name = "nightly"
module = "counter"
platform = "none"
schedule = { type = "cron", expression = "0 7 * * *", timezone = "America/New_York" }
"""


def test_status_and_history_show_times_in_the_schedules_zone(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    write_project(tmp_path, db_section(database_url, db_schema), NEW_YORK_ACTORS,
                  modules={"counter": COUNTER_PY})
    config = load_config(tmp_path / "actor_server.toml")

    async def go() -> None:
        database = await open_database(config.database)
        try:
            pairs = [(Counter, config.actor("nightly"))]
            async with ActorHarness(database, pairs, clock=FakeClock(START)) as harness:
                assert len(await harness.tick(24 * 3600)) == 1
        finally:
            await database.close()

    asyncio.run(go())
    r = cli("status", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    (item,) = r.json()
    for key in ("next_run", "last_run_at"):
        assert item[key].endswith("-05:00"), item
    r = cli("status", cwd=tmp_path)
    row = r.out.splitlines()[1]
    assert row.count("-05:00") == 2 and "+00:00" not in row, row
    (run,) = cli("history", "--json", cwd=tmp_path).json()
    for key in ("scheduled_for", "started_at", "finished_at"):
        assert run[key].endswith("-05:00"), run


def test_status_shows_a_disabled_actor_as_disabled_in_place_of_its_next_run(
    project: Path, database_url: str, db_schema: str
) -> None:
    """A disabled actor's stored slot has passed and will not run: the table says "disabled" in
    the next-run column, as the dashboard does; the JSON keeps the slot beside enabled: false."""
    populate(project)
    query(database_url, f'UPDATE "{db_schema}".tasks SET enabled = false WHERE actor = $1',
          "counter")
    r = cli("status", cwd=project)
    assert r.code == 0, r.err
    header, *rows = r.out.splitlines()
    row = next(x for x in rows if x.startswith("counter "))
    assert row[header.index("NEXT RUN"):].split()[0] == "disabled", r.out
    (item,) = [a for a in cli("status", "--json", cwd=project).json() if a["actor"] == "counter"]
    assert (item["next_run"], item["enabled"]) == ("2026-01-05T12:00:10+00:00", False)


def test_pause_trigger_resume_and_prune(project: Path, database_url: str, db_schema: str) -> None:
    assert populate(project) == ["failed", "succeeded"]

    def task(actor: str) -> dict[str, Any]:
        (row,) = query(database_url, f'SELECT * FROM "{db_schema}".tasks WHERE actor = $1', actor)
        return row

    r = cli("pause", "counter", "--reason", "maintenance", cwd=project)
    assert r.code == 0, r.err
    who = f"{getpass.getuser()} via CLI on host {socket.gethostname()}"
    assert (task("counter")["paused"], task("counter")["paused_reason"]) == (
        True, f"maintenance; paused by {who}"
    )
    # Its stored slot (2026-01-05T12:00:10Z) has passed: the table says "paused" instead, the
    # JSON keeps the slot beside paused: true, and next says it first, then the slots after.
    r = cli("status", cwd=project)
    header, *rows = r.out.splitlines()
    row = next(x for x in rows if x.startswith("counter "))
    column = header.index("NEXT RUN")
    assert row[column:].split()[0] == "paused", r.out
    (item,) = [a for a in cli("status", "--json", cwd=project).json() if a["actor"] == "counter"]
    assert (item["next_run"], item["paused"]) == ("2026-01-05T12:00:10+00:00", True)
    r = cli("next", "counter", "--count", "2", cwd=project)
    first, *slots = r.out.splitlines()
    assert first == (f"paused (maintenance; paused by {who}): no run until 'discord-actor resume "
                     "counter'; then:"), r.out
    assert len(slots) == 2 and all(datetime.fromisoformat(x) > START for x in slots)
    r = cli("next", "counter", "--count", "2", "--json", cwd=project)
    assert r.out.startswith("[") and len(r.json()) == 2 and "counter is paused" in r.err

    r = cli("trigger", "counter", cwd=project)
    assert r.code == 1
    assert "paused (maintenance; paused by" in r.err and "discord-actor resume counter" in r.err
    assert task("counter")["manual_at"] is None

    r = cli("resume", "failing", cwd=project)  # not paused: resets the failure count
    assert r.code == 0, r.err
    before = datetime.now(UTC)
    r = cli("resume", "counter", cwd=project)
    assert r.code == 0 and "resumed counter" in r.out
    # Its slot (2026-01-05T12:00:10Z) passed while it was paused: it goes on at its next slot
    # after now, on its 10 s grid, rather than catching up at once.
    assert "its slot passed while it was paused, so it runs next at" in r.out
    next_run = task("counter")["next_run"]
    assert before < next_run <= datetime.now(UTC) + timedelta(seconds=10)
    assert (next_run - START).total_seconds() % 10 == 0
    r = cli("trigger", "counter", cwd=project)
    assert r.code == 0, r.err
    counter = task("counter")
    assert (counter["paused"], counter["manual_at"] is not None) == (False, True)
    assert task("failing")["consecutive_failures"] == 0

    r = cli("prune", cwd=project)  # server.run_retention_days (30): the runs are recent
    assert r.code == 0 and "deleted 0 runs" in r.out
    r = cli("prune", "--older-than-days", "0", "--dry-run", "--json", cwd=project)
    assert r.code == 0, r.err
    dry = r.json()
    assert (dry["dry_run"], dry["older_than_days"], dry["runs"], dry["by_actor"]) == (
        True, 0, 2, {"counter": 1, "failing": 1})
    assert datetime.fromisoformat(dry["cutoff"]).utcoffset() is not None
    r = cli("prune", "--older-than-days", "0", "--json", cwd=project)
    assert (r.code, r.json()) == (0, {"dry_run": False, "older_than_days": 0, "deleted": 2})
    assert query(database_url, f'SELECT count(*) AS n FROM "{db_schema}".runs') == [{"n": 0}]


def test_operator_actions_are_logged_by_the_running_server(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pause and resume from the CLI reach a running server's log: who, and from where."""
    assert populate(project) == ["failed", "succeeded"]
    config = load_config(project / "actor_server.toml")
    caplog.set_level("INFO", logger="discord_actor.runtime")

    def logged(what: str) -> bool:
        return any(what in r.getMessage() for r in caplog.records)

    async def go() -> None:
        database = await open_database(config.database)
        actors = {"counter": load(Counter, config.actor("counter"))}
        runtime = Runtime(config, database, actors, platforms={"console": RecordingPlatform()})
        try:
            await runtime.start()
            await asyncio.sleep(0.5)  # the listener connects
            r = await asyncio.to_thread(cli, "pause", "counter", "--reason", "upgrade",
                                        cwd=project)
            assert r.code == 0, r.err
            r = await asyncio.to_thread(cli, "resume", "counter", cwd=project)
            assert r.code == 0, r.err
            for _ in range(100):
                if logged("resumed counter"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await runtime.stop()
            await database.close()

    asyncio.run(go())
    who = f"{getpass.getuser()} via CLI on host {socket.gethostname()}"
    assert logged(f"operator: {who} paused counter: upgrade; paused by {who}"), caplog.text
    assert logged(f"operator: {who} resumed counter"), caplog.text


# --------------------------------------------------------------------------------------------
# Keyed schedules: schedules list, add, remove


KEYED_ACTORS = """
[[actors]]
name = "reminder"
module = "counter"
platform = "console"
max_schedules = 4
max_schedules_per_owner = 2
max_payload_bytes = 64
"""


@pytest.fixture
def keyed_project(tmp_path: Path, database_url: str, db_schema: str) -> Path:
    """reminder: no configured schedule, at most 4 keyed ones (2 per owner), payloads <= 64 B;
    server.timezone Europe/Berlin."""
    write_project(tmp_path, db_section(database_url, db_schema), KEYED_ACTORS,
                  server='timezone = "Europe/Berlin"', modules={"counter": COUNTER_PY})
    return tmp_path


def listed(project: Path, *args: str) -> dict[str, dict[str, Any]]:
    r = cli("schedules", "list", "reminder", "--json", *args, cwd=project)
    assert r.code == 0, r.err
    items = r.json()
    runs = [datetime.fromisoformat(s["next_run"]) for s in items]
    assert runs == sorted(runs)  # soonest first
    return {s["key"]: s for s in items}


def test_schedules_add_list_remove_and_status_history_show_them(keyed_project: Path) -> None:
    project = keyed_project
    r = cli("schedules", "list", "reminder", cwd=project)  # no server has run: no tables yet
    assert r.code == 3 and "no database yet" in r.err, (r.out, r.err)

    # An aware --at; a naive one in server.timezone, and one in --timezone; a cron in its zone.
    r = cli("schedules", "add", "reminder", "r:1", "--at", "2026-01-05T12:00:00Z",
            "--payload", '{"text": "stand up"}', "--owner", "user:42", "--channel", "123",
            cwd=project)
    assert r.code == 0, r.err
    assert r.out.strip() == ("added reminder r:1: once at 2026-01-05T13:00:00+01:00 "
                             "(Europe/Berlin), next run 2026-01-05T13:00:00+01:00")
    assert "has passed: a running server runs it at once" in r.err
    r = cli("schedules", "add", "reminder", "r:2", "--at", "2031-07-01T09:00", "--owner",
            "user:42", "--json", cwd=project)
    assert r.code == 0, r.err
    added = r.json()
    assert (added["outcome"], added["key"], added["next_run"], added["owner"]) == (
        "added", "r:2", "2031-07-01T09:00:00+02:00", "user:42")
    r = cli("schedules", "add", "reminder", "r:3", "--at", "2031-01-10T09:00", "--timezone",
            "America/New_York", cwd=project)
    assert r.code == 0, r.err
    # user:42 has 2 already: max_schedules_per_owner.
    r = cli("schedules", "add", "reminder", "r:4", "--every", "60", "--owner", "user:42",
            cwd=project)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "owner 'user:42' already has 2 pending schedule(s) of actor 'reminder', and " \
           "max_schedules_per_owner is 2 (actors[0].max_schedules_per_owner in" in r.err
    r = cli("schedules", "add", "reminder", "guild:7", "--cron", "0 9 * * 1-5", "--timezone",
            "Asia/Tokyo", cwd=project)
    assert r.code == 0 and "cron '0 9 * * 1-5' (Asia/Tokyo)" in r.out, (r.out, r.err)

    pending = listed(project)
    assert set(pending) == {"r:1", "r:2", "r:3", "guild:7"}
    one = pending["r:1"]
    assert datetime.fromisoformat(one["next_run"]) == START
    assert one["next_run"] == "2026-01-05T13:00:00+01:00"  # shown in server.timezone
    assert (one["payload"], one["owner"], one["channel_id"]) == ({"text": "stand up"},
                                                                 "user:42", 123)
    assert (one["schedule"]["type"], one["paused"], one["last_status"]) == ("once", False, None)
    assert pending["r:2"]["next_run"] == "2031-07-01T09:00:00+02:00"  # naive: server.timezone
    assert pending["r:3"]["next_run"] == "2031-01-10T09:00:00-05:00"  # naive: --timezone
    cron = datetime.fromisoformat(pending["guild:7"]["next_run"])
    assert cron.strftime("%H:%M %z") == "09:00 +0900" and cron.isoweekday() <= 5
    assert pending["r:2"]["payload"] == {} and pending["r:2"]["channel_id"] is None
    assert set(listed(project, "--prefix", "r:")) == {"r:1", "r:2", "r:3"}
    assert set(listed(project, "--owner", "user:42")) == {"r:1", "r:2"}
    assert set(listed(project, "--prefix", "r:", "--owner", "nobody")) == set()
    r = cli("schedules", "list", "reminder", "--json", "--limit", "2", cwd=project)
    assert [s["key"] for s in r.json()] == ["r:1", "guild:7"], r.out  # the two soonest
    assert "showing the 2 soonest; there are more" in r.err

    r = cli("schedules", "list", "reminder", "--prefix", "r:", cwd=project)
    assert r.code == 0, r.err
    header, *rows = r.out.splitlines()
    assert header.split() == ["KEY", "NEXT", "RUN", "SCHEDULE", "OWNER", "CHANNEL", "LAST",
                              "STATUS", "PAYLOAD"]
    assert rows[0].startswith("r:1 ") and '{"text": "stand up"}' in rows[0]
    assert rows[0].index("2026-01-05T13:00:00+01:00") == header.index("NEXT RUN")
    assert "user:42" in rows[0] and "123" in rows[0]

    # The same again changes nothing; another definition needs --replace.
    r = cli("schedules", "add", "reminder", "r:1", "--at", "2026-01-05T12:00:00Z",
            "--payload", '{"text": "stand up"}', "--owner", "user:42", "--channel", "123",
            cwd=project)
    assert r.code == 0 and r.out.startswith("already pending, unchanged: reminder r:1"), r.out
    r = cli("schedules", "add", "reminder", "r:1", "--at", "2026-01-05T12:00:00Z",
            "--payload", '{"text": "sit down"}', "--owner", "user:42", cwd=project)
    assert r.code == 2
    assert r.err.strip() == (
        "discord-actor: error: actor 'reminder': key 'r:1' is already pending with another "
        "schedule, payload, channel or owner; add --replace to change it, or remove it first "
        "(discord-actor schedules remove reminder KEY)"
    )
    assert listed(project)["r:1"]["payload"] == {"text": "stand up"}
    r = cli("schedules", "add", "reminder", "r:1", "--at", "2026-01-05T12:00:00Z",
            "--payload", '{"text": "sit down"}', "--owner", "user:42", "--replace",
            cwd=project)
    assert r.code == 0 and r.out.startswith("replaced reminder r:1"), (r.out, r.err)
    assert listed(project)["r:1"]["payload"] == {"text": "sit down"}

    # The limit per actor (4); the one per owner (2) is above.
    r = cli("schedules", "add", "reminder", "feed:9", "--every", "300", cwd=project)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "actor 'reminder' already has 4 pending schedule(s); adding 1 would pass " \
           "max_schedules = 4 (actors[0].max_schedules in" in r.err
    assert set(listed(project)) == {"r:1", "r:2", "r:3", "guild:7"}

    r = cli("status", "--json", cwd=project)
    assert r.code == 0, r.err
    (status,) = r.json()
    assert (status["actor"], status["keyed"], status["schedule"]) == (
        "reminder", 4, "keyed schedules and triggers only")
    r = cli("status", cwd=project)
    header, row = r.out.splitlines()[:2]
    assert row[header.index("KEYED"):].split()[0] == "4"

    # They obey their actor's switches, and the list says so.
    assert cli("pause", "reminder", "--reason", "quiet week", cwd=project).code == 0
    r = cli("schedules", "list", "reminder", cwd=project)
    assert r.code == 0 and "note: these do not run while reminder is paused (quiet week; " \
                           "paused by" in r.err, r.err
    assert cli("resume", "reminder", cwd=project).code == 0

    # A server runs r:1 (due at START): history names its key, and it leaves the pending set.
    assert populate(project, [(Counter, "reminder")]) == ["succeeded"]
    r = cli("history", "--json", cwd=project)
    assert r.code == 0, r.err
    (run,) = r.json()
    assert (run["actor"], run["key"], run["status"]) == ("reminder", "r:1", "succeeded")
    r = cli("history", cwd=project)
    header, row = r.out.splitlines()
    assert header.split()[:3] == ["ID", "ACTOR", "KEY"]
    assert row.split()[1:3] == ["reminder", "r:1"]
    r = cli("history", "--show", str(run["id"]), cwd=project)
    assert r.out.startswith(f"run {run['id']} of reminder (key r:1): succeeded"), r.out
    assert set(listed(project)) == {"r:2", "r:3", "guild:7"}
    assert cli("status", "--json", cwd=project).json()[0]["keyed"] == 3

    r = cli("schedules", "remove", "reminder", "guild:7", cwd=project)
    assert r.code == 0 and r.out.startswith("removed reminder guild:7"), (r.out, r.err)
    assert set(listed(project)) == {"r:2", "r:3"}
    for gone in ("guild:7", "r:1"):  # removed; ran
        r = cli("schedules", "remove", "reminder", gone, cwd=project)
        assert r.code == 1 and r.out == ""
        assert f"actor 'reminder' has no pending schedule with key '{gone}'" in r.err
        assert "discord-actor schedules list reminder" in r.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "remindr", "k", "--every", "60"],
         "unknown actor 'remindr' in {config}; did you mean 'reminder'?"),
        (["list", "remindr"], "unknown actor 'remindr' in {config}; did you mean 'reminder'?"),
        (["remove", "ghost", "k"], "unknown actor 'ghost' in {config} (configured actors: "
                                   "reminder)"),
        (["add", "reminder", "k", "--cron", "61 * * * *"],
         "actor 'reminder': key 'k': bad minute field '61' in '61 * * * *' (allowed: 0-59)"),
        (["add", "reminder", "k", "--cron", "0 9 * * *", "--timezone", "Mars/Base"],
         "actor 'reminder': key 'k': unknown time zone 'Mars/Base'"),
        (["add", "reminder", "k", "--at", "2031-01-10T09:00", "--timezone", "Mars/Base"],
         "actor 'reminder': key 'k': unknown time zone 'Mars/Base'"),
        (["add", "reminder", "k", "--at", "tomorrow"],
         "--at 'tomorrow' is not an ISO 8601 date-time"),
        (["add", "reminder", "k", "--at", "2031-02-30T09:00"],
         "--at '2031-02-30T09:00' is not an ISO 8601 date-time"),
        (["add", "reminder", "k", "--at", "0001-01-01T00:00"],
         "actor 'reminder': key 'k': a once schedule's 'at' 0001-01-01T00:00:00"),
        (["add", "reminder", "k", "--every", "soon"], "--every 'soon' is not a number"),
        (["add", "reminder", "k", "--every", "0"],
         "actor 'reminder': key 'k': an interval schedule needs seconds > 0, got 0"),
        (["add", "reminder", "k", "--every", "inf"],
         "actor 'reminder': key 'k': an interval schedule needs seconds <= 3153600000"),
        (["add", "reminder", "k", "--every", "60", "--payload", "{text: 1}"],
         "--payload is not valid JSON: Expecting property name"),
        (["add", "reminder", "k", "--every", "60", "--payload", "[1, 2]"],
         "--payload must be a JSON object"),
        (["add", "reminder", "k", "--every", "60", "--payload", json.dumps({"text": "x" * 60})],
         "error: key 'k': payload is 71 bytes as JSON; actor 'reminder' allows at most 64 "
         "(actors[0].max_payload_bytes)"),
        (["add", "reminder", "k" * 201, "--every", "60"],
         "actor 'reminder': key is 201 characters long; at most 200 are allowed"),
        (["add", "reminder", "k", "--every", "60", "--owner", ""],
         "actor 'reminder': owner must not be empty"),
        (["add", "reminder", "k", "--every", "60", "--channel", "general"],
         "--channel 'general' is not a Discord channel id"),
        (["add", "reminder", "k", "--every", "60", "--channel", str(2**64)],
         f"key 'k': channel_id must be a positive integer (a Discord channel id), not {2**64}"),
    ],
)
def test_schedules_errors_exit_2_in_one_line_and_add_nothing(
    keyed_project: Path, database_url: str, db_schema: str, args: list[str], message: str
) -> None:
    config = keyed_project / "actor_server.toml"
    r = cli("schedules", *args, cwd=keyed_project)
    assert r.code == 2, (r.out, r.err)
    assert r.err.count("\n") == 1 and r.err.startswith("discord-actor: error: "), r.err
    assert message.format(config=config) in r.err
    tasks = f'"{db_schema}".tasks'
    (exists,) = query(database_url, "SELECT to_regclass($1) IS NOT NULL AS e", tasks)
    if exists["e"]:  # the error came after add created the tables: it added no schedule
        assert query(database_url, f"SELECT key FROM {tasks} WHERE key IS NOT NULL") == []


def test_schedules_usage_errors(keyed_project: Path) -> None:
    r = cli("schedules", "add", "reminder", "k", cwd=keyed_project)
    assert r.code == 2 and "one of the arguments --at --every --cron is required" in r.err
    r = cli("schedules", "add", "reminder", "k", "--every", "60", "--cron", "* * * * *",
            cwd=keyed_project)
    assert r.code == 2 and "not allowed with argument" in r.err
    r = cli("schedules", cwd=keyed_project)
    assert r.code == 2 and "required: COMMAND" in r.err


def _session_data_dir() -> Path | None:
    """The data directory of this session's embedded server (see testing/plugin.py)."""
    found = list(Path(tempfile.gettempdir()).glob(f"discord_actor-test-{os.getpid()}-*/pgdata"))
    return found[0] if len(found) == 1 else None


def test_a_command_attaches_to_the_embedded_server_without_stopping_it(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    data_dir = _session_data_dir()
    if os.environ.get("DATABASE_URL") or data_dir is None:
        pytest.skip("the session database is not an embedded server started by this process")
    write_project(tmp_path, f"data_dir = {toml_str(data_dir)}\nschema = {toml_str(db_schema)}",
                  STORY_ACTORS, modules={"counter": COUNTER_PY, "failing": FAILING_PY})
    r = cli("migrate", cwd=tmp_path)
    assert r.code == 0, r.err
    assert f"embedded PostgreSQL in {data_dir}" in r.out
    # The server this process started is still up, and the command's pid is forgotten.
    assert query(database_url, "SELECT 1 AS ok") == [{"ok": 1}]
    assert json.loads((data_dir / ".handle_pids.json").read_text()) == [os.getpid()]


# --------------------------------------------------------------------------------------------
# run


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _statuses(database_url: str, schema: str) -> dict[str, list[str]]:
    try:
        rows = query(database_url, f'SELECT t.actor, r.status FROM "{schema}".runs r JOIN '
                     f'"{schema}".tasks t ON t.id = r.task_id ORDER BY r.id')
    except asyncpg.UndefinedTableError:
        return {}
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["actor"], []).append(row["status"])
    return out


RUN_ACTORS = """
[[actors]]
name = "ticker"
module = "counter"
schedule = { type = "interval", seconds = 1 }

[[actors]]
name = "hello"
module = "counter"
schedule = { type = "immediate" }

[[actors]]
name = "sleeper"
module = "sleeper"
schedule = { type = "immediate" }
"""


def test_run_until_interrupted(tmp_path: Path, database_url: str, db_schema: str) -> None:
    """Runs until SIGINT; a second SIGINT cancels the run still going; a clean exit 0."""
    write_project(tmp_path, db_section(database_url, db_schema), RUN_ACTORS,
                  server="shutdown_grace_seconds = 60\n",
                  modules={"counter": COUNTER_PY, "sleeper": SLEEPER_PY})
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as out_f, err.open("w") as err_f:
        proc = subprocess.Popen([*CLI, "run"], cwd=tmp_path, env=_env(), stdout=out_f,
                                stderr=err_f)
    try:
        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run exited with {proc.returncode}: {err.read_text()}")
            s = _statuses(database_url, db_schema)
            return (s.get("ticker", []).count("succeeded") >= 2 and s.get("hello") == ["succeeded"]
                    and s.get("sleeper") == ["running"])

        _wait_for(started, 30, "runs of ticker, hello and sleeper")
        proc.send_signal(signal.SIGINT)
        # Graceful: it waits for sleeper (up to shutdown_grace_seconds = 60) ...
        _wait_for(lambda: "waiting up to 60 s for 1 running run" in err.read_text(), 10,
                  "the shutdown to wait for sleeper")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)  # the impatient operator: cancel it now
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert "stopped cleanly" in log
    assert f"database: {redact_url(database_url)} (schema {db_schema})" in log
    statuses = _statuses(database_url, db_schema)
    assert all("running" not in runs for runs in statuses.values()), statuses
    assert statuses["sleeper"] == ["cancelled"]
    posts = out.read_text()
    for post in ("[ticker] tick 1", "[ticker] tick 2", "[hello] tick 1", "[sleeper] sleeping"):
        assert post in posts


BREAKER_ACTORS = """
[discord]
alert_channel_id = 424242

[[actors]]
name = "failing"
module = "failing"
platform = "discord"
channel_id = 1234
max_consecutive_failures = 1
schedule = { type = "immediate" }
"""


def test_a_dry_run_prints_alerts_on_the_console(tmp_path: Path, database_url: str,
                                                db_schema: str) -> None:
    """With alert_channel_id set, the circuit breaker's alert is printed like a post."""
    write_project(tmp_path, db_section(database_url, db_schema), BREAKER_ACTORS,
                  modules={"failing": FAILING_PY})
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as out_f, err.open("w") as err_f:
        proc = subprocess.Popen([*CLI, "run", "--dry-run"], cwd=tmp_path, env=_env(),
                                stdout=out_f, stderr=err_f)
    try:
        def alerted() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run exited with {proc.returncode}: {err.read_text()}")
            return "[alert -> #424242]" in out.read_text()

        _wait_for(alerted, 30, "the breaker's alert on the console")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    printed = out.read_text()
    assert "actor failing paused after 1 consecutive failures" in printed, printed
    assert "discord-actor resume failing" in printed


SLOW_IMPORT_PY = """
import pathlib
import time

pathlib.Path("loading").write_text("")  # the test waits for this, then signals
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_stopped_during_start_up_exits_0(
    tmp_path: Path, database_url: str, db_schema: str, signum: signal.Signals
) -> None:
    """A stop by SIGINT or SIGTERM is a clean stop at any point, also while loading actors."""
    write_project(tmp_path, db_section(database_url, db_schema),
                  '[[actors]]\nname = "slow"\nmodule = "slow"\nschedule = { type = "immediate" }\n',
                  modules={"slow": SLOW_IMPORT_PY})
    proc = subprocess.Popen([*CLI, "run"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "loading").exists() or proc.poll() is not None, 30,
                  "the actor module to load")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"{signum.name}: stopped before the actors started" in err


def test_make_clean_keeps_the_database(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for kept in (".discord_actor/pgdata/PG_VERSION", ".venv/bin/python"):
        (tmp_path / kept).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / kept).write_text("")
    p = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / ".venv").exists()
    assert (tmp_path / ".discord_actor/pgdata/PG_VERSION").exists()
    assert ".discord_actor" not in p.stdout

    (tmp_path / ".discord_actor/pgdata/postmaster.pid").write_text("1\n")
    p = subprocess.run(["make", "clean-data"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "stop 'discord-actor run' first" in p.stderr
    assert (tmp_path / ".discord_actor").exists()

    (tmp_path / ".discord_actor/pgdata/postmaster.pid").unlink()
    sandbox_pid = tmp_path / ".discord_actor/sandbox-pgdata/postmaster.pid"
    sandbox_pid.parent.mkdir()
    sandbox_pid.write_text("1\n")  # a running 'discord-actor sandbox'
    p = subprocess.run(["make", "clean-data"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "stop 'discord-actor sandbox' first" in p.stderr
    assert (tmp_path / ".discord_actor").exists()

    sandbox_pid.unlink()
    p = subprocess.run(["make", "clean-data"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert ("deleting .discord_actor: the embedded PostgreSQL database, with every actor's "
            "state and all run history") in p.stdout
    assert not (tmp_path / ".discord_actor").exists()


def once_actor(name: str, at: str, more: str = "") -> str:
    """A console actor that runs once, at ``at`` (``more``: other keys of its schedule)."""
    return (f'\n[[actors]]\nname = "{name}"\nmodule = "counter"\nplatform = "console"\n'
            f'schedule = {{ type = "once", at = {at}{more} }}\n')


ONCE_ACTOR = once_actor("launch", "2026-01-05T12:00:00Z")


def test_history_and_next_say_what_is_true(tmp_path: Path, database_url: str,
                                           db_schema: str) -> None:
    """An empty filtered history names the filter, a once actor that ran says it will not run
    again, and durations of fast runs are shown in milliseconds, not as 0.00 s."""
    write_project(tmp_path, db_section(database_url, db_schema), STORY_ACTORS + ONCE_ACTOR,
                  modules={"counter": COUNTER_PY, "failing": FAILING_PY})
    assert populate(tmp_path, [(Counter, "counter"), (Counter, "launch")]) == [
        "succeeded", "succeeded"]

    r = cli("history", "--status", "failed", cwd=tmp_path)
    assert (r.code, r.out.strip()) == (0, "no failed runs recorded")
    r = cli("history", "counter", "--status", "timed_out", cwd=tmp_path)
    assert (r.code, r.out.strip()) == (0, "no timed_out runs of counter")

    r = cli("history", "counter", cwd=tmp_path)
    assert r.code == 0, r.err
    header, row = r.out.splitlines()
    duration = row[header.index("DURATION"):header.index("STATUS")].strip()
    ms = cli("history", "counter", "--json", cwd=tmp_path).json()[0]["duration_ms"]
    assert ms < 1000 and duration == f"{ms:.1f} ms"

    r = cli("next", "launch", cwd=tmp_path)
    assert (r.code, r.out) == (0, "")
    assert "launch ran its one slot (2026-01-05T12:00:00+00:00); it will not run again" in r.err


LATE_ONCE_ACTORS = (once_actor("launch", "2020-01-01T09:00:00Z")
                    + once_actor("launch_skip", "2020-01-01T09:00:00Z", ', catch_up = "skip"'))


def test_check_next_and_run_agree_about_a_once_whose_time_has_passed(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """A once in the past that has not run: catch_up = "latest" runs it late, as a catch_up run,
    and "skip" skips it. check and next say so before a server runs (from the scheduler's own
    decision), the server then does just that, and afterwards both say it is done for good."""
    write_project(tmp_path, db_section(database_url, db_schema), LATE_ONCE_ACTORS,
                  server="poll_interval_seconds = 0.2\n", modules={"counter": COUNTER_PY})
    at = "2020-01-01T09:00:00+00:00"
    passed = f"its slot {at} has passed and has not run"
    late = f'{passed}: catch_up = "latest" runs it once, late, as a catch_up run'
    skipped = f'{passed}: catch_up = "skip" skips it, for good'

    r = cli("check", cwd=tmp_path)
    assert r.code == 0, r.err
    assert f"launch  (module counter, platform console)\n  schedule: once at {at}\n  next: {at}\n" \
           f"  missed: {late}" in r.out, r.out
    assert f"  next: none\n  missed: {skipped}" in r.out, r.out
    r = cli("check", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    checked = {a["actor"]: a for a in r.json()["actors"]}
    assert {name: (a["next"], a["missed"], a["done"]) for name, a in checked.items()} == {
        "launch": ([at], late + ", as soon as a server is running", False),
        "launch_skip": ([], skipped, False)}
    assert r.json()["setup_failures"] is None
    r = cli("next", "launch", "--json", cwd=tmp_path)
    assert (r.code, r.json()) == (0, [at]) and f"note: launch: {late}" in r.err, r
    r = cli("next", "launch_skip", "--json", cwd=tmp_path)
    assert (r.code, r.json()) == (0, []) and f"note: launch_skip: {skipped}" in r.err, r

    proc = subprocess.Popen([*CLI, "run"], cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _statuses(database_url, db_schema) == {
            "launch": ["succeeded"], "launch_skip": ["skipped"]} or proc.poll() is not None, 30,
            "the two once actors' runs")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    runs = query(database_url, f'SELECT t.actor, r.status, r.trigger, r.scheduled_for FROM '
                 f'"{db_schema}".runs r JOIN "{db_schema}".tasks t ON t.id = r.task_id '
                 "ORDER BY t.actor")
    assert [(x["actor"], x["status"], x["trigger"], x["scheduled_for"].isoformat())
            for x in runs] == [("launch", "succeeded", "catch_up", at),
                               ("launch_skip", "skipped", "catch_up", at)]

    # Done, as stored in the database: both commands say it will not run again.
    r = cli("check", cwd=tmp_path)
    assert r.code == 0, r.err
    assert f"  next: none, it ran its one slot ({at}); it will not run again" in r.out, r.out
    assert (f'  next: none, it skipped its one slot ({at}, catch_up = "skip"); it will not run '
            "again") in r.out, r.out
    assert "missed" not in r.out
    for name, done in (("launch", "ran its one slot"), ("launch_skip", "skipped its one slot")):
        r = cli("next", name, "--json", cwd=tmp_path)
        assert (r.code, r.json()) == (0, []) and f"note: {name} {done} ({at}" in r.err, r


def test_durations_are_shown_at_their_precision() -> None:
    from discord_actor.cli import format_duration

    assert [format_duration(ms) for ms in (None, 0.04, 2.14, 999.9, 1234.5, 59_990, 185_000)] == [
        "-", "0.0 ms", "2.1 ms", "999.9 ms", "1.23 s", "59.99 s", "3 min 05 s",
    ]


@pytest.mark.slow
def test_run_says_when_it_creates_the_database_or_shares_it(tmp_path: Path) -> None:
    """In a fresh directory the commands that need the database create none (exit 3, and the
    data directory still does not exist); then the start that creates the embedded database
    says so (a lost volume is noticed), and a second server on the same data directory names
    the process already using it."""
    data_dir = tmp_path / ".discord_actor" / "pgdata"
    write_project(tmp_path, "",  # the default data directory, ./.discord_actor/pgdata
                  '[[actors]]\nname = "counter"\nmodule = "counter"\n'
                  'schedule = { type = "interval", seconds = 3600 }\n',
                  modules={"counter": COUNTER_PY})
    for args in NO_DATABASE_COMMANDS:
        r = cli(*args, cwd=tmp_path)
        assert (r.code, r.out) == (3, ""), (args, r)
        assert (f"no database yet: the embedded PostgreSQL has no data directory at {data_dir}; "
                "'discord-actor run' creates it as it starts the actors, 'discord-actor "
                "migrate' creates it without running them") in r.err, (args, r.err)
    for args in (["next", "counter"], ["check"]):
        r = cli(*args, cwd=tmp_path)
        assert r.code == 0 and "slots computed from the schedule alone" in r.err, (args, r)
    assert not (tmp_path / ".discord_actor").exists()

    procs: list[subprocess.Popen[str]] = []
    logs = [tmp_path / "first.txt", tmp_path / "second.txt"]
    try:
        for log in logs:
            with log.open("w") as f:
                procs.append(subprocess.Popen([*CLI, "run"], cwd=tmp_path, env=_env(),
                                              stdout=subprocess.DEVNULL, stderr=f, text=True))
            _wait_for(lambda log=log: "started with 1 actor" in log.read_text()
                      or procs[-1].poll() is not None, 60, f"{log.name} to start")
            assert procs[-1].poll() is None, log.read_text()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first, second = (log.read_text() for log in logs)
    assert f"created a new, empty database in {data_dir}" in first
    assert "another process is using" not in first
    assert "created a new" not in second
    assert f"another process is using this data directory: pid {procs[0].pid}" in second


MIXED_PROBLEMS = """
[[actors]]
name = "good_but_broken_module"
module = "broken"
schedule = { type = "immediate" }

[[actors]]
name = "bad_schedule"
module = "empty"
schedule = { type = "cron", expression = "61 * * * *" }

[[actor]]
name = "singular"
module = "empty"
"""


def test_check_reports_module_and_config_problems_in_one_pass_with_lines(
    tmp_path: Path,
) -> None:
    """A module problem is listed with the configuration's own problems, and every problem,
    an unknown [[actor]] table too, has a line."""
    write_project(tmp_path, 'url = "postgresql://nobody@127.0.0.1:1/none"', MIXED_PROBLEMS,
                  modules={"broken": "x = 1\ndef oops(:\n", "empty": "X = 1\n"})
    for command in ("check", "run"):
        r = cli(command, cwd=tmp_path, timeout=20)
        assert r.code == 2, r.err
        problems = r.err.strip().splitlines()
        assert len(problems) == 3, r.err
        assert all(re.match(r"actor_server\.toml:\d+: ", line) for line in problems), r.err
        (module,) = [p for p in problems if "actors[0].module" in p]
        assert "SyntaxError" in module and "actor_server.toml:9:" in module
        assert any("actors[1].schedule" in p for p in problems)
        (singular,) = [p for p in problems if "actor:" in p or "'actor'" in p]
        assert "actor_server.toml:17:" in singular and "did you mean 'actors'?" in singular
