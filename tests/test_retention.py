"""Retention: a running server deletes finished runs older than run_retention_days, one process
at a time. Old runs are inserted with real SQL; real runtimes with their background loops."""

from __future__ import annotations

import asyncio
import time

from servers import runtime_for

from discord_actor import RunContext, actor, retention
from discord_actor.config import ScheduleConfig
from discord_actor.db import Database
from discord_actor.db.store import Store
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import actor_config


@actor
async def keeper(ctx: RunContext) -> None:
    pass


def runtime(database: Database, instance: str) -> Runtime:
    cfg = actor_config("keeper", schedule=ScheduleConfig(type="interval", timezone="UTC",
                                                        seconds=3600))
    return runtime_for(database, [(keeper, cfg)], instance_id=instance, run_retention_days=30)


async def add_runs(database: Database, days_ago: list[float], status: str = "succeeded") -> None:
    """Finished runs of keeper, ``days_ago`` each, as a server long ago would have recorded."""
    s = database.schema
    await database.pool.execute(
        f"""
        INSERT INTO {s}.runs (task_id, scheduled_for, trigger, status, started_at, finished_at,
                             duration_ms)
        SELECT t.id, now() - make_interval(days => d) - make_interval(secs => n),
               'schedule', $2, now() - make_interval(days => d),
               now() - make_interval(days => d), 1
        FROM {s}.tasks t,
             unnest($1::int[]) WITH ORDINALITY AS a(d, n)
        WHERE t.actor = 'keeper'
        """,
        [int(d) for d in days_ago],
        status,
    )


async def ages(database: Database) -> list[int]:
    rows = await database.pool.fetch(
        f"SELECT extract(day FROM now() - finished_at)::int AS age FROM {database.schema}.runs"
        " WHERE finished_at IS NOT NULL ORDER BY age"
    )
    return [r["age"] for r in rows]


async def wait_until(predicate: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_a_starting_server_deletes_old_runs_and_keeps_new_ones(database: Database) -> None:
    first = runtime(database, "first")
    await first.start()  # registers keeper's task (and runs its first slot)
    await first.stop()
    await add_runs(database, [400, 90, 31, 29, 1])
    await add_runs(database, [45], status="failed")

    second = runtime(database, "second")
    await second.start()
    try:
        async def pruned() -> bool:
            return all(age < 30 for age in await ages(database))

        await wait_until(pruned)
        assert [a for a in await ages(database) if a > 0] == [1, 29]
    finally:
        await second.stop()


async def test_one_process_deletes_at_a_time(database: Database) -> None:
    first = runtime(database, "first")
    await first.start()
    await first.stop()
    await add_runs(database, [100] * 2500)
    store = Store(database.pool, database.schema)

    # Another process is deleting (it holds the retention lock): this server leaves it.
    async with database.pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock(hashtext($1))", store.retention.lock)
        busy = runtime(database, "busy")
        await busy.start()
        try:
            await asyncio.sleep(1.0)
            assert len([a for a in await ages(database) if a >= 30]) == 2500
        finally:
            await busy.stop()
        await holder.execute("SELECT pg_advisory_unlock(hashtext($1))", store.retention.lock)

    # Two passes at once (two servers starting together): each batch under the lock, so
    # together they delete every old run exactly once; a pass that finds it taken says so.
    a, b = await asyncio.gather(
        retention.prune(Store(database.pool, database.schema), 30, batch=500, pause=0.01),
        retention.prune(Store(database.pool, database.schema), 30, batch=500, pause=0.01),
    )
    assert a.deleted + b.deleted == 2500
    assert [x for x in await ages(database) if x >= 30] == []


async def test_keyed_schedules_that_are_over_go_with_their_runs(database: Database) -> None:
    """A reminder that fired (or was removed) long ago goes once its runs are gone; a pending
    one, and one whose runs are still kept, stay."""
    from datetime import UTC, datetime, timedelta

    from discord_actor import Once

    rt = runtime(database, "keyed")
    await rt.start(loops=False)
    try:
        far = datetime.now(UTC) + timedelta(days=1)
        for key in ("fired-long-ago", "removed-long-ago", "pending", "fired-recently"):
            await rt.schedules.add("keeper", key=key, schedule=Once(at=far))
        await rt.schedules.remove("keeper", "removed-long-ago")
        s = database.schema
        # Two of them ran: one long ago (its run past retention), one recently.
        await database.pool.execute(
            f"UPDATE {s}.tasks SET next_run = NULL, due_at = NULL WHERE key LIKE 'fired-%'"
        )
        await database.pool.execute(
            f"INSERT INTO {s}.runs (task_id, scheduled_for, trigger, status, started_at,"
            " finished_at) SELECT id, now() - make_interval(days => d), 'schedule',"
            " 'succeeded', now() - make_interval(days => d), now() - make_interval(days => d)"
            f" FROM {s}.tasks, LATERAL (SELECT CASE key WHEN 'fired-long-ago' THEN 40 ELSE 1"
            " END AS d) x WHERE key LIKE 'fired-%'"
        )
        await database.pool.execute(
            f"UPDATE {s}.tasks SET updated_at = now() - make_interval(days => 40)"
            " WHERE key IS NOT NULL"
        )
        await retention.prune(rt.store, 30)
        keys = await database.pool.fetch(
            f"SELECT key FROM {s}.tasks WHERE key IS NOT NULL ORDER BY key"
        )
        assert [r["key"] for r in keys] == ["fired-recently", "pending"]
    finally:
        await rt.stop()
