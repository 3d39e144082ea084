"""The runtime on a real PostgreSQL, time stepped with a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from discord_actor import Actor, RunContext, actor
from discord_actor.clock import FakeClock
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database, open_database
from discord_actor.db.store import Operator
from discord_actor.runtime import Alert
from discord_actor.schedules import resume_slot
from discord_actor.testing.harness import ActorHarness, actor_config, run_actor_once

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def every(seconds: float, catch_up: str = "latest") -> ScheduleConfig:
    return ScheduleConfig(type="interval", timezone="UTC", seconds=seconds, catch_up=catch_up)


class Counter(Actor):
    async def run(self, ctx: RunContext) -> None:
        ctx.state["count"] = ctx.state.get("count", 0) + 1
        await ctx.post(f"tick {ctx.state['count']}")


async def reopen(database: Database, **pool_settings: object) -> Database:
    """The same database and schema through a pool with other settings."""
    return await open_database(replace(database.config, **pool_settings))  # type: ignore[arg-type]


async def history(database: Database, actor_name: str) -> list[dict[str, object]]:
    rows = await database.pool.fetch(
        f"SELECT r.* FROM {database.schema}.runs r JOIN {database.schema}.tasks t"
        " ON t.id = r.task_id WHERE t.actor = $1 ORDER BY r.id",
        actor_name,
    )
    return [dict(r) for r in rows]


async def test_state_survives_runs_and_restarts(database: Database) -> None:
    cfg = actor_config("counter", schedule=every(10))
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        first = await h.tick()
        assert [r.state for r in first] == [{"count": 1}]
        second = await h.tick(10)
        assert second[0].state == {"count": 2}
        assert second[0].posted[0]["content"] == "tick 2"
    # A new runtime (a restart) picks up the stored state and the stored next slot.
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        assert await h.tick(5) == []  # next slot is START + 20 s, not "now"
        runs = await h.tick(15)
        assert [r.state["count"] for r in runs] == [3]
        assert runs[0].scheduled_for == START + timedelta(seconds=20)


async def test_failed_run_discards_state_unless_checkpointed(database: Database) -> None:
    @actor
    async def flaky(ctx: RunContext) -> None:
        ctx.state["kept"] = ctx.state.get("kept", 0) + 1
        await ctx.checkpoint()
        ctx.state["lost"] = True
        raise RuntimeError("boom")

    run = await run_actor_once(database, flaky, state={"kept": 41})
    assert run.status == "failed"
    assert run.error_type == "RuntimeError" and run.error_message == "boom"
    assert run.state == {"kept": 42}

    @actor
    async def careless(ctx: RunContext) -> None:
        ctx.state["lost"] = True
        raise ValueError("no checkpoint")

    run = await run_actor_once(database, careless, state={"before": 1}, name="careless")
    assert run.state == {"before": 1}


async def test_timeout_cancels_the_run_and_returns_its_connection(database: Database) -> None:
    @actor
    async def slow(ctx: RunContext) -> None:
        async with ctx.db() as conn:
            await conn.execute("SELECT pg_sleep(30)")

    run = await run_actor_once(database, slow, timeout_seconds=0.3)
    assert run.status == "timed_out"
    assert "timeout_seconds = 0.3" in (run.error_message or "")
    pool = database.pool
    assert pool.get_idle_size() == pool.get_size()
    busy = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"
        " AND state = 'active'"
    )
    assert busy == 0


async def test_retries_are_further_attempts_of_the_same_slot(database: Database) -> None:
    calls: list[int] = []

    @actor
    async def twice_broken(ctx: RunContext) -> None:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt}")

    cfg = actor_config(
        "retrying",
        schedule=every(3600),
        retry=RetryPolicy(attempts=3, backoff_seconds=5, max_backoff_seconds=60),
    )
    async with ActorHarness(database, [(twice_broken, cfg)], clock=FakeClock(START)) as h:
        assert [r.status for r in await h.tick()] == ["failed"]
        assert await h.tick(4) == []  # backoff 5 s not over yet
        assert [(r.attempt, r.trigger) for r in await h.tick(1)] == [(2, "retry")]
        assert await h.tick(9) == []  # second backoff is 10 s
        third = await h.tick(1)
    assert [(r.attempt, r.status) for r in third] == [(3, "succeeded")]
    runs = await history(database, "retrying")
    assert {r["scheduled_for"] for r in runs} == {START}
    assert [r["attempt"] for r in runs] == [1, 2, 3]
    assert calls == [1, 2, 3]


async def test_circuit_breaker_pauses_and_resume_resets(database: Database) -> None:
    @actor
    async def broken(ctx: RunContext) -> None:
        raise RuntimeError("always")

    alerts: list[Alert] = []

    async def collect(alert: Alert) -> None:
        alerts.append(alert)

    cfg = actor_config("broken", schedule=every(60), max_consecutive_failures=3)
    async with ActorHarness(database, [(broken, cfg)], clock=FakeClock(START), alerts=collect) as h:
        runs = await h.tick(120)  # its slots at START, + 60 s and + 120 s
        assert [(r.status, r.consecutive_failures, r.paused) for r in runs] == [
            ("failed", 1, False), ("failed", 2, False), ("failed", 3, True),
        ]
        task = await h.store.operator.task("broken")
        assert task is not None and task["paused"] and task["consecutive_failures"] == 3
        assert "3 consecutive failures" in task["paused_reason"]
        assert await h.tick(600) == []  # paused: nothing runs
        assert await h.store.operator.resume("broken")
        task = await h.store.operator.task("broken")
        assert task is not None and not task["paused"] and task["consecutive_failures"] == 0
        # The store's resume leaves the slot it was held from: due now, it runs at once.
        assert [(r.status, r.consecutive_failures) for r in await h.tick()] == [("failed", 1)]
    # An alert from the second failure in a row on; the third one trips the breaker.
    assert [(a.consecutive_failures, a.paused) for a in alerts] == [(2, False), (3, True)]
    assert "discord-actor resume broken" in alerts[1].text()
    assert "RuntimeError: always" in alerts[1].text()


async def test_pool_exhaustion_is_a_clear_error_and_no_deadlock(database: Database) -> None:
    holding = asyncio.Event()
    release = asyncio.Event()

    @actor
    async def hog(ctx: RunContext) -> None:
        async with ctx.db() as a, ctx.db() as b:
            await a.execute("SELECT 1")
            await b.execute("SELECT 1")
            holding.set()
            await release.wait()

    @actor
    async def starved(ctx: RunContext) -> None:
        await holding.wait()
        try:
            async with ctx.db() as conn:
                await conn.execute("SELECT 1")
        finally:
            release.set()

    # max_pool_size 3: one connection stays with the runtime, the hog takes the other two.
    db = await reopen(database, max_pool_size=3, min_pool_size=1, acquire_timeout_seconds=0.5)
    async with db:
        h_actors = [
            (hog, actor_config("hog", max_connections=2)),
            (starved, actor_config("starved", max_connections=2)),
        ]
        async with ActorHarness(db, h_actors, clock=FakeClock(START)) as h:
            runs = {r.actor: r for r in await h.tick()}
        assert runs["hog"].status == "succeeded"
        assert runs["starved"].status == "failed"
        assert runs["starved"].error_type == "PoolExhausted"
        message = runs["starved"].error_message or ""
        assert "'starved' waited 0.5 s" in message and "3 connections" in message
        assert db.pool.get_idle_size() == db.pool.get_size()


async def test_max_connections_limits_one_actor(database: Database) -> None:
    @actor
    async def greedy(ctx: RunContext) -> None:
        async with ctx.db() as a:
            await a.execute("SELECT 1")
            async with ctx.db() as b:  # a second connection: over its share of 1
                await b.execute("SELECT 1")

    db = await reopen(database, acquire_timeout_seconds=0.3)
    async with db:
        run = await run_actor_once(db, greedy, max_connections=1)
    assert run.status == "failed" and run.error_type == "PoolExhausted"
    assert "max_connections = 1" in (run.error_message or "")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("latest", [("catch_up", "succeeded")]),
        ("skip", [("catch_up", "skipped")]),
        # The last slot is only 30 s late: it runs as a normal scheduled run.
        ("all", [("catch_up", "succeeded")] * 5 + [("schedule", "succeeded")]),
    ],
)
async def test_catch_up_after_downtime(
    database: Database, policy: str, expected: list[tuple[str, str]]
) -> None:
    cfg = actor_config("hourly", schedule=every(600, catch_up=policy))
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        assert [r.trigger for r in await h.tick()] == ["schedule"]
    # Down for an hour: slots at +10 min ... +60 min were missed.
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        runs = await h.advance(timedelta(minutes=60, seconds=30))
        assert [(r.trigger, r.status) for r in runs] == expected
        if policy == "latest":
            assert runs[0].scheduled_for == START + timedelta(minutes=60)
        task = await h.store.operator.task("hourly")
        assert task is not None
        assert task["next_run"] == START + timedelta(minutes=70)


async def test_config_changes_are_reconciled(database: Database) -> None:
    async with ActorHarness(
        database,
        [
            (Counter, actor_config("a", schedule=every(60))),
            (Counter, actor_config("b", schedule=every(60))),
        ],
        clock=FakeClock(START),
    ) as h:
        await h.tick()
    later = FakeClock(START + timedelta(seconds=30))
    async with ActorHarness(
        database, [(Counter, actor_config("a", schedule=every(300)))], clock=later
    ) as h:
        task_a = await h.store.operator.task("a")
        task_b = await h.store.operator.task("b")
        assert task_a is not None and task_a["next_run"] == later.now()  # schedule changed
        assert task_b is not None and task_b["removed_at"] is not None
        runs = await h.tick(3600)
        assert {r.actor for r in runs} == {"a"}
    assert len(await history(database, "b")) == 1  # history kept


async def test_max_instances_allows_overlap(database: Database) -> None:
    gate = asyncio.Event()
    running = 0
    peak = 0

    @actor
    async def overlapping(ctx: RunContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    cfg = actor_config("overlap", schedule=every(10), max_instances=2)
    async with ActorHarness(database, [(overlapping, cfg)], clock=FakeClock(START)) as h:
        rt = h.runtime
        for _ in range(3):
            await rt.sync()
            await rt.run_due()
            h.clock.advance(10)
        gate.set()
        await rt.wait_idle()
    assert peak == 2


async def test_max_concurrent_runs_caps_the_process(database: Database) -> None:
    gate = asyncio.Event()
    both_running = asyncio.Event()
    running = 0
    peak = 0

    @actor
    async def waiting(ctx: RunContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            both_running.set()
        await gate.wait()
        running -= 1

    actors = [(waiting, actor_config(f"w{i}", schedule=every(3600))) for i in range(4)]
    async with ActorHarness(database, actors, clock=FakeClock(START), max_concurrent_runs=2) as h:
        first = await h.runtime.run_due()
        assert len(first) == 2
        await asyncio.wait_for(both_running.wait(), 5)
        assert await h.runtime.run_due() == []  # full: nothing more is claimed
        gate.set()
        await h.runtime.wait_idle()
        rest = await h.tick()
    assert peak == 2
    assert {r.actor for r in rest} | {r.actor for r in first} == {"w0", "w1", "w2", "w3"}


async def test_an_actors_session_changes_do_not_leak_into_the_pool(database: Database) -> None:
    @actor
    async def messy(ctx: RunContext) -> None:
        async with ctx.db() as conn:
            await conn.execute("SELECT pg_advisory_lock(4242)")
            await conn.execute("LISTEN somewhere")
            await conn.execute("SET statement_timeout = '1h'")
            tx = conn.transaction()
            await tx.start()  # left open on purpose

    run = await run_actor_once(database, messy)
    assert run.status == "succeeded"
    held = await database.pool.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
    )
    listening = await database.pool.fetch("SELECT pg_listening_channels()")
    assert held == 0 and listening == []
    for _ in range(database.pool.get_size()):
        assert await database.pool.fetchval("SHOW statement_timeout") == "0"


async def test_state_that_json_cannot_hold_fails_the_run_cleanly(database: Database) -> None:
    @actor
    async def remembers_a_datetime(ctx: RunContext) -> None:
        ctx.state["when"] = START  # a datetime: not JSON

    run = await run_actor_once(database, remembers_a_datetime, state={"before": 1})
    assert run.status == "failed"
    assert run.error_type == "StateNotSerializable"
    assert "ctx.state must hold only JSON values" in (run.error_message or "")
    assert run.state == {"before": 1}


async def test_an_outcome_the_database_refuses_still_ends_the_run(database: Database) -> None:
    @actor
    async def lone_surrogate(ctx: RunContext) -> None:
        await ctx.post("text with a lone surrogate \ud800, which jsonb cannot store")

    run = await run_actor_once(database, lone_surrogate)
    assert run.status == "failed"
    assert run.error_type == "RecordError"
    assert "could not be recorded" in (run.error_message or "")


async def test_timeouts_during_connection_release_still_end_the_run(database: Database) -> None:
    # A run that keeps borrowing connections: its timeout often lands while one is returned.
    @actor
    async def busy(ctx: RunContext) -> None:
        for _ in range(3000):  # far longer than its timeout, but bounded if the timeout is lost
            async with ctx.db() as conn:
                await conn.execute("SELECT 1")

    db = await reopen(database, acquire_timeout_seconds=1.0)
    async with db:
        statuses = [
            (
                await run_actor_once(
                    db, busy, name=f"busy{i}", timeout_seconds=0.2, max_connections=2
                )
            ).status
            for i in range(6)
        ]
        assert statuses == ["timed_out"] * 6

        # Every permit came back: an actor can still take its whole share.
        @actor
        async def two(ctx: RunContext) -> None:
            async with ctx.db() as a, ctx.db() as b:
                await a.execute("SELECT 1")
                await b.execute("SELECT 1")

        assert (await run_actor_once(db, two, name="two", max_connections=2)).status == (
            "succeeded"
        )


async def test_jitter_longer_than_the_misfire_grace_is_not_a_missed_slot(
    database: Database,
) -> None:
    schedule = ScheduleConfig(
        type="interval", timezone="UTC", seconds=3600, jitter_seconds=300, catch_up="skip"
    )
    cfg = actor_config("jittery", schedule=schedule)
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        first = await h.tick(300)  # the first slot (START) is due within its 300 s of jitter
        second = await h.tick(3600)
    assert [(r.trigger, r.status) for r in first + second] == [("schedule", "succeeded")] * 2


async def test_a_pending_retry_is_not_lost_when_another_run_fails(database: Database) -> None:
    @actor
    async def failing_twice(ctx: RunContext) -> None:
        if ctx.attempt < 2:
            raise RuntimeError(f"attempt {ctx.attempt} of {ctx.trigger}")

    cfg = actor_config("two_retries", schedule=every(3600), retry=RetryPolicy(attempts=2))
    async with ActorHarness(database, [(failing_twice, cfg)], clock=FakeClock(START)) as h:
        assert [r.status for r in await h.tick()] == ["failed"]  # slot START, retry in 5 s
        assert await h.store.operator.trigger("two_retries")
        assert [r.trigger for r in await h.tick()] == ["manual"]  # fails too: a second retry
        retried = await h.tick(5)
    assert sorted((r.trigger, r.attempt, r.status) for r in retried) == [
        ("retry", 2, "succeeded"),
        ("retry", 2, "succeeded"),
    ]
    slots = {r.scheduled_for for r in retried}
    assert START in slots and len(slots) == 2


async def test_an_operator_pause_is_not_reported_as_the_circuit_breaker(
    database: Database,
) -> None:
    alerts: list[Alert] = []

    async def collect(alert: Alert) -> None:
        alerts.append(alert)

    gate = asyncio.Event()

    @actor
    async def slow_failure(ctx: RunContext) -> None:
        await gate.wait()
        raise RuntimeError("late")

    cfg = actor_config("paused_meanwhile", schedule=every(60), max_consecutive_failures=1)
    async with ActorHarness(
        database, [(slow_failure, cfg)], clock=FakeClock(START), alerts=collect
    ) as h:
        await h.runtime.run_due()
        assert await h.store.operator.pause("paused_meanwhile", "maintenance")
        gate.set()
        await h.runtime.wait_idle()
    assert [a.paused for a in alerts] == []  # one failure: no run of failures, no breaker
    task = await h.store.operator.task("paused_meanwhile")
    assert task is not None and task["paused_reason"] == "maintenance"


async def test_recording_waits_out_a_lock_timeout(database: Database) -> None:
    name = await database.pool.fetchval("SELECT current_database()")
    await database.pool.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '100ms'")
    holder: list[asyncpg.Connection] = []
    try:
        db = await reopen(database)

        @actor
        async def job(ctx: RunContext) -> None:
            # Someone else (an operator's psql session...) holds the task row for a while.
            conn = await asyncpg.connect(db.url)
            await conn.execute("BEGIN")
            await conn.execute(f"SELECT 1 FROM {db.schema}.tasks WHERE actor = 'job' FOR UPDATE")
            holder.append(conn)

        async def release_later() -> None:
            await asyncio.sleep(0.6)
            await holder[0].execute("ROLLBACK")

        async with db:
            async with ActorHarness(
                db, [(job, actor_config("job", schedule=every(60)))], clock=FakeClock(START)
            ) as h:
                await h.runtime.run_due()
                releasing = asyncio.create_task(release_later())
                await h.runtime.wait_idle()
                await releasing
                runs = await history(db, "job")
    finally:
        await database.pool.execute(f'ALTER DATABASE "{name}" RESET lock_timeout')
        for conn in holder:
            await conn.close()
    assert [r["status"] for r in runs] == ["succeeded"]


async def test_times_are_in_the_schedules_zone_in_ctx_and_in_logs(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A cron actor in New York sees its slot with New York's offset, and the failure line
    gives the retry time in the same zone, to the second."""
    seen: list[datetime] = []

    @actor
    async def nightly(ctx: RunContext) -> None:
        seen.append(ctx.scheduled_for)
        raise RuntimeError("feed down")

    cron = ScheduleConfig(type="cron", timezone="America/New_York", expression="0 7 * * *")
    cfg = actor_config("nightly", schedule=cron, retry=RetryPolicy(attempts=2, backoff_seconds=5))
    caplog.set_level("INFO", logger="discord_actor.runtime")
    async with ActorHarness(database, [(nightly, cfg)], clock=FakeClock(START)) as h:
        runs = await h.tick(timedelta(hours=1))  # 13:00 UTC = 08:00 in New York: 07:00 is past
        runs += await h.tick(timedelta(hours=23))
    assert [r.status for r in runs] == ["failed"]
    assert seen[0].isoformat() == "2026-01-06T07:00:00-05:00"
    line = next(r.getMessage() for r in caplog.records if "feed down" in r.getMessage())
    assert line.endswith("; retry at 2026-01-06T07:00:05-05:00"), line


async def test_an_actor_whose_setup_fails_is_recorded_broken_and_alerted(
    database: Database,
) -> None:
    alerts: list[Alert] = []

    async def sink(alert: Alert) -> None:
        alerts.append(alert)

    class Fragile(Counter):
        fail = True

        async def setup(self) -> None:
            if Fragile.fail:
                raise ConnectionError("token file missing")

    cfg = actor_config("fragile", schedule=every(10))
    async with ActorHarness(database, [(Fragile, cfg)], clock=FakeClock(START), alerts=sink) as h:
        assert await h.tick(30) == []  # it never runs
        row = await h.store.operator.task("fragile")
        assert row is not None
        assert row["setup_error"] == "ConnectionError: token file missing"
    assert [(a.actor, a.setup) for a in alerts] == [("fragile", True)]
    assert "setup() failed (ConnectionError: token file missing)" in alerts[0].text()
    Fragile.fail = False  # fixed: the next start clears it
    async with ActorHarness(database, [(Fragile, cfg)], clock=FakeClock(START)) as h:
        row = await h.store.operator.task("fragile")
        assert row is not None and row["setup_error"] is None


async def test_resume_after_slots_passed_goes_on_at_the_next_slot(database: Database) -> None:
    """Slots that fell while the actor was paused are not caught up: the first run after the
    resume is at its next slot, a ``schedule`` run."""
    cfg = actor_config("counter", schedule=every(60))
    clock = FakeClock(START)
    async with ActorHarness(database, [(Counter, cfg)], clock=clock) as h:
        assert len(await h.tick()) == 1
        await h.store.operator.pause("counter", "maintenance", Operator("alice", "CLI on host db1"))
        assert await h.tick(600) == []  # ten slots pass while it is paused
        task = await h.store.operator.task("counter")
        assert task is not None
        slot = resume_slot(cfg.schedule, task, clock.now())
        assert slot is not None
        passed, new, due = slot
        assert new == START + timedelta(seconds=660)
        await h.store.operator.resume("counter", moved=(passed, new, due))
        assert await h.tick(1) == []  # no burst, no catch-up at once
        runs = await h.tick(59)
    assert [(r.trigger, r.scheduled_for) for r in runs] == [("schedule", new)]
