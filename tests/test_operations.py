"""The operations layer every front end calls: on a real PostgreSQL, runs made by a runtime
stepped with a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from discord_actor import (
    Cron,
    Interval,
    InvalidSchedule,
    Once,
    RunContext,
    ScheduleConflict,
    ScheduleLimitReached,
    actor,
)
from discord_actor.clock import FakeClock
from discord_actor.config import ScheduleConfig
from discord_actor.db import Database
from discord_actor.db.store import Operator
from discord_actor.operations import (
    ActorDisabled,
    ActorPaused,
    ActorRemoved,
    NotStarted,
    Operations,
    RunNotFound,
    ScheduleNotFound,
    ScheduleRefused,
    ScheduleRemoved,
    UnknownActor,
)
from discord_actor.testing.harness import ActorHarness, actor_config

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ALICE = Operator("alice", "CLI on host db1")


def every(seconds: float) -> ScheduleConfig:
    return ScheduleConfig(type="interval", timezone="UTC", seconds=seconds)


@actor
async def ticker(ctx: RunContext) -> None:
    await ctx.post("tick")


def _explode() -> None:
    raise LookupError("no such feed")


@actor
async def broken_feed(ctx: RunContext) -> None:
    _explode()


@actor
async def sleeper(ctx: RunContext) -> None:
    pass


async def test_status_history_and_one_run(database: Database) -> None:
    pairs = [
        (ticker, actor_config("ticker", schedule=every(10))),
        (broken_feed, actor_config("broken_feed", schedule=every(10))),
        (sleeper, actor_config("sleeper", schedule=every(10), enabled=False)),
    ]
    async with ActorHarness(database, pairs, clock=FakeClock(START)) as h:
        await h.tick()
        ops = Operations(h.store, h.config)

        status = await ops.status()
        assert status.initialized
        by_name = {a.actor: a for a in status.actors}
        assert [a.actor for a in status.actors] == ["ticker", "broken_feed", "sleeper"]
        assert by_name["ticker"].state == "active" and by_name["ticker"].last_status == "succeeded"
        assert by_name["broken_feed"].consecutive_failures == 1
        assert by_name["sleeper"].state == "disabled"
        assert by_name["ticker"].next_run == START + timedelta(seconds=10)

        failed = await ops.history(status="failed")
        assert [r.actor for r in failed] == ["broken_feed"]
        assert failed[0].error == "LookupError: no such feed" and failed[0].traceback is None
        assert [r.actor for r in await ops.history("ticker")] == ["ticker"]

        detail = await ops.run(failed[0].id)
        assert detail.traceback is not None
        assert "_explode()" in detail.traceback and "LookupError: no such feed" in detail.traceback
        ok = await ops.run((await ops.history("ticker"))[0].id)
        assert ok.posted[0]["content"] == "tick" and ok.traceback is None
        assert ok.to_json(traceback=True)["traceback"] is None

        with pytest.raises(RunNotFound):
            await ops.run(10**9)
        with pytest.raises(UnknownActor) as unknown:
            await ops.history("tikcer")
        assert unknown.value.suggestion == "ticker"


async def test_changes_and_their_refusals(database: Database) -> None:
    pairs = [
        (ticker, actor_config("ticker", schedule=every(10))),
        (sleeper, actor_config("sleeper", schedule=every(10), enabled=False)),
    ]
    async with ActorHarness(database, pairs, clock=FakeClock(START)) as h:
        ops = Operations(h.store, h.config)
        first = await ops.pause("ticker", "  deploy\n window ", ALICE)
        assert first.reason == "deploy window; paused by alice via CLI on host db1"
        assert not first.was_paused
        again = await ops.pause("ticker", None, ALICE)
        assert again.was_paused and again.previous_reason == first.reason

        with pytest.raises(ActorPaused) as paused:
            await ops.trigger("ticker", ALICE)
        assert paused.value.reason == "paused by alice via CLI on host db1"
        assert (await h.store.operator.task("ticker"))["manual_at"] is None  # type: ignore[index]
        with pytest.raises(ActorDisabled):
            await ops.trigger("sleeper", ALICE)

        resumed = await ops.resume("ticker", ALICE)
        assert resumed.was_paused
        assert not (await ops.resume("ticker", ALICE)).was_paused
        assert not (await ops.trigger("ticker", ALICE)).already_pending
        assert (await ops.trigger("ticker", ALICE)).already_pending

        with pytest.raises(UnknownActor):
            await ops.pause("nobody", None, ALICE)
        # Configured, but no server has run it: no task row to change.
        newer = replace(h.config, actors=(*h.config.actors, actor_config("newcomer")))
        with pytest.raises(NotStarted):
            await Operations(h.store, newer).trigger("newcomer", ALICE)


async def test_a_pause_committed_meanwhile_refuses_a_trigger(database: Database) -> None:
    """The trigger's precondition is checked on the locked row by the statement that writes:
    a pause that commits while the trigger waits for the row refuses it."""
    pairs = [(ticker, actor_config("ticker", schedule=every(10)))]
    async with ActorHarness(database, pairs, clock=FakeClock(START)) as h:
        ops = Operations(h.store, h.config)
        tasks = f'"{h.store.schema}".tasks'
        async with h.store.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                f"UPDATE {tasks} SET paused = true, paused_reason = 'by the breaker'"
                " WHERE actor = 'ticker'"
            )
            trigger = asyncio.ensure_future(ops.trigger("ticker", ALICE))
            await asyncio.sleep(0.3)
            assert not trigger.done()  # waiting for the row the pause holds
            await tx.commit()
            with pytest.raises(ActorPaused, match="by the breaker"):
                await trigger
        assert (await h.store.operator.task("ticker"))["manual_at"] is None  # type: ignore[index]


async def test_keyed_schedules_list_add_remove_with_typed_results(database: Database) -> None:
    pairs = [
        (ticker, actor_config("ticker", schedule=every(3600), max_schedules=2)),
        (sleeper, actor_config("gone", schedule=every(10))),
    ]
    async with ActorHarness(database, pairs, clock=FakeClock(START)) as h:
        await h.tick()  # both have task rows; "gone" then leaves the configuration
        ops = Operations(h.store, replace(h.config, actors=h.config.actors[:1]))

        first = await ops.add_schedule("ticker", "r:1", Once(at=START), payload={"n": 1},
                                       owner="user:42", channel_id=7)
        assert first.outcome == "added" and first.schedule.next_run == START
        same = await ops.add_schedule("ticker", "r:1", Once(at=START), payload={"n": 1},
                                      owner="user:42", channel_id=7)
        assert same.outcome == "unchanged" and same.schedule.payload == {"n": 1}
        with pytest.raises(ScheduleRefused) as refused:
            await ops.add_schedule("ticker", "r:1", Once(at=START), payload={"n": 2})
        assert isinstance(refused.value.error, ScheduleConflict)
        assert refused.value.error.keys == ["r:1"]
        changed = await ops.add_schedule("ticker", "r:1", Once(at=START), payload={"n": 2},
                                         replace=True)
        assert changed.outcome == "replaced" and changed.schedule.owner is None
        later = START + timedelta(days=1)
        await ops.add_schedule("ticker", "r:2", Once(at=later), owner="user:7")
        with pytest.raises(ScheduleRefused) as refused:
            await ops.add_schedule("ticker", "r:3", Once(at=later))
        assert isinstance(refused.value.error, ScheduleLimitReached)
        assert refused.value.error.setting == "max_schedules"
        with pytest.raises(ScheduleRefused) as refused:
            await ops.add_schedule("ticker", "r:3", Cron("0 25 * * *"))
        assert isinstance(refused.value.error, InvalidSchedule)
        assert "bad hour field '25'" in str(refused.value)

        assert [s.key for s in await ops.list_schedules("ticker")] == ["r:1", "r:2"]
        assert [s.key for s in await ops.list_schedules("ticker", owner="user:7")] == ["r:2"]
        status = {a.actor: a for a in (await ops.status()).actors}
        assert status["ticker"].keyed == 2 and status["ticker"].to_json()["keyed"] == 2

        await h.tick()  # r:1 is due at START
        (run,) = await ops.history("ticker", limit=1)
        assert run.key == "r:1" and run.to_json()["key"] == "r:1"
        assert (await ops.history("ticker"))[-1].key is None  # the configured schedule's run
        assert [s.key for s in await ops.list_schedules("ticker")] == ["r:2"]

        assert await ops.remove_schedule("ticker", "r:2") == ScheduleRemoved("ticker", "r:2")
        for key in ("r:2", "r:1", "never"):  # removed, ran, never was
            with pytest.raises(ScheduleNotFound):
                await ops.remove_schedule("ticker", key)
        with pytest.raises(UnknownActor) as unknown:
            await ops.list_schedules("tikcer")
        assert unknown.value.suggestion == "ticker"
        with pytest.raises(ActorRemoved):
            await ops.add_schedule("gone", "k", Interval(seconds=60))
