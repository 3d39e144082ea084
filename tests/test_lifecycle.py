"""The runtime with its background loops on the real clock: triggers, shutdown, recovery."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from discord_actor import RunContext, actor
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database
from discord_actor.db.store import Store
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import RecordingPlatform, actor_config, load, make_config

HOURLY = ScheduleConfig(type="interval", timezone="UTC", seconds=3600)  # first slot: now
FAR_AWAY = ScheduleConfig(type="once", timezone="UTC", at=datetime(2099, 1, 1, tzinfo=UTC))


def runtime_for(
    database: Database, actors: list[tuple[object, object]], **server: object
) -> Runtime:
    config = make_config(database.config, [cfg for _, cfg in actors], **server)  # type: ignore[misc]
    loaded = {
        cfg.name: load(impl, cfg) for (impl, _), cfg in zip(actors, config.actors, strict=True)
    }
    platform = RecordingPlatform()
    return Runtime(
        config,
        database,
        loaded,
        platforms={"console": platform, "discord": platform, "none": platform},
    )


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
        operator = Store(database.pool, database.schema)
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
    runs = {r["actor"]: r for r in await store.history()}
    assert runs["quick"]["status"] == "succeeded"
    assert runs["stuck"]["status"] == "cancelled"
    reason = "cancelled by shutdown after shutdown_grace_seconds = 1"
    assert runs["stuck"]["error_message"] == reason
    stuck_task = await store.task("stuck")
    assert stuck_task is not None and stuck_task["retry_attempt"] == 2  # runs again next start
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
        task = await store.task("steady")
        assert task is not None
        await store.register_instance("ghost:1:dead", "ghost", 1, 0.3)
        slot = datetime.now(UTC) - timedelta(minutes=1)
        await database.pool.execute(
            f"INSERT INTO {database.schema}.runs (task_id, scheduled_for, trigger, attempt, status,"
            " instance_id) VALUES ($1, $2, 'schedule', 1, 'running', 'ghost:1:dead')",
            task["id"],
            slot,
        )

        async def retried() -> bool:
            return [r["status"] for r in await store.history("steady")] == [
                "succeeded",
                "abandoned",
            ]

        await wait_for(retried, within=5)
    finally:
        await runtime.stop()
    runs = await store.history("steady")
    assert [(r["attempt"], r["trigger"], r["scheduled_for"]) for r in runs] == [
        (2, "retry", slot),
        (1, "schedule", slot),
    ]
    assert "lease" in runs[1]["error_message"]
