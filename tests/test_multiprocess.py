"""Several real ``discord-actor run`` processes on one database, and a database restart."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from servers import fetch, runtime_for, spawn_server, write_server_project

from discord_actor import RunContext, actor
from discord_actor.config import DatabaseConfig, ScheduleConfig, load_config
from discord_actor.db import Database, EmbeddedPostgres, open_database
from discord_actor.db.store import ClaimRequest, Store
from discord_actor.keyed import Interval, NewSchedule, Once, Schedules
from discord_actor.testing.harness import (
    ActorHarness,
    actor_config,
)

pytestmark = pytest.mark.slow

ACTORS = """
import asyncio
from discord_actor import RunContext, actor

@actor(platform="none")
async def ticker(ctx: RunContext) -> None:
    pass

@actor(platform="none")
async def sleeper(ctx: RunContext) -> None:
    await asyncio.sleep(60)
"""


def write_project(tmp_path: Path, database_url: str, schema: str) -> Path:
    return write_server_project(tmp_path, {"jobs": ACTORS}, database_url, schema, """
        [[actors]]
        name = "ticker"
        module = "jobs:ticker"
        schedule = { type = "interval", seconds = 0.5 }

        [[actors]]
        name = "sleeper"
        module = "jobs:sleeper"
        schedule = { type = "interval", seconds = 3600 }
        """)


async def run_two_servers(config: Path, tmp_path: Path, seconds: float) -> None:
    """Two ``discord-actor run`` processes of ``config`` for ``seconds``, then SIGINT: both exit
    0 (their logs in ``tmp_path/server{0,1}.log``); killed if a check fails first."""
    procs = [spawn_server(config, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        await asyncio.sleep(seconds)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            assert p.wait(timeout=30) == 0, (tmp_path / "server0.log").read_text()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def servers(
    tmp_path: Path, database_url: str, db_schema: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    config = write_project(tmp_path, database_url, db_schema)
    procs = [spawn_server(config, tmp_path / f"server{i}.log") for i in range(2)]
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


async def test_two_processes_run_each_slot_once_and_survive_a_kill(
    servers: list[subprocess.Popen[bytes]], database_url: str, db_schema: str
) -> None:
    runs_sql = "SELECT r.*, t.actor FROM S.runs r JOIN S.tasks t ON t.id = r.task_id ORDER BY r.id"
    # Wait until the sleeper is running somewhere and the ticker has run a few times.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            rows = await fetch(database_url, runs_sql, db_schema)
        except asyncpg.UndefinedTableError:
            rows = []
        sleeping = [r for r in rows if r["actor"] == "sleeper" and r["status"] == "running"]
        if sleeping and sum(r["actor"] == "ticker" for r in rows) >= 6:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the servers did not start running actors in time")

    owner = sleeping[0]["instance_id"]
    pid = int(owner.split(":")[1])
    victim = next(p for p in servers if p.pid == pid)
    survivor = next(p for p in servers if p.pid != pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()

    # Within the lease (1.5 s) plus a heartbeat, the survivor declares the run abandoned.
    while time.monotonic() - killed_at < 10:
        rows = await fetch(database_url, runs_sql, db_schema)
        lost = next(r for r in rows if r["id"] == sleeping[0]["id"])
        if lost["status"] == "abandoned":
            break
        await asyncio.sleep(0.1)
    assert lost["status"] == "abandoned"
    assert time.monotonic() - killed_at < 1.5 + 1.5 + 1.0

    await asyncio.sleep(1.5)  # the ticker carries on in the survivor
    survivor.send_signal(signal.SIGINT)
    assert survivor.wait(timeout=15) == 0

    rows = await fetch(database_url, runs_sql, db_schema)
    ticks = [r for r in rows if r["actor"] == "ticker"]
    slots = [r["scheduled_for"] for r in ticks if r["attempt"] == 1]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    assert {r["status"] for r in rows} <= {"succeeded", "abandoned", "cancelled"}
    after_kill = [r for r in ticks if r["started_at"] > lost["finished_at"]]
    assert after_kill and {r["instance_id"] for r in after_kill} == {rows[-1]["instance_id"]}
    # Fixed-rate slots, none missing between the first and the last.
    ordered = sorted(slots)
    gaps = {b - a for a, b in itertools.pairwise(ordered)}
    assert gaps <= {timedelta(seconds=0.5)} | {timedelta(seconds=0.5 * k) for k in range(2, 8)}


async def test_a_database_restart_loses_no_run(tmp_path: Path) -> None:
    server = EmbeddedPostgres()
    data_dir = tmp_path / "pgdata"
    url = await asyncio.to_thread(server.start, data_dir)
    finished = asyncio.Event()
    started = asyncio.Event()

    @actor
    async def through_restart(ctx: RunContext) -> None:
        started.set()
        await asyncio.sleep(1.0)  # the database restarts meanwhile
        ctx.state["survived"] = True
        finished.set()

    database = await open_database(
        DatabaseConfig(url=url, schema="restart", connect_timeout_seconds=5)
    )
    cfg = actor_config(
        "through_restart", schedule=ScheduleConfig(type="interval", timezone="UTC", seconds=3600)
    )
    runtime = runtime_for(database, [(through_restart, cfg)], poll_interval_seconds=0.2)
    try:
        await runtime.start()
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start, data_dir)
        await asyncio.wait_for(finished.wait(), 10)
        store = Store(database.pool, database.schema)
        for _ in range(100):
            runs = await store.operator.history("through_restart")
            if runs and runs[0]["status"] != "running":
                break
            await asyncio.sleep(0.1)
        assert [r["status"] for r in runs] == ["succeeded"]
        task = await store.operator.task("through_restart")
        assert task is not None and '"survived": true' in task["state"]
    finally:
        await runtime.stop()
        await database.close()
        await asyncio.to_thread(server.stop)


async def test_max_instances_holds_between_concurrent_claims(database: Database) -> None:
    """Two processes claim the same task at the same moment, one its slot, one a manual trigger:
    with max_instances = 1 at most one of them may start a run."""
    cfg = actor_config("contended", schedule=ScheduleConfig(type="immediate", timezone="UTC"))

    @actor
    async def contended(ctx: RunContext) -> None:
        pass

    async with ActorHarness(database, [(contended, cfg)]):
        pass  # creates the task row
    other = await open_database(database.config)
    first, second = Store(database.pool, database.schema), Store(other.pool, database.schema)
    tasks = f"{database.schema}.tasks"
    task_id = await database.pool.fetchval(f"SELECT id FROM {tasks} WHERE actor = 'contended'")
    both = 0
    try:
        for i in range(300):
            slot = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
            manual = slot + timedelta(days=1000)
            await database.pool.execute(
                f"UPDATE {tasks} SET running = 0, next_run = $1, due_at = $1, manual_at = $2"
                " WHERE id = $3",
                slot,
                manual,
                task_id,
            )
            later = slot + timedelta(hours=1)
            by_schedule = ClaimRequest(
                task_id, "schedule", slot, 1, slot, "schedule", new_next_run=later, new_due_at=later
            )
            by_hand = ClaimRequest(task_id, "manual", manual, 1, manual, "manual")
            a, b = await asyncio.gather(
                first.runs.claim("A", [by_schedule], slot + timedelta(seconds=1)),
                second.runs.claim("B", [by_hand], slot + timedelta(seconds=1)),
            )
            both += bool(a and b)
    finally:
        await other.close()
    assert both == 0


async def test_two_processes_1000_actors_no_slot_missed_or_run_twice(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """1,000 interval actors (every 5 s) shared by two ``discord-actor run`` processes for 30 s:
    every slot of every actor runs once, none is missed, and both processes take part."""
    period, measured = 5.0, 30.0
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "jobs.py").write_text(ACTORS)
    lines = [
        "[server]",
        "shutdown_grace_seconds = 5",
        "[database]",
        f'url = "{database_url}"',
        f'schema = "{db_schema}"',
    ]
    for i in range(1000):
        lines += [
            "[[actors]]",
            f'name = "a{i:04d}"',
            'module = "jobs:ticker"',
            f'schedule = {{ type = "interval", seconds = {period} }}',
        ]
    config = tmp_path / "actor_server.toml"
    config.write_text("\n".join(lines) + "\n")
    await run_two_servers(config, tmp_path, measured)
    rows = await fetch(
        database_url,
        "SELECT t.actor, r.scheduled_for, r.attempt, r.status, r.instance_id"
        " FROM S.runs r JOIN S.tasks t ON t.id = r.task_id ORDER BY r.scheduled_for",
        db_schema,
    )
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["attempt"] for r in rows} == {1}
    slots: dict[str, list[datetime]] = {}
    for r in rows:
        slots.setdefault(r["actor"], []).append(r["scheduled_for"])
    assert len(slots) == 1000
    step = timedelta(seconds=period)
    for name, times in slots.items():
        assert len(times) == len(set(times)), f"{name}: a slot ran twice"
        assert len(times) >= 4, f"{name}: only {len(times)} runs in {measured} s"
        gaps = {b - a for a, b in itertools.pairwise(times)}
        assert gaps == {step}, f"{name}: missed slots ({sorted(gaps)})"
    shares = {r["instance_id"] for r in rows}
    assert len(shares) == 2, "one process did all the work"


async def test_two_processes_share_keyed_schedules_added_one_by_one(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """Keyed Interval schedules added one ``add`` at a time to two actors in turn (as a bot's
    /remind and /digest commands add them), so that each actor's task ids share one parity, are
    shared by two ``discord-actor run`` processes: each runs 40-60 % of an actor's runs (the
    issue's bound is 30-70 %; 40 % also catches a process that learns of the other only at its
    next heartbeat, ten seconds on, instead of when it joins)."""
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "jobs.py").write_text(ACTORS)
    config_path = tmp_path / "actor_server.toml"
    config_path.write_text(
        textwrap.dedent(f"""
        [server]
        poll_interval_seconds = 0.2
        shutdown_grace_seconds = 5

        [database]
        url = "{database_url}"
        schema = "{db_schema}"

        [[actors]]
        name = "reminder"
        module = "jobs:ticker"

        [[actors]]
        name = "digest"
        module = "jobs:ticker"
        """)
    )
    config = load_config(config_path)
    database = await open_database(config.database)
    try:
        schedules = Schedules(Store(database.pool, database.schema), config)
        start = datetime.now(UTC) + timedelta(seconds=3)
        for i in range(200):  # slots spread over the 2 s, as users' reminders are
            every = Interval(seconds=2, start_at=start + timedelta(seconds=i / 100))
            for name in ("reminder", "digest"):
                await schedules.add(name, key=f"user:{i}", schedule=every)
    finally:
        await database.close()
    await run_two_servers(config_path, tmp_path, 10)
    rows = await fetch(
        database_url,
        "SELECT r.instance_id, count(*) AS runs FROM S.runs r JOIN S.tasks t ON t.id = r.task_id"
        " WHERE t.actor = 'reminder' AND t.key IS NOT NULL GROUP BY r.instance_id",
        db_schema,
    )
    runs = {r["instance_id"]: r["runs"] for r in rows}
    total = sum(runs.values())
    assert total >= 200 * 3, f"only {total} runs of the reminder's schedules in 10 s"
    assert len(runs) == 2, f"one process ran every keyed schedule: {runs}"
    for instance, count in runs.items():
        assert 0.4 <= count / total <= 0.6, f"{instance} ran {count} of {total}: {runs}"


async def test_a_database_outage_is_told_in_two_lines_without_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning when the database goes away, one when it is back; asyncpg's own
    reconnection tracebacks do not reach the log."""
    server = EmbeddedPostgres()
    data_dir = tmp_path / "pgdata"
    url = await asyncio.to_thread(server.start, data_dir)

    @actor
    async def ticker(ctx: RunContext) -> None:
        pass

    database = await open_database(
        DatabaseConfig(url=url, schema="outage", connect_timeout_seconds=5, min_pool_size=2)
    )
    cfg = actor_config(
        "ticker", schedule=ScheduleConfig(type="interval", timezone="UTC", seconds=0.5)
    )
    runtime = runtime_for(database, [(ticker, cfg)], poll_interval_seconds=0.2)
    caplog.set_level("INFO")
    try:
        await runtime.start()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(5)
        await asyncio.to_thread(server.start, data_dir)
        for _ in range(150):
            if any("available again" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
    finally:
        await runtime.stop()
        await database.close()
        await asyncio.to_thread(server.stop)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    down = [r for r in loud if "database unavailable" in r.getMessage()]
    back = [r for r in loud if "database available again" in r.getMessage()]
    assert (len(down), len(back)) == (1, 1), [r.getMessage() for r in loud]
    assert not [r for r in loud if r.exc_info], [r.getMessage() for r in loud if r.exc_info]
    assert not [r for r in loud if r.name.startswith("asyncpg")]


def test_a_second_server_with_http_on_runs_its_actors_without_http(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """Two `discord-actor run` of one project with [http] on: the second cannot listen on the
    address the first holds, so it runs its actors without HTTP and says so once, naming the
    address and the setting to change; /healthz stays served by the first."""
    import socket
    import urllib.request

    with socket.socket() as probe:  # a port free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "jobs.py").write_text(ACTORS)
    config = tmp_path / "actor_server.toml"
    config.write_text(
        textwrap.dedent(f"""
        [server]
        poll_interval_seconds = 0.2
        shutdown_grace_seconds = 1

        [database]
        url = "{database_url}"
        schema = "{db_schema}"

        [http]
        enabled = true
        port = {port}

        [[actors]]
        name = "ticker"
        module = "jobs:ticker"
        schedule = {{ type = "immediate" }}
        """)
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs: list[subprocess.Popen[bytes]] = []

    def wait_for(log: Path, text: str) -> str:
        deadline = time.monotonic() + 30
        while text not in log.read_text():
            assert procs[-1].poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no {text!r} in {log.name}: {log.read_text()}"
            time.sleep(0.1)
        return log.read_text()

    def healthz() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return int(answer.status)

    try:
        procs.append(spawn_server(config, logs[0]))
        wait_for(logs[0], f"/healthz at http://127.0.0.1:{port}/")
        wait_for(logs[0], "run 1 of ticker succeeded")
        procs.append(spawn_server(config, logs[1]))
        second = wait_for(logs[1], "started with 1 actor")
        # Its start's slot of the immediate actor runs too (in one process or the other).
        deadline = time.monotonic() + 30
        while len(asyncio.run(fetch(database_url, "SELECT id FROM S.runs", db_schema))) < 2:
            assert time.monotonic() < deadline, "the second start's run did not happen"
            time.sleep(0.1)
        assert procs[1].poll() is None
        warnings = [line for line in second.splitlines() if " WARNING " in line]
        assert len(warnings) == 1, second
        (warning,) = warnings
        assert f"cannot listen on 127.0.0.1:{port} (http.host, http.port in {config}):" in warning
        assert "address already in use; this process runs the actors without HTTP" in warning
        assert "give it another http.port" in warning
        assert healthz() == 200
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(timeout=20) == 0
        assert healthz() == 200  # the first still serves
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    runs = asyncio.run(fetch(database_url, "SELECT status FROM S.runs", db_schema))
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert "Traceback" not in logs[0].read_text() + logs[1].read_text()


async def test_two_processes_run_a_burst_of_keyed_once_schedules_exactly_once(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """2,000 keyed ``Once`` schedules due at one instant (every server's digest at 09:00),
    shared by two ``discord-actor run`` processes: each runs exactly once, every run is
    recorded succeeded, and both processes take part, while runs start ahead of their outcomes
    being written (a place is free when the code ends)."""
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "jobs.py").write_text(ACTORS)
    config_path = tmp_path / "actor_server.toml"
    config_path.write_text(
        textwrap.dedent(f"""
        [server]
        shutdown_grace_seconds = 5

        [database]
        url = "{database_url}"
        schema = "{db_schema}"

        [[actors]]
        name = "digest"
        module = "jobs:ticker"
        """)
    )
    config = load_config(config_path)
    database = await open_database(config.database)
    try:
        schedules = Schedules(Store(database.pool, database.schema), config)
        slot = datetime.now(UTC) + timedelta(seconds=4)
        await schedules.add_many(
            "digest", [NewSchedule(f"guild:{i}", Once(at=slot)) for i in range(2000)]
        )
    finally:
        await database.close()
    await run_two_servers(config_path, tmp_path, 12)
    rows = await fetch(
        database_url,
        "SELECT t.key, r.status, r.instance_id, r.scheduled_for FROM S.runs r"
        " JOIN S.tasks t ON t.id = r.task_id WHERE t.key IS NOT NULL",
        db_schema,
    )
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == 2000, f"{2000 - len(set(keys))} schedules did not run"
    assert len(keys) == 2000, f"{len(keys) - len(set(keys))} runs twice"
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {r["scheduled_for"] for r in rows} == {slot}
    assert len({r["instance_id"] for r in rows}) == 2, "one process ran the whole burst"
