"""Keyed schedules created at run time: the API on the real database, what runs and when, the
limits and every error."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from servers import runtime_for

from discord_actor import (
    Cron,
    Interval,
    InvalidKey,
    InvalidPayload,
    InvalidSchedule,
    NewSchedule,
    Once,
    RunContext,
    ScheduleConflict,
    ScheduleLimitReached,
    UnknownActor,
    actor,
)
from discord_actor.alerts import Alert
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database
from discord_actor.testing.harness import (
    ActorHarness,
    actor_config,
)

NO_SCHEDULE = ScheduleConfig(type="none", timezone="UTC")
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

seen: list[tuple[str | None, dict[str, Any], str]] = []


@actor(platform="console")
async def remind(ctx: RunContext) -> None:
    """Posts its payload's text; counts its own runs in its own state."""
    seen.append((ctx.key, ctx.payload, ctx.trigger))
    ctx.state["runs"] = ctx.state.get("runs", 0) + 1
    if ctx.payload.get("fail"):
        raise RuntimeError("asked to fail")
    await ctx.post(ctx.payload.get("text", "tick"))


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


def harness(database: Database, alerts: Any = None, **cfg: Any) -> ActorHarness:
    return ActorHarness(
        database,
        [(remind, actor_config("reminder", schedule=NO_SCHEDULE, **cfg))],
        alerts=alerts,
    )


async def pending_keys(h: ActorHarness, **filters: Any) -> list[str]:
    return [s.key for s in await h.schedules.list("reminder", **filters)]


async def test_once_runs_once_with_its_key_and_payload_then_leaves_the_pending_set(
    database: Database,
) -> None:
    async with harness(database) as h:
        assert await h.tick() == []  # no configured schedule: nothing runs by itself
        added = await h.schedules.add(
            "reminder",
            key="r:1",
            schedule=Once(at=START + timedelta(minutes=10)),
            payload={"text": "stand up"},
            owner="user:42",
        )
        assert added.next_run == START + timedelta(minutes=10)
        assert await pending_keys(h) == ["r:1"]
        assert await h.tick(timedelta(minutes=9)) == []
        (run,) = await h.tick(timedelta(minutes=1))
        assert (run.key, run.status, run.trigger) == ("r:1", "succeeded", "schedule")
        assert run.state == {"runs": 1}  # the keyed schedule's own state
        assert seen == [("r:1", {"text": "stand up"}, "schedule")]
        assert [p[1] for p in h.platform.posts] == ["stand up"]
        assert await h.tick(timedelta(days=1)) == []  # exactly once
        assert await pending_keys(h) == []
        history = await h.store.operator.history("reminder")
        assert [(r["key"], r["status"]) for r in history] == [("r:1", "succeeded")]


async def test_each_key_keeps_its_own_state_next_to_the_configured_schedule(
    database: Database,
) -> None:
    every_hour = ScheduleConfig(type="interval", timezone="UTC", seconds=3600)
    async with ActorHarness(database, [(remind, actor_config("reminder", schedule=every_hour))]) \
            as h:
        first = await h.tick()
        assert [(r.key, r.state) for r in first] == [(None, {"runs": 1})]
        for key in ("feed:1", "feed:2"):
            await h.schedules.add("reminder", key=key, schedule=Interval(seconds=600))
        runs = await h.tick()
        assert sorted((r.key, r.state["runs"]) for r in runs) == [("feed:1", 1), ("feed:2", 1)]
        runs = await h.tick(600)
        assert sorted((r.key, r.state["runs"]) for r in runs) == [("feed:1", 2), ("feed:2", 2)]
        # A jump over the next hour: the configured hourly one, and each feed's latest slot.
        runs = await h.advance(3000)
        assert sorted((r.key or "", r.state["runs"]) for r in runs) == [
            ("", 2), ("feed:1", 3), ("feed:2", 3)
        ]
        assert json.loads((await h.store.operator.task("reminder"))["state"]) == {"runs": 2}


async def test_cron_in_its_zone_and_interval_from_a_start(database: Database) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    async with harness(database) as h:
        digest = await h.schedules.add(
            "reminder", key="guild:7", schedule=Cron("0 9 * * 1-5", timezone="Europe/Berlin")
        )
        # 2026-01-05 is a Monday, 13:00 in Berlin: the next weekday 09:00 is Tuesday's.
        assert digest.next_run == datetime(2026, 1, 6, 9, 0, tzinfo=berlin)
        assert digest.next_run is not None and digest.next_run.utcoffset() == timedelta(hours=1)
        later = START + timedelta(hours=2)
        poll = await h.schedules.add(
            "reminder", key="feed:9", schedule=Interval(seconds=300, start_at=later)
        )
        assert poll.next_run == later
        assert await pending_keys(h) == ["feed:9", "guild:7"]  # soonest first
        runs = await h.tick(timedelta(hours=2))
        assert [r.key for r in runs] == ["feed:9"]
        runs = await h.tick(datetime(2026, 1, 6, 8, 0, tzinfo=UTC) - h.clock.now())
        assert "guild:7" in [r.key for r in runs]


async def test_add_again_is_a_no_op_a_change_needs_replace(database: Database) -> None:
    async with harness(database) as h:
        at = Once(at=START + timedelta(hours=1))
        await h.schedules.add("reminder", key="r:1", schedule=at, payload={"text": "a"})
        await h.schedules.add("reminder", key="r:1", schedule=at, payload={"text": "a"})
        with pytest.raises(ScheduleConflict, match="replace=True") as e:
            await h.schedules.add("reminder", key="r:1", schedule=at, payload={"text": "b"})
        assert e.value.keys == ["r:1"]
        later = Once(at=START + timedelta(hours=2))
        changed = await h.schedules.add(
            "reminder", key="r:1", schedule=later, payload={"text": "b"}, replace=True
        )
        assert changed.next_run == START + timedelta(hours=2)
        assert await h.tick(timedelta(hours=1)) == []
        (_run,) = await h.tick(timedelta(hours=1))
        assert seen == [("r:1", {"text": "b"}, "schedule")]
        # A once that has run can be added again: it is armed anew and keeps its history.
        await h.schedules.add("reminder", key="r:1", schedule=Once(at=START + timedelta(hours=3)))
        (again,) = await h.tick(timedelta(hours=1))
        assert again.key == "r:1" and again.state == {"runs": 2}


async def test_remove_and_list_filters(database: Database) -> None:
    async with harness(database) as h:
        for i, owner in enumerate(["user:1", "user:2", "user:1"]):
            await h.schedules.add(
                "reminder",
                key=f"r:{i}",
                schedule=Once(at=START + timedelta(minutes=30 - i)),
                owner=owner,
            )
        await h.schedules.add("reminder", key="other", schedule=Interval(seconds=3600,
                              start_at=START + timedelta(days=1)))
        assert await pending_keys(h) == ["r:2", "r:1", "r:0", "other"]
        assert await pending_keys(h, prefix="r:", owner="user:1") == ["r:2", "r:0"]
        assert await pending_keys(h, prefix="r_") == []  # a prefix, not a pattern
        assert await h.schedules.remove("reminder", "r:2") is True
        assert await h.schedules.remove("reminder", "r:2") is False
        assert await h.schedules.remove("reminder", "never") is False
        assert await pending_keys(h, owner="user:1") == ["r:0"]
        runs = await h.tick(timedelta(hours=1))
        assert sorted(r.key for r in runs if r.key) == ["r:0", "r:1"]


async def test_add_many_is_one_transaction_all_or_none(database: Database) -> None:
    async with harness(database) as h:
        items = [
            NewSchedule(key=f"r:{i}", schedule=Once(at=START + timedelta(seconds=i)))
            for i in range(1000)
        ]
        assert await h.schedules.add_many("reminder", items) == 1000
        assert await h.schedules.add_many("reminder", items) == 0  # all unchanged
        mixed = [
            {"key": "new", "schedule": Once(at=START)},
            {"key": "r:5", "schedule": Once(at=START + timedelta(days=1))},  # a conflict
        ]
        with pytest.raises(ScheduleConflict):
            await h.schedules.add_many("reminder", mixed)
        assert "new" not in await pending_keys(h)  # nothing of the refused batch was written
        with pytest.raises(InvalidSchedule, match="add_many item 1"):
            await h.schedules.add_many("reminder", [mixed[0], {"key": "x", "when": 1}])
        runs = await h.tick(1000)
        assert len(runs) == 1000 and len({r.key for r in runs}) == 1000


async def test_a_large_add_many_refreshes_the_planner_statistics(database: Database) -> None:
    """Plans made while the table looked empty read every row (or worse) to find what is due:
    after a bulk add the statistics must already count the new rows."""
    tasks = f'"{database.schema}".tasks'
    async with harness(database) as h:
        await h.schedules.add_many(
            "reminder",
            [NewSchedule(f"r:{i}", Once(at=START + timedelta(hours=1, seconds=i)))
             for i in range(1500)],
        )
        counted = await database.pool.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", tasks
        )
        assert counted >= 1500
        # And the due window finds the one due among them through its index, in one plan.
        await h.schedules.add("reminder", key="due", schedule=Once(at=START))
        (run,) = await h.tick()
        assert run.key == "due"


async def test_limits_per_actor_and_per_owner(database: Database) -> None:
    async with harness(database, max_schedules=3, max_schedules_per_owner=2) as h:
        soon = Once(at=START + timedelta(minutes=5))
        await h.schedules.add("reminder", key="a", schedule=soon, owner="user:42")
        await h.schedules.add("reminder", key="b", schedule=soon, owner="user:42")
        with pytest.raises(ScheduleLimitReached, match="max_schedules_per_owner is 2") as e:
            await h.schedules.add("reminder", key="c", schedule=soon, owner="user:42")
        assert (e.value.setting, e.value.limit, e.value.owner) == (
            "max_schedules_per_owner", 2, "user:42"
        )
        await h.schedules.add("reminder", key="c", schedule=soon, owner="user:7")
        with pytest.raises(ScheduleLimitReached, match="max_schedules = 3"):
            await h.schedules.add("reminder", key="d", schedule=soon)
        with pytest.raises(ScheduleLimitReached):  # a batch that would pass it: none written
            await h.schedules.add_many(
                "reminder", [NewSchedule(f"m{i}", soon) for i in range(2)]
            )
        assert len(await pending_keys(h)) == 3
        await h.tick(timedelta(minutes=5))  # they ran: no longer pending, room again
        await h.schedules.add("reminder", key="e", schedule=soon, owner="user:42")


async def test_concurrent_adds_cannot_pass_the_limit_together(database: Database) -> None:
    async with harness(database, max_schedules_per_owner=5) as h:
        soon = Once(at=START + timedelta(minutes=5))
        results = await asyncio.gather(
            *(h.schedules.add("reminder", key=f"k{i}", schedule=soon, owner="spammer")
              for i in range(30)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 5
        assert all(isinstance(r, ScheduleLimitReached) for r in results
                   if isinstance(r, BaseException))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"actor": "ghost"}, UnknownActor, "unknown actor 'ghost'"),
        ({"key": ""}, InvalidKey, "must not be empty"),
        ({"key": "k" * 201}, InvalidKey, "201 characters long; at most 200"),
        ({"owner": 42}, InvalidKey, "owner must be a string"),
        ({"schedule": Cron("0 25 * * *")}, InvalidSchedule, "bad hour field '25'"),
        ({"schedule": Cron("* * * * *", timezone="Mars/Base")}, InvalidSchedule,
         "unknown time zone 'Mars/Base'"),
        ({"schedule": Once(at=datetime(2026, 1, 6, 9, 0))}, InvalidSchedule, "naive time"),
        ({"schedule": Interval(seconds=0)}, InvalidSchedule, "seconds > 0"),
        ({"schedule": "every day"}, InvalidSchedule, "Once(at=...), Interval"),
        ({"schedule": Once(at=START, catch_up="never")}, InvalidSchedule, "catch_up"),
        ({"payload": ["a"]}, InvalidPayload, "must be a dict"),
        ({"payload": {"when": datetime.now(UTC)}}, InvalidPayload, "payload['when']"),
        ({"payload": {"x": float("nan")}}, InvalidPayload, "payload['x'] (nan)"),
        ({"payload": {"text": "x" * 20000}}, InvalidPayload,
         "20011 bytes as JSON; actor 'reminder' allows at most 16384"),
        ({"channel_id": -1}, InvalidSchedule, "channel_id must be a positive integer"),
    ],
)
async def test_errors_say_what_is_wrong(
    database: Database, call: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with harness(database) as h:
        args: dict[str, Any] = {"actor": "reminder", "key": "k", "schedule": Once(at=START)}
        args |= call
        with pytest.raises(error) as e:
            await h.schedules.add(args.pop("actor"), **args)
        assert message in str(e.value)
        assert await pending_keys(h) == []


async def test_a_keyed_schedule_posts_to_its_own_channel(database: Database) -> None:
    async with harness(database, channel_id=111) as h:
        await h.schedules.add("reminder", key="here", schedule=Once(at=START), channel_id=222)
        await h.schedules.add("reminder", key="default", schedule=Once(at=START))
        await h.tick()
        (posted_here,) = [
            r for r in await h.store.operator.history("reminder") if r["key"] == "here"
        ]
        (posted_default,) = [
            r for r in await h.store.operator.history("reminder") if r["key"] == "default"
        ]
        assert json.loads(posted_here["posted"])[0]["channel_id"] == 222
        assert json.loads(posted_default["posted"])[0]["channel_id"] == 111


async def test_retries_and_the_breaker_are_per_key_pause_is_per_actor(
    database: Database,
) -> None:
    retry = RetryPolicy(attempts=2, backoff_seconds=10, max_backoff_seconds=10)
    alerts: list[Alert] = []

    async def sink(alert: Alert) -> None:
        alerts.append(alert)

    async with harness(database, sink, retry=retry, max_consecutive_failures=1) as h:
        await h.schedules.add("reminder", key="bad", schedule=Interval(seconds=60),
                              payload={"fail": True})
        await h.schedules.add("reminder", key="good", schedule=Interval(seconds=60))
        runs = await h.tick()
        assert sorted((r.key, r.status) for r in runs) == [("bad", "failed"), ("good",
                                                                               "succeeded")]
        (retried,) = await h.tick(10)
        assert (retried.key, retried.attempt, retried.status) == ("bad", 2, "failed")
        assert retried.paused  # its own breaker tripped: only this key stops
        await h.runtime._alert_sender.drain()
        assert [a.text().split(";")[0] for a in alerts] == [
            "schedule 'bad' of actor reminder paused after 1 consecutive failures (last: run"
            f" {retried.id}, RuntimeError: asked to fail)"
        ]
        runs = await h.tick(50)
        assert [r.key for r in runs] == ["good"]
        # Pausing the actor stops all of its keyed schedules; resuming restarts them, the
        # tripped key included.
        assert await h.store.operator.pause("reminder", "maintenance")
        assert await h.tick(60) == []
        assert await h.store.operator.resume("reminder")
        runs = await h.tick()
        assert sorted(r.key or "" for r in runs) == ["bad", "good"]


async def test_an_actor_adds_schedules_from_inside_a_run(database: Database) -> None:
    @actor(platform="console")
    async def planner(ctx: RunContext) -> None:
        if ctx.key is None:
            await ctx.schedules.add(
                "reminder", key="follow-up", schedule=Once(at=ctx.scheduled_for + timedelta(
                    minutes=1)), payload={"text": "later"}
            )

    async with ActorHarness(
        database,
        [
            (planner, actor_config("planner")),
            (remind, actor_config("reminder", schedule=NO_SCHEDULE)),
        ],
    ) as h:
        await h.tick()
        (run,) = await h.tick(60)
        assert (run.actor, run.key) == ("reminder", "follow-up")
        assert seen == [("follow-up", {"text": "later"}, "schedule")]


async def test_two_runtimes_run_each_keyed_schedule_exactly_once(database: Database) -> None:
    """On the real clock with the background loops: 300 reminders due within two seconds,
    added from outside the runtimes, shared by two processes."""
    cfg = actor_config("reminder", schedule=NO_SCHEDULE, platform="none")
    runtimes = [
        runtime_for(database, [(remind, cfg)], instance_id=name, poll_interval_seconds=1.0,
                    lease_seconds=5.0)
        for name in ("one", "two")
    ]
    for runtime in runtimes:
        await runtime.start()
    try:
        now = datetime.now(UTC)
        items = [NewSchedule(f"r:{i}", Once(at=now + timedelta(seconds=0.5 + i / 200)))
                 for i in range(300)]
        await runtimes[0].schedules.add_many("reminder", items)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if len(seen) >= 300 and not await runtimes[0].schedules.list("reminder"):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    finally:
        for runtime in runtimes:
            await runtime.stop()
    keys = [k for k, _, _ in seen]
    assert len(keys) == 300 and len(set(keys)) == 300
    by_instance = await database.pool.fetch(
        f'SELECT instance_id, count(*) AS n FROM "{database.schema}".runs GROUP BY 1'
    )
    assert {r["instance_id"] for r in by_instance} == {"one", "two"}


async def test_a_keyed_interval_keeps_its_own_pace_after_each_run(database: Database) -> None:
    """With the background loops on the real clock: after a run the scheduler takes the next
    slot from the keyed schedule's own definition (every 0.2 s), not its actor's (hourly)."""
    hourly = ScheduleConfig(type="interval", timezone="UTC", seconds=3600)
    cfg = actor_config("reminder", schedule=hourly, platform="none")
    runtime = runtime_for(database, [(remind, cfg)], poll_interval_seconds=5.0)
    await runtime.start()
    try:
        await runtime.schedules.add("reminder", key="fast", schedule=Interval(seconds=0.2))
        await asyncio.sleep(1.5)
    finally:
        await runtime.stop()
    fast = [k for k, _, _ in seen if k == "fast"]
    assert len(fast) >= 5, seen  # polls every 5 s: only its own pace gives this many


async def test_history_shows_a_keyed_run_in_its_own_zone(database: Database) -> None:
    from discord_actor.operations import Operations

    async with harness(database) as h:
        await h.schedules.add(
            "reminder", key="berlin", schedule=Once(at=START, timezone="Europe/Berlin")
        )
        await h.tick()
        (run,) = await Operations(h.store, h.config).history("reminder")
    assert run.key == "berlin" and str(run.timezone) == "Europe/Berlin"
    assert run.to_json()["scheduled_for"] == "2026-01-05T13:00:00+01:00"
