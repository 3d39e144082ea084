"""The runtime with its background loops on the real clock: triggers, shutdown, recovery."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from servers import runtime_for

from discord_actor import RunContext, actor
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database, open_database
from discord_actor.db.store import Store
from discord_actor.testing.harness import actor_config

HOURLY = ScheduleConfig(type="interval", timezone="UTC", seconds=3600)  # first slot: now
FAR_AWAY = ScheduleConfig(type="once", timezone="UTC", at=datetime(2099, 1, 1, tzinfo=UTC))


async def wait_for(predicate: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_manual_trigger_is_picked_up_within_a_second(database: Database) -> None:
    ran = asyncio.Event()

    @actor
    async def on_demand(ctx: RunContext) -> None:
        assert ctx.trigger == "manual"
        ran.set()

    # A long poll interval: only LISTEN/NOTIFY can make the trigger fast.
    runtime = runtime_for(
        database,
        [(on_demand, actor_config("on_demand", schedule=FAR_AWAY))],
        poll_interval_seconds=30,
    )
    await runtime.start()
    try:
        await asyncio.sleep(0.3)  # let the listener connect
        operator = Store(database.pool, database.schema).operator
        started = time.monotonic()
        assert await operator.trigger("on_demand")
        await asyncio.wait_for(ran.wait(), timeout=1.0)
        latency = time.monotonic() - started
    finally:
        await runtime.stop()
    assert latency < 1.0
    runs = await operator.history("on_demand")
    assert [(r["trigger"], r["status"]) for r in runs] == [("manual", "succeeded")]


async def test_graceful_shutdown_finishes_quick_runs_and_cancels_the_rest(
    database: Database,
) -> None:
    started: set[str] = set()

    @actor
    async def quick(ctx: RunContext) -> None:
        started.add("quick")
        await asyncio.sleep(0.3)
        ctx.state["done"] = True

    @actor
    async def stuck(ctx: RunContext) -> None:
        started.add("stuck")
        async with ctx.db() as conn:
            await conn.execute("SELECT pg_sleep(60)")

    immediate = ScheduleConfig(type="immediate", timezone="UTC")
    runtime = runtime_for(
        database,
        [
            (quick, actor_config("quick", schedule=immediate)),
            (stuck, actor_config("stuck", schedule=HOURLY, retry=RetryPolicy(attempts=2))),
        ],
        shutdown_grace_seconds=1.0,
    )
    store = runtime.store
    await runtime.start()

    async def both_started() -> bool:
        return started == {"quick", "stuck"}

    await wait_for(both_started)
    t0 = time.monotonic()
    await runtime.stop()
    assert time.monotonic() - t0 < 5
    runs = {r["actor"]: r for r in await store.operator.history()}
    assert runs["quick"]["status"] == "succeeded"
    assert runs["stuck"]["status"] == "cancelled"
    reason = "cancelled by shutdown after shutdown_grace_seconds = 1"
    assert runs["stuck"]["error_message"] == reason
    retries = await store.operator.retries("stuck")
    assert [r["attempt"] for r in retries] == [2]  # runs again at the next start
    assert await database.pool.fetchval(f"SELECT count(*) FROM {database.schema}.instances") == 0
    assert database.pool.get_idle_size() == database.pool.get_size()


async def test_runs_of_a_dead_process_are_abandoned_and_retried(database: Database) -> None:
    @actor
    async def steady(ctx: RunContext) -> None:
        ctx.state["attempts"] = [*ctx.state.get("attempts", []), ctx.attempt]

    cfg = actor_config("steady", schedule=FAR_AWAY, retry=RetryPolicy(attempts=2))
    runtime = runtime_for(database, [(steady, cfg)], lease_seconds=0.6, poll_interval_seconds=0.2)
    store = runtime.store
    await runtime.start()
    try:
        # A process that claimed a run and then died: registered, never heartbeats again.
        task = await store.operator.task("steady")
        assert task is not None
        await store.instances.register("ghost:1:dead", "ghost", 1, 0.3)
        slot = datetime.now(UTC) - timedelta(minutes=1)
        await database.pool.execute(
            f"INSERT INTO {database.schema}.runs (task_id, scheduled_for, trigger, attempt, status,"
            " instance_id) VALUES ($1, $2, 'schedule', 1, 'running', 'ghost:1:dead')",
            task["id"],
            slot,
        )

        async def retried() -> bool:
            return [r["status"] for r in await store.operator.history("steady")] == [
                "succeeded",
                "abandoned",
            ]

        await wait_for(retried, within=5)
    finally:
        await runtime.stop()
    runs = await store.operator.history("steady")
    assert [(r["attempt"], r["trigger"], r["scheduled_for"]) for r in runs] == [
        (2, "retry", slot),
        (1, "schedule", slot),
    ]
    assert "lease" in runs[1]["error_message"]


async def test_a_process_declared_dead_stops_its_runs(database: Database) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @actor
    async def long_job(ctx: RunContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runtime = runtime_for(
        database, [(long_job, actor_config("long_job", schedule=HOURLY))], lease_seconds=0.6
    )
    await runtime.start()
    try:
        await asyncio.wait_for(started.wait(), 5)
        # Another process decides this one is dead (as after a long stall) and takes its run.
        schema = database.schema
        await database.pool.execute(
            f"DELETE FROM {schema}.instances WHERE id = $1", runtime.instance_id
        )
        await database.pool.execute(
            f"UPDATE {schema}.runs SET status = 'abandoned', finished_at = now()"
            " WHERE instance_id = $1",
            runtime.instance_id,
        )
        await asyncio.wait_for(cancelled.wait(), 2)  # within a heartbeat (0.2 s)
        await runtime.wait_idle()
    finally:
        await runtime.stop()
    runs = await runtime.store.operator.history("long_job")
    assert [r["status"] for r in runs] == ["abandoned"]  # not overwritten by this process


async def test_the_loops_survive_a_read_only_database(database: Database) -> None:
    ticks: list[float] = []

    @actor
    async def tick(ctx: RunContext) -> None:
        ticks.append(time.monotonic())

    every_200ms = ScheduleConfig(type="interval", timezone="UTC", seconds=0.2)
    db = await open_database(database.config)
    name = await database.pool.fetchval("SELECT current_database()")
    kick = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name ="
        " 'discord-actor' AND pid <> pg_backend_pid() AND datname = current_database()"
    )
    runtime = runtime_for(
        db,
        [(tick, actor_config("tick", schedule=every_200ms))],
        lease_seconds=3,
        poll_interval_seconds=0.2,
    )
    try:
        await runtime.start()
        await asyncio.sleep(0.6)
        # A failover-like window: every new transaction is read-only for a second.
        await database.pool.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
        )
        await database.pool.execute(kick)
        await asyncio.sleep(1.0)
        await database.pool.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await database.pool.execute(kick)
        before = len(ticks)
        await asyncio.sleep(2.0)
        assert len(ticks) - before >= 3, "the scheduler stopped after the read-only window"
        assert all(not t.done() for t in runtime._background)
    finally:
        await database.pool.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await runtime.stop()
        await db.close()
    runs = await Store(database.pool, database.schema).operator.history("tick", limit=1000)
    assert "running" not in {r["status"] for r in runs}
