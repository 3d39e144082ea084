"""Runs whose actor code misbehaves: values PostgreSQL refuses, huge errors, swallowed
cancellations, leaked connections. On a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import textwrap
import time
from pathlib import Path

import asyncpg
import pytest
from servers import fetch, spawn_server

from discord_actor import RunContext, actor
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database, open_database
from discord_actor.storable import MAX_ERROR_MESSAGE, MAX_TRACEBACK
from discord_actor.testing.harness import ActorHarness, actor_config, run_actor_once


@pytest.mark.parametrize(
    ("value", "said"),
    [(float("nan"), "ctx.state['v'] (nan)"), ("a\x00b", "ctx.state['v'] (a NUL character)")],
)
async def test_state_postgresql_refuses_fails_the_run_naming_the_key(
    database: Database, value: object, said: str
) -> None:
    @actor
    async def odd_state(ctx: RunContext) -> None:
        ctx.state["v"] = value

    run = await run_actor_once(database, odd_state, state={"before": 1})
    assert run.status == "failed"
    assert run.error_type == "StateNotSerializable"
    assert said in (run.error_message or "")
    assert run.state == {"before": 1}


async def test_nul_in_a_post_or_an_error_is_stored_replaced(database: Database) -> None:
    @actor
    async def nul_post(ctx: RunContext) -> None:
        await ctx.post("a \x00 b")

    run = await run_actor_once(database, nul_post, name="nul_post")
    assert run.status == "succeeded"
    assert run.posted[0]["content"] == "a \ufffd b"

    @actor
    async def nul_error(ctx: RunContext) -> None:
        raise RuntimeError("bad \x00 byte")

    run = await run_actor_once(database, nul_error, name="nul_error")
    assert (run.status, run.error_type) == ("failed", "RuntimeError")
    assert run.error_message == "bad \ufffd byte"


async def test_the_log_line_says_what_was_stored(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    @actor
    async def surrogate(ctx: RunContext) -> None:
        await ctx.post("a lone surrogate \ud800, which jsonb refuses")

    with caplog.at_level(logging.INFO, logger="discord_actor.runtime"):
        run = await run_actor_once(database, surrogate)
    assert (run.status, run.error_type) == ("failed", "RecordError")
    said = [r.getMessage() for r in caplog.records if f"run {run.id} of" in r.getMessage()]
    assert not [m for m in said if "succeeded" in m], said
    assert [m for m in said if "failed" in m], said


async def test_error_texts_are_capped(database: Database) -> None:
    @actor
    async def verbose(ctx: RunContext) -> None:
        raise RuntimeError("E" * 20_000_000 + "the end")

    run = await run_actor_once(database, verbose)
    row = await database.pool.fetchrow(
        f"SELECT error_message, error_traceback FROM {database.schema}.runs WHERE id = $1", run.id
    )
    message, tb = row["error_message"], row["error_traceback"]
    assert len(message) <= MAX_ERROR_MESSAGE and len(tb) <= MAX_TRACEBACK
    assert "characters cut …]" in message and message.endswith("the end")
    assert message.startswith("EEEE") and "RuntimeError" in tb
    assert len(json.dumps(dict(row))) < 2 * (MAX_ERROR_MESSAGE + MAX_TRACEBACK)


def every_hour() -> ScheduleConfig:
    return ScheduleConfig(type="interval", timezone="UTC", seconds=3600)


async def test_code_that_swallows_its_cancellation_still_times_out(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()  # lets the runaway end when the test is done
    calls = 0

    @actor
    async def stubborn(ctx: RunContext) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            return
        async with ctx.db() as conn:
            await conn.execute("SELECT 1")
            while not release.is_set():
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass

    cfg = actor_config(
        "stubborn", schedule=every_hour(), timeout_seconds=0.3, retry=RetryPolicy(attempts=1)
    )
    pool = database.pool
    async with ActorHarness(database, [(stubborn, cfg)], shutdown_grace_seconds=1) as h:
        try:
            with caplog.at_level(logging.WARNING, logger="discord_actor.runtime"):
                runs = await asyncio.wait_for(h.tick(), 15)
            assert [r.status for r in runs] == ["timed_out"]
            assert "timeout_seconds = 0.3" in (runs[0].error_message or "")
            warned = [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
            assert len(warned) == 1 and f"run {runs[0].id} of stubborn" in warned[0]
            # Its connection is back in the pool and its slot is free, while it still loops.
            assert not release.is_set() and h.runtime.executor.runaway == 1
            assert h.runtime.budget.in_use["stubborn"] == 0
            assert pool.get_idle_size() == pool.get_size()
            again = await asyncio.wait_for(h.tick(3600), 15)
            assert [r.status for r in again] == ["succeeded"]
        finally:
            release.set()  # the test is over: the runaway may end


async def test_a_connection_kept_past_the_run_is_reclaimed_quietly(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db = await open_database(database.config)
    kept: list[object] = []

    @actor
    async def leaky(ctx: RunContext) -> None:
        held = ctx.db()
        kept.append(held)
        conn = await held.__aenter__()  # never exited
        await conn.execute("SELECT 1")

    caplog.set_level(logging.WARNING)
    try:
        async with ActorHarness(db, [(leaky, actor_config("leaky"))]) as h:
            runs = await h.tick()
    finally:
        started = time.monotonic()
        await db.close()
        took = time.monotonic() - started
    kept.clear()
    gc.collect()
    await asyncio.sleep(0.2)  # the generator's finalizer, if any, runs
    assert [r.status for r in runs] == ["succeeded"]
    assert took < 3, f"closing the pool took {took:.1f} s"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "actor leaky" in warnings[0] and "kept 1 database connection" in warnings[0]


STUBBORN = """
import asyncio
from discord_actor import RunContext, actor

@actor(platform="none")
async def stubborn(ctx: RunContext) -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
"""




@pytest.mark.slow
async def test_shutdown_is_bounded_whatever_actor_code_does(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "jobs.py").write_text(STUBBORN)
    config = tmp_path / "actor_server.toml"
    config.write_text(
        textwrap.dedent(f"""
        [server]
        shutdown_grace_seconds = 1
        poll_interval_seconds = 0.2

        [database]
        url = "{database_url}"
        schema = "{db_schema}"

        [[actors]]
        name = "stubborn"
        module = "jobs:stubborn"
        schedule = {{ type = "interval", seconds = 3600 }}
        """)
    )
    log = tmp_path / "server.log"
    proc = spawn_server(config, log)
    runs = f"SELECT status FROM {db_schema}.runs"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(asyncpg.UndefinedTableError):
                if await fetch(database_url, runs):
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the actor did not start: " + log.read_text()[-2000:])
        proc.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        # shutdown_grace_seconds, the moment given to cancelled code, recording, closing.
        code = await asyncio.to_thread(proc.wait, 15)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert took < 1 + 2 + 6, text[-2000:]
    assert [r["status"] for r in await fetch(database_url, runs)] == ["cancelled"]
    assert "run 1 of stubborn: the actor's code did not stop" in text
    assert "Traceback" not in text


STALLS = """
import time
from discord_actor import RunContext, actor

@actor(platform="none")
async def stalls(ctx: RunContext) -> None:
    if ctx.attempt == 1:
        time.sleep(11)  # blocks the whole process, past its lease
    async with ctx.db() as conn:  # the side effect
        await conn.execute(
            f"INSERT INTO {ctx.settings['table']} VALUES ($1, $2)", ctx.run_id, ctx.attempt
        )
"""


@pytest.mark.slow
async def test_a_process_stalled_past_its_lease_stops_before_repeating_side_effects(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    table = f'public."{db_schema}_effects"'
    await fetch(database_url, f"CREATE TABLE {table} (run_id bigint, attempt int)")
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "jobs.py").write_text(STALLS)
    config = tmp_path / "actor_server.toml"
    config.write_text(
        textwrap.dedent(f"""
        [server]
        lease_seconds = 6
        poll_interval_seconds = 0.2
        shutdown_grace_seconds = 1

        [database]
        url = "{database_url}"
        schema = "{db_schema}"

        [[actors]]
        name = "stalls"
        module = "jobs:stalls"
        schedule = {{ type = "interval", seconds = 3600 }}
        retry = {{ attempts = 3, backoff_seconds = 0.5 }}
        settings = {{ table = '{table}' }}
        """)
    )
    logs = [tmp_path / f"server{i}.log" for i in range(2)]
    procs = [spawn_server(config, log) for log in logs]
    try:
        # The first attempt stalls its process for 11 s; the other declares it dead after the
        # 6 s lease and runs attempt 2. Then the stalled one wakes up.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if any("stalled for" in log.read_text() for log in logs):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            await asyncio.to_thread(p.wait, 20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = "\n".join(log.read_text() for log in logs)
    effects = await fetch(database_url, f"SELECT * FROM {table} ORDER BY run_id")
    runs = await fetch(
        database_url, f"SELECT id, attempt, status FROM {db_schema}.runs ORDER BY id"
    )
    await fetch(database_url, f"DROP TABLE {table}")
    assert [r["attempt"] for r in effects] == [2], (runs, text[-3000:])
    assert runs[0]["status"] == "abandoned" and runs[1]["status"] == "succeeded", runs
    assert "was stalled for" in text
