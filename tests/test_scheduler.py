"""The scheduler at work with its background loops, on the real clock: it holds only what is
due soon, sees operators and other processes within a second, and shares the work."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from servers import runtime_for

from discord_actor import Once, RunContext, actor
from discord_actor.config import ActorConfig, RetryPolicy, ScheduleConfig
from discord_actor.db import Database
from discord_actor.keyed import NewSchedule
from discord_actor.runtime import Runtime
from discord_actor.scheduler import share_of
from discord_actor.testing.harness import actor_config

HOURLY = 300  # actors that ran once and are not due again for an hour


def every(seconds: float) -> ScheduleConfig:
    return ScheduleConfig(type="interval", timezone="UTC", seconds=seconds)


@actor(platform="none")
async def noop(ctx: RunContext) -> None:
    pass


@actor(platform="none")
async def flaky(ctx: RunContext) -> None:
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")


def configs() -> list[ActorConfig]:
    hourly = [actor_config(f"hourly{i:03d}", schedule=every(3600)) for i in range(HOURLY)]
    return [
        actor_config("ticker", schedule=every(0.3)),
        actor_config(
            "flaky",
            schedule=every(3600),
            retry=RetryPolicy(attempts=2, backoff_seconds=0.2, max_backoff_seconds=1),
        ),
        *hourly,
    ]


@asynccontextmanager
async def running(
    database: Database, cfgs: list[ActorConfig], instance: str
) -> AsyncIterator[Runtime]:
    impls = {"flaky": flaky}
    runtime = runtime_for(
        database,
        [(impls.get(c.name, noop), c) for c in cfgs],
        instance_id=instance,
        poll_interval_seconds=1.0,
        lease_seconds=3.0,
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Poll ``check`` until it holds; returns how long it took (fails after ``seconds``)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not seen within {seconds} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def runs_of(database: Database, actor_name: str, since: datetime | None = None) -> int:
    schema = database.schema
    return int(
        await database.pool.fetchval(
            f'SELECT count(*) FROM "{schema}".runs r JOIN "{schema}".tasks t ON t.id = r.task_id'
            " WHERE t.actor = $1 AND ($2::timestamptz IS NULL OR r.started_at > $2)",
            actor_name,
            since,
        )
    )


async def db_now(database: Database) -> datetime:
    now: datetime = await database.pool.fetchval("SELECT clock_timestamp()")
    return now


async def test_operators_and_other_processes_are_seen_within_a_second(database: Database) -> None:
    store_runs = lambda name: runs_of(database, name)  # noqa: E731
    async with running(database, configs(), "a") as runtime:
        store = runtime.store

        async def all_first_runs_done() -> bool:
            n = await database.pool.fetchval(
                f'SELECT count(*) FROM "{database.schema}".runs WHERE status <> $1', "running"
            )
            return int(n) >= HOURLY + 2

        await within(15, all_first_runs_done)
        await asyncio.sleep(1.2)  # the next read of the window
        # 302 actors, but between slots the scheduler holds only the ticker (and a retry).
        assert runtime.scheduler.held <= 3

        # A retry is due 0.2 s after the failure: it ran without a full reload.
        async def retried() -> bool:
            return await database.pool.fetchval(
                f'SELECT count(*) FROM "{database.schema}".runs r'
                f' JOIN "{database.schema}".tasks t ON t.id = r.task_id'
                " WHERE t.actor = 'flaky' AND r.attempt = 2 AND r.status = 'succeeded'"
            ) == 1

        await within(2, retried)

        # A manual trigger of an hourly actor runs within a second.
        before = await store_runs("hourly007")
        assert await store.operator.trigger("hourly007")

        async def triggered() -> bool:
            return await store_runs("hourly007") == before + 1

        assert await within(1.0, triggered) < 1.0

        # A pause stops the ticker within a second; nothing starts after that.
        assert await store.operator.pause("ticker", None)
        await asyncio.sleep(1.0)
        paused_at = await db_now(database)
        await asyncio.sleep(1.0)
        assert await runs_of(database, "ticker", since=paused_at) == 0

        # A resume starts it again within a second.
        resumed_at = await db_now(database)
        assert await store.operator.resume("ticker")

        async def ticking() -> bool:
            return await runs_of(database, "ticker", since=resumed_at) > 0

        assert await within(1.0, ticking) < 1.0

        # Another process starts with a changed schedule: the new slot runs within a second,
        # here or there.
        changed = [
            replace(c, schedule=every(2.0)) if c.name == "hourly011" else c for c in configs()
        ]
        before = await store_runs("hourly011")
        async with running(database, changed, "b"):

            async def rescheduled() -> bool:
                return await store_runs("hourly011") > before

            assert await within(1.0, rescheduled) < 1.0


async def test_two_processes_share_the_work(database: Database) -> None:
    cfgs = [actor_config(f"a{i:02d}", schedule=every(1.0)) for i in range(20)]
    async with running(database, cfgs, "one"), running(database, cfgs, "two"):
        await asyncio.sleep(1.5)  # both have started and know of each other
        since = await db_now(database)
        await asyncio.sleep(6.0)
        rows = await database.pool.fetch(
            f'SELECT instance_id, count(*) AS n FROM "{database.schema}".runs'
            " WHERE started_at > $1 GROUP BY instance_id",
            since,
        )
    counts = {r["instance_id"]: r["n"] for r in rows}
    total = sum(counts.values())
    assert total >= 100, counts  # 20 actors x 6 s
    assert set(counts) == {"one", "two"}, counts
    for n in counts.values():
        assert 0.3 <= n / total <= 0.7, counts


async def test_a_backlog_larger_than_one_read_is_worked_through_at_once(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When more is due than one read of the window returns, the scheduler reads on as soon as
    it has started what it read, instead of waiting for the next poll."""
    monkeypatch.setattr("discord_actor.scheduler.WINDOW_ROWS", 5)
    cfgs = [actor_config(f"b{i:02d}", schedule=every(3600)) for i in range(40)]
    async with running(database, cfgs, "solo"):

        async def all_ran() -> bool:
            n = await database.pool.fetchval(
                f'SELECT count(*) FROM "{database.schema}".runs WHERE status = $1', "succeeded"
            )
            return int(n) == 40

        assert await within(3.0, all_ran) < 0.9  # 8 reads of 5, not 8 polls of a second


@actor(platform="none")
async def counter(ctx: RunContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1


async def test_each_missed_slot_runs_once_when_catching_up(database: Database) -> None:
    """Catching up slot after slot (catch_up = "all") without reading the window again: the
    task is in the heap twice (its claim and its finish both note its next slot), yet each pass
    claims it once and its code runs once per slot."""
    from datetime import UTC, timedelta

    from discord_actor.clock import FakeClock
    from discord_actor.testing.harness import ActorHarness

    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    cfg = actor_config("catcher", schedule=replace(every(1.0), catch_up="all"))
    async with ActorHarness(database, [(counter, cfg)], clock=FakeClock(t0)) as h:
        h.clock.advance(timedelta(seconds=9))  # slots t0 .. t0 + 9 s are due
        await h.runtime.sync()
        for _ in range(10):
            claimed = await h.runtime.run_due()
            assert len(claimed) == 1, claimed
            await h.runtime.wait_idle()
        assert await h.runtime.run_due() == []
    rows = await database.pool.fetch(
        f'SELECT status, count(*) AS n FROM "{database.schema}".runs GROUP BY status'
    )
    assert {r["status"]: r["n"] for r in rows} == {"succeeded": 10}
    state = await database.pool.fetchval(f'SELECT state FROM "{database.schema}".tasks')
    assert json.loads(state) == {"n": 10}


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("count", [2, 3, 5])
def test_task_ids_of_any_stride_spread_evenly_over_the_processes(stride: int, count: int) -> None:
    """Ids handed out to two actors in turn all share one parity; with ``id % count`` one of two
    processes got nearly every run of an actor. Each process gets its fair share of 1,000 ids
    of any stride, within 10 % of it."""
    ids = range(2, 2 + 1000 * stride, stride)
    shares = [share_of(i, count) for i in ids]
    assert set(shares) == set(range(count))
    for rank in range(count):
        assert abs(shares.count(rank) - 1000 / count) <= 100 / count, (rank, shares.count(rank))


@actor(platform="none")
async def slow_post(ctx: RunContext) -> None:
    await asyncio.sleep(0.2)  # a post waiting for Discord's limits


async def test_a_burst_of_keyed_schedules_does_not_hold_back_an_actors_own_slots(
    database: Database,
) -> None:
    """3,000 keyed schedules due at one instant (more than one read of the window), whose runs
    take a while, and a 0.5 s actor beside them: its slots keep running on time, although every
    keyed slot fell due before them."""
    cfgs = [
        actor_config("burst", schedule=every(3600)),
        actor_config("ticker", schedule=every(0.5)),
    ]
    runtime = runtime_for(
        database,
        [(slow_post, cfgs[0]), (noop, cfgs[1])],
        instance_id="solo",
        poll_interval_seconds=1.0,
        max_concurrent_runs=8,
        shutdown_grace_seconds=1.0,
    )
    await runtime.start()
    try:
        slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        await runtime.schedules.add_many(
            "burst", [NewSchedule(f"k{i}", Once(at=slot), None, None, None) for i in range(3000)]
        )
        await asyncio.sleep((slot - datetime.now(UTC)).total_seconds() + 3.0)
    finally:
        await runtime.stop()
    schema = database.schema
    rows = await database.pool.fetch(
        f'SELECT r.scheduled_for, r.started_at FROM "{schema}".runs r JOIN "{schema}".tasks t'
        " ON t.id = r.task_id WHERE t.actor = 'ticker' AND r.scheduled_for > $1"
        " AND r.scheduled_for <= $2 ORDER BY 1",
        slot,
        slot + timedelta(seconds=2.5),
    )
    keyed = await database.pool.fetchval(
        f'SELECT count(*) FROM "{schema}".runs r JOIN "{schema}".tasks t ON t.id = r.task_id'
        " WHERE t.actor = 'burst' AND t.key IS NOT NULL"
    )
    assert 20 <= keyed < 3000  # the burst was still being worked through
    late = [(r["started_at"] - r["scheduled_for"]).total_seconds() for r in rows]
    assert len(late) >= 4, late  # its slots in those 2.5 s ran
    assert max(late) < 0.4, late
