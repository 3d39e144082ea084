"""The pytest plugin as a user of the package would use it for their own actors."""

from __future__ import annotations

from datetime import timedelta

from discord_actor import Actor, FakeClock, RunContext
from discord_actor.config import ScheduleConfig
from discord_actor.db import Database
from discord_actor.testing.harness import ActorHarness, actor_config


class Digest(Actor):
    async def run(self, ctx: RunContext) -> None:
        seen = ctx.state.get("seen", 0) + ctx.settings["batch"]
        ctx.state["seen"] = seen
        await ctx.post(f"{seen} items so far")


async def test_run_actor_returns_the_recorded_run(run_actor: object) -> None:
    run = await run_actor(Digest, state={"seen": 10}, settings={"batch": 5})  # type: ignore[operator]
    assert run.status == "succeeded"
    assert run.state == {"seen": 15}
    assert run.posted[0]["content"] == "15 items so far"


async def test_fake_clock_steps_a_cron_schedule(database: Database, fake_clock: FakeClock) -> None:
    weekdays_nine = ScheduleConfig(type="cron", timezone="Europe/Berlin", expression="0 9 * * 1-5")
    cfg = actor_config("digest", schedule=weekdays_nine, settings={"batch": 1})
    async with ActorHarness(database, [(Digest, cfg)], clock=fake_clock) as harness:
        # 2026-01-05 is a Monday, 12:00 UTC: the next slot is Tuesday 09:00 Berlin.
        assert await harness.tick() == []
        runs = await harness.tick(timedelta(hours=20))
        assert [r.scheduled_for.isoformat() for r in runs] == ["2026-01-06T08:00:00+00:00"]
        # Five days later (missed slots): catch_up = "latest" runs the most recent one once.
        runs = await harness.tick(timedelta(days=5))
        assert [(r.trigger, r.state["seen"]) for r in runs] == [("catch_up", 2)]
