"""ActorHarness as a user testing an actor meets it: ``tick`` steps through every slot and
retry in its span, ``advance`` jumps as a process that was down would; the helpers take what
``actor_server.toml`` takes, with its defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import discord_actor.testing.harness as harness_module
from discord_actor import Actor, Interval, Once, RunContext, actor
from discord_actor.testing import (
    ActorHarness,
    Database,
    FakeClock,
    RetryPolicy,
    RunRecord,
    ScheduleConfig,
    actor_config,
)

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
EVERY_3_S = ScheduleConfig(type="interval", seconds=3)


class Counter(Actor):
    platform = "none"

    async def run(self, ctx: RunContext) -> None:
        ctx.state["count"] = ctx.state.get("count", 0) + 1


def summary(runs: list[RunRecord]) -> list[tuple[str, str, int, object]]:
    """(seconds after START, trigger, attempt, count) of each run."""
    return [
        (f"+{(r.scheduled_for - START).total_seconds():g}", r.trigger, r.attempt,
         r.state.get("count"))
        for r in runs
    ]


# --------------------------------------------------------------------------------------------
# tick steps, advance jumps.


async def test_tick_steps_through_every_slot_of_its_span(database: Database) -> None:
    cfg = actor_config("counter", schedule=EVERY_3_S)
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        assert summary(await h.tick()) == [("+0", "schedule", 1, 1)]  # its first slot: now
        runs = await h.tick(timedelta(seconds=10))
        assert summary(runs) == [
            ("+3", "schedule", 1, 2),
            ("+6", "schedule", 1, 3),
            ("+9", "schedule", 1, 4),
        ]
        assert h.clock.now() == START + timedelta(seconds=10)  # ends at the span's end
        assert summary(await h.tick(2)) == [("+12", "schedule", 1, 5)]


async def test_a_counter_ticked_ten_seconds_on_a_three_second_interval_runs_three_times(
    database: Database,
) -> None:
    # Its first slot three seconds from now: the span holds three of them.
    every_3_s = Interval(seconds=3, start_at=START + timedelta(seconds=3))
    cfg = actor_config("counter", schedule=None)
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        await h.schedules.add("counter", key="k", schedule=every_3_s)
        runs = await h.tick(timedelta(seconds=10))
    assert [(r.trigger, r.key) for r in runs] == [("schedule", "k")] * 3
    assert runs[-1].state == {"count": 3}


async def test_advance_jumps_once_as_a_process_that_was_down(database: Database) -> None:
    cfg = actor_config("counter", schedule=EVERY_3_S)
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        await h.tick()
        runs = await h.advance(timedelta(seconds=10))  # slots +3, +6, +9 missed: the latest
        assert summary(runs) == [("+9", "catch_up", 1, 2)]
        assert h.clock.now() == START + timedelta(seconds=10)
        assert summary(await h.tick(2)) == [("+12", "schedule", 1, 3)]


@actor(platform="none")
async def fails_first(ctx: RunContext) -> None:
    """Fails the first attempt of every slot; counts its attempts."""
    ctx.state["count"] = ctx.state.get("count", 0) + 1
    await ctx.checkpoint()
    if ctx.attempt == 1:
        raise ConnectionError("first attempt")


async def test_tick_runs_the_retries_due_in_its_span_in_order(database: Database) -> None:
    cfg = actor_config(
        "flaky",
        schedule=ScheduleConfig(type="interval", seconds=60),
        retry=RetryPolicy(attempts=3, backoff_seconds=5),
    )
    async with ActorHarness(database, [(fails_first, cfg)], clock=FakeClock(START)) as h:
        runs = await h.tick(timedelta(seconds=70))
    assert [(r.status, r.trigger, r.attempt, r.state["count"]) for r in runs] == [
        ("failed", "schedule", 1, 1),
        ("succeeded", "retry", 2, 2),  # 5 s later
        ("failed", "schedule", 1, 3),  # the next slot, 60 s after the first
        ("succeeded", "retry", 2, 4),
    ]
    minute = START + timedelta(seconds=60)
    assert [r.scheduled_for for r in runs] == [START, START, minute, minute]  # a retry's: its slot


async def test_tick_steps_keyed_schedules_and_the_actors_own_together(
    database: Database,
) -> None:
    cfg = actor_config("counter", schedule=ScheduleConfig(type="interval", seconds=4))
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        await h.tick()
        await h.schedules.add("counter", key="fast", schedule=Interval(seconds=3))
        await h.schedules.add("counter", key="once", schedule=Once(at=START + timedelta(seconds=5)))
        runs = await h.tick(timedelta(seconds=8))
    seen = [(f"+{(r.scheduled_for - START).total_seconds():g}", r.key, r.trigger) for r in runs]
    assert seen == [
        ("+0", "fast", "schedule"),  # added now: its first slot is now
        ("+3", "fast", "schedule"),
        ("+4", None, "schedule"),
        ("+5", "once", "schedule"),
        ("+6", "fast", "schedule"),
        ("+8", None, "schedule"),
    ]
    assert [r.state["count"] for r in runs if r.key == "fast"] == [1, 2, 3]  # its own state


async def test_tick_refuses_a_span_of_too_many_steps(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness_module, "MAX_TICK_STEPS", 20)
    cfg = actor_config("counter", schedule=ScheduleConfig(type="interval", seconds=0.001))
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        await h.tick()
        assert len(await h.tick(timedelta(seconds=0.02))) == 20
        with pytest.raises(ValueError, match=r"more than 20 moments.*advance\(\)"):
            await h.tick(timedelta(seconds=0.021))
        assert len(await h.advance(timedelta(days=1))) == 1  # a jump is one step


# --------------------------------------------------------------------------------------------
# The helpers take what actor_server.toml takes, with its defaults.


def test_schedule_config_defaults_as_the_configuration_does() -> None:
    assert ScheduleConfig(type="interval", seconds=3) == ScheduleConfig(
        type="interval", timezone="UTC", seconds=3, jitter_seconds=0.0, catch_up="latest"
    )


def test_actor_config_without_a_schedule_runs_only_by_keyed_schedules() -> None:
    assert actor_config("a").schedule.type == "immediate"  # the helper's own default
    assert actor_config("a", schedule=None).schedule == ScheduleConfig(type="none")
    assert actor_config("a").platform is None  # the actor's own, as in the file


async def test_an_actor_without_a_schedule_runs_at_its_keyed_schedules_only(
    database: Database,
) -> None:
    cfg = actor_config("counter", schedule=None)
    async with ActorHarness(database, [(Counter, cfg)], clock=FakeClock(START)) as h:
        assert await h.tick(timedelta(hours=1)) == []  # no start-up run, no slot
        await h.schedules.add("counter", key="k", schedule=Once(at=h.clock.now()))
        [run] = await h.tick()
    assert (run.key, run.trigger) == ("k", "schedule")
