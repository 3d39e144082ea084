"""The operations layer every front end calls: on a real PostgreSQL, runs made by a runtime
stepped with a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from discord_actor import RunContext, actor
from discord_actor.clock import FakeClock
from discord_actor.config import ScheduleConfig
from discord_actor.db import Database
from discord_actor.db.store import Operator
from discord_actor.operations import (
    ActorDisabled,
    ActorPaused,
    NotStarted,
    Operations,
    RunNotFound,
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
        assert (await h.store.task("ticker"))["manual_at"] is None  # type: ignore[index]
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
        assert (await h.store.task("ticker"))["manual_at"] is None  # type: ignore[index]
