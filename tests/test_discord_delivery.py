"""Delivering posts to Discord at scale: idempotent posts (one nonce per post, the same at every
attempt), errors by kind, the guard on invalid requests. Real discord.py against the fake
Discord with its limits on, real PostgreSQL, a fake clock for the runtime's retries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from discord.ext import commands

from discord_actor import Once, RunContext, actor
from discord_actor.alerts import Alert
from discord_actor.cli.output import show_status
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database
from discord_actor.exposition import render
from discord_actor.operations import Operations, Status
from discord_actor.platforms.discord import DiscordPlatform
from discord_actor.platforms.nonces import post_nonce
from discord_actor.platforms.refusals import Refusals
from discord_actor.testing.fake_discord import FakeDiscord
from discord_actor.testing.harness import ActorHarness, RunRecord, actor_config

SLOT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RETRY = RetryPolicy(attempts=3, backoff_seconds=5)


@actor(platform="discord")
async def remind(ctx: RunContext) -> None:
    await ctx.post(f"reminder {ctx.key}")


def keyed_actor(name: str = "remind", **overrides: Any) -> Any:
    none = ScheduleConfig(type="none", timezone="UTC")
    return actor_config(name, platform="discord", schedule=none, retry=RETRY, **overrides)


async def add_keys(harness: ActorHarness, fake: FakeDiscord, n: int) -> dict[str, int]:
    """``n`` keyed Once schedules due at SLOT, each posting to a channel of its own."""
    channels = {}
    for i in range(n):
        channel = fake.add_channel(fake.guild, f"c{i}", dispatch=False)
        channels[f"k{i}"] = channel.id
        await harness.schedules.add(
            "remind", key=f"k{i}", schedule=Once(at=SLOT), channel_id=channel.id
        )
    return channels


async def post_keys(
    database: Database, platform: DiscordPlatform, fake: FakeDiscord, n: int
) -> tuple[dict[str, int], list[RunRecord]]:
    """``n`` keys of ``remind`` due at SLOT, each posting to a channel of its own through
    ``platform``, run until their retries are over: the channels by key, and the runs."""
    async with ActorHarness(database, [(remind, keyed_actor())], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        channels = await add_keys(harness, fake, n)
        runs = await harness.tick(timedelta(minutes=1, seconds=10))
    return channels, runs


def test_a_posts_nonce_is_what_the_post_is() -> None:
    nonce = post_nonce("remind", "k1", SLOT, 0)
    assert len(nonce) <= 25
    assert nonce == post_nonce("remind", "k1", SLOT.astimezone(), 0)  # same instant, any zone
    others = {
        post_nonce("remind", "k2", SLOT, 0),
        post_nonce("remind", None, SLOT, 0),
        post_nonce("remind", "k1", SLOT + timedelta(seconds=1), 0),
        post_nonce("remind", "k1", SLOT, 1),
        post_nonce("digest", "k1", SLOT, 0),
    }
    assert nonce not in others and len(others) == 5


async def test_a_dropped_answer_and_the_runtimes_retry_post_each_key_once(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    # Every key's first post is made, then its answer is lost: the attempt fails.
    dropped = fake.disconnect_after_write("POST /channels/*/messages", count=6)
    channels, runs = await post_keys(database, DiscordPlatform(fake_discord_bot), fake, 6)
    assert dropped.hits == 6
    by_key: dict[str, list[str]] = {}
    for run in runs:
        by_key.setdefault(run.key or "", []).append(run.status)
    assert by_key == {key: ["failed", "succeeded"] for key in channels}
    for key, channel_id in channels.items():
        [message] = fake.sent_messages(channel_id)  # exactly once
        assert message.content == f"reminder {key}"
        assert message.nonce == post_nonce("remind", key, SLOT, 0)
        [done] = [r for r in runs if r.key == key and r.status == "succeeded"]
        assert done.posted[0]["message_id"] == message.id  # the replay counts as delivered
    assert fake.nonce_replays == 6


async def test_without_the_nonce_the_same_faults_post_twice(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    """The control of the test above: what a platform without nonces does (discord.py alone)."""

    class NoNonce(DiscordPlatform):
        takes_nonce = False

    fake = fake_discord
    fake.disconnect_after_write("POST /channels/*/messages", count=2)
    channels, _ = await post_keys(database, NoNonce(fake_discord_bot), fake, 2)
    assert [len(fake.sent_messages(c)) for c in channels.values()] == [2, 2]


# ---------------------------------------------------------------------------- errors by kind


async def test_refusals_are_not_retried_and_are_alerted_at_once(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = fake_discord
    alerts: list[Alert] = []

    async def sink(alert: Alert) -> None:
        alerts.append(alert)

    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(
        database, [(remind, keyed_actor())], platform=platform, alerts=sink
    ) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        [closed, dm, unknown] = [fake.add_channel(fake.guild, n, dispatch=False)
                                 for n in ("closed", "dm", "gone")]
        fake.fail_next(f"POST /channels/{closed.id}/messages", 403, code=50001,
                       message="Missing Access")
        fake.fail_next(f"POST /channels/{dm.id}/messages", 403, code=50007,
                       message="Cannot send messages to this user")
        for key, channel_id, at in (
            ("closed", closed.id, SLOT), ("dm", dm.id, SLOT), ("gone", 4242, SLOT),
            ("closed-again", closed.id, SLOT + timedelta(minutes=1)),
        ):
            await harness.schedules.add("remind", key=key, schedule=Once(at=at),
                                        channel_id=channel_id)
        runs = await harness.tick(timedelta(minutes=10))
        await harness.runtime._alert_sender.drain()
    assert unknown.id != 4242
    by_key = {r.key: r for r in runs}
    assert sorted(by_key) == ["closed", "closed-again", "dm", "gone"]  # one attempt each
    assert {(r.status, r.attempt, r.error_type) for r in runs} == {("failed", 1, "DiscordRefused")}
    assert "(403 Forbidden, error 50001: Missing Access): give the bot View Channel" in (
        by_key["closed"].error_message or "")
    assert "does not accept direct messages" in (by_key["dm"].error_message or "")
    assert "Discord does not know channel 4242" in (by_key["gone"].error_message or "")
    again = by_key["closed-again"].error_message or ""
    assert "Missing Access" in again and f"not sent: channel {closed.id} refused" in again
    # The second post to the refused channel never reached Discord.
    assert len(fake.requests_matching(f"POST /channels/{closed.id}/messages")) == 1
    assert fake.invalid_requests == 2  # two 403s; the 404 is not an invalid request
    assert sorted(a.key or "" for a in alerts) == sorted(by_key)
    assert all("is not retried" in a.text() for a in alerts)
    # The reason stays in sight: status names how many keys were refused, and the latest why.
    [status] = (await Operations(harness.store, harness.config).status("remind")).actors
    assert status.refused == 4 and status.refused_key == "closed-again"
    assert status.refused_reason == again
    assert status.to_json()["refused_reason"] == again
    show_status(Status([status], initialized=True, polling=[]), as_json=False)
    said = capsys.readouterr().out
    assert ("remind: 4 post(s) refused by Discord, not retried; the latest (key closed-again):"
            f" {again}") in said


async def test_a_transient_failure_is_retried_with_the_same_nonce(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    fake.fail_next("POST /channels/*/messages", 503)  # discord.py does not retry a 503
    channels, runs = await post_keys(database, DiscordPlatform(fake_discord_bot), fake, 1)
    assert [(r.status, r.error_type) for r in runs] == [
        ("failed", "DiscordUnavailable"), ("succeeded", None)
    ]
    sent = fake.requests_matching(f"POST /channels/{channels['k0']}/messages")
    assert [r.status for r in sent] == [503, 200]
    assert sent[0].body["nonce"] == sent[1].body["nonce"] == post_nonce("remind", "k0", SLOT, 0)
    assert all(r.body["enforce_nonce"] for r in sent)


async def test_the_guard_stops_posting_before_invalid_requests_pile_up(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    platform = DiscordPlatform(fake_discord_bot)
    platform.refusals = Refusals(limit=3)
    async with ActorHarness(database, [(remind, keyed_actor())], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        for i in range(5):  # one after the other: each sees what the one before met
            channel = fake.add_channel(fake.guild, f"c{i}", dispatch=False)
            await harness.schedules.add("remind", key=f"k{i}", channel_id=channel.id,
                                        schedule=Once(at=SLOT + timedelta(seconds=i)))
        fake.fail_next("POST /channels/*/messages", 403, code=50013, count=5,
                       message="Missing Permissions")
        runs = await harness.tick(timedelta(minutes=1, seconds=10))
    assert len(runs) == 5 and {r.status for r in runs} == {"failed"}
    stopped = [r for r in runs if "posting to Discord is stopped" in (r.error_message or "")]
    assert len(stopped) == 2 and fake.invalid_requests == 3
    assert len(fake.requests_matching("POST /channels/*/messages")) == 3
    assert "Discord bans the bot's IP address for an hour at 10,000" in stopped[0].error_message
    said = [r for r in caplog.records if r.name == "discord_actor.platforms.discord"]
    assert [r.levelname for r in said if "posting to Discord is stopped" in r.message] == [
        "ERROR"
    ]  # said once, not at every post


# ---------------------------------------------------------------------------- lateness, metrics


@actor(platform="discord")
async def apologise(ctx: RunContext) -> None:
    minutes = int(ctx.lateness.total_seconds() // 60)
    await ctx.post(f"{ctx.key}: sorry, {minutes} minutes late" if minutes else f"{ctx.key}")


def metric(text: str, line: str) -> float:
    """The value of the sample ``line`` (name and labels) in ``/metrics`` text."""
    [value] = [s.rsplit(" ", 1)[1] for s in text.splitlines() if s.rsplit(" ", 1)[0] == line]
    return float(value)


async def test_a_run_knows_how_late_it_is_and_its_posts_say_when_they_were_due_and_delivered(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(
        database, [(apologise, keyed_actor("apologise"))], platform=platform
    ) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        channel = fake.add_channel(fake.guild, "late", dispatch=False)
        refusing = fake.add_channel(fake.guild, "closed", dispatch=False)
        fake.fail_next(f"POST /channels/{refusing.id}/messages", 403, code=50001,
                       message="Missing Access")
        fake.rate_limit_next(f"POST /channels/{channel.id}/messages", retry_after=0.05)
        for key, channel_id in (("k0", channel.id), ("k1", refusing.id)):
            await harness.schedules.add(
                "apologise", key=key, schedule=Once(at=SLOT), channel_id=channel_id
            )
        runs = await harness.advance(timedelta(minutes=4))  # down 3 minutes past the slot
        text = render(harness.runtime.metrics).decode()
    [message] = fake.sent_messages(channel.id)
    assert message.content == "k0: sorry, 3 minutes late"
    [done] = [r for r in runs if r.key == "k0"]
    [posted] = done.posted
    assert datetime.fromisoformat(posted["due"]) == SLOT
    assert datetime.fromisoformat(posted["queued"]) == SLOT + timedelta(minutes=3)
    assert datetime.fromisoformat(posted["delivered"]) >= datetime.fromisoformat(posted["queued"])
    assert metric(text, 'discord_actor_posts_total{outcome="delivered"}') == 1
    assert metric(text, 'discord_actor_posts_total{outcome="refused"}') == 1
    assert metric(text, 'discord_actor_posts_total{outcome="failed"}') == 0
    assert metric(text, "discord_actor_post_lateness_seconds_count") == 1
    assert metric(text, 'discord_actor_post_lateness_seconds_bucket{le="300.0"}') == 1
    assert metric(text, 'discord_actor_post_lateness_seconds_bucket{le="60.0"}') == 0  # 3 min
    assert metric(text, 'discord_actor_discord_rate_limited_total{scope="user"}') == 1
    assert metric(text, 'discord_actor_discord_rate_limited_total{scope="global"}') == 0
    assert metric(text, "discord_actor_post_queue_depth") == 0


@actor(platform="discord")
async def six_lines(ctx: RunContext) -> None:
    for i in range(6):
        await ctx.post(f"line {i}")


async def test_the_queue_depth_counts_posts_waiting_for_their_channels_turn(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    """A channel takes 5 messages per 5 s: the sixth waits its turn, and /metrics shows it."""
    platform = DiscordPlatform(fake_discord_bot)
    every_hour = ScheduleConfig(type="interval", timezone="UTC", seconds=3600)
    cfg = actor_config("six", platform="discord", schedule=every_hour,
                       channel_id=fake_discord.channel.id)
    async with ActorHarness(database, [(six_lines, cfg)], platform=platform) as harness:
        ticking = asyncio.create_task(harness.tick())
        deadline = time.monotonic() + 10
        runtime = harness.runtime
        while not (runtime.metrics.posts["delivered"] == 5 and runtime.posts_waiting == 1):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        text = render(harness.runtime.metrics).decode()
        [run] = await ticking
    assert metric(text, "discord_actor_post_queue_depth") == 1
    assert metric(text, 'discord_actor_posts_total{outcome="delivered"}') == 5
    assert run.status == "succeeded" and len(fake_discord.sent_messages()) == 6
    assert harness.runtime.posts_waiting == 0


# ---------------------------------------------------------------------------- direct messages


@actor(platform="discord")
async def dm_reminder(ctx: RunContext) -> None:
    """A reminder bot's actor: the keyed schedule's payload names whom to remind."""
    await ctx.post(f"reminder {ctx.key}", user_id=ctx.payload["user"])


async def test_a_post_to_a_user_goes_to_their_dms_opened_once(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    platform = DiscordPlatform(fake_discord_bot)
    cfg = keyed_actor("dm_reminder")
    async with ActorHarness(database, [(dm_reminder, cfg)], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        for key, user, at in (("a1", alice, SLOT), ("b1", bob, SLOT),
                              ("a2", alice, SLOT + timedelta(minutes=1))):
            await harness.schedules.add("dm_reminder", key=key, schedule=Once(at=at),
                                        payload={"user": user.id})
        runs = await harness.tick(timedelta(minutes=3))
    assert sorted((r.key, r.status) for r in runs) == [
        ("a1", "succeeded"), ("a2", "succeeded"), ("b1", "succeeded")]
    to_alice, to_bob = fake.dm_channels[alice.id], fake.dm_channels[bob.id]
    assert [m.content for m in fake.sent_messages(to_alice.id)] == ["reminder a1", "reminder a2"]
    assert [m.content for m in fake.sent_messages(to_bob.id)] == ["reminder b1"]
    assert all(m.guild_id is None for m in fake.sent_messages())
    # Each user's DM channel is opened once, then remembered.
    opened = fake.requests_matching("POST /users/@me/channels")
    assert sorted(r.body["recipient_id"] for r in opened) == sorted([alice.id, bob.id])
    [posted] = next(r for r in runs if r.key == "b1").posted
    assert (posted["user_id"], posted["channel_id"]) == (bob.id, to_bob.id)


async def test_a_user_who_takes_no_dms_is_refused_once_and_not_asked_again(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    closed = fake.add_user("closed")
    closed.accepts_dms = False
    stranger = fake.add_user("stranger", guild=None)  # shares no server with the bot
    platform = DiscordPlatform(fake_discord_bot)
    cfg = keyed_actor("dm_reminder")
    async with ActorHarness(database, [(dm_reminder, cfg)], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        for key, user_id, at in (("closed", closed.id, SLOT), ("stranger", stranger.id, SLOT),
                                 ("nobody", 4242, SLOT),
                                 ("closed-again", closed.id, SLOT + timedelta(minutes=1))):
            await harness.schedules.add("dm_reminder", key=key, schedule=Once(at=at),
                                        payload={"user": user_id})
        runs = await harness.tick(timedelta(minutes=10))
    by_key = {r.key: r for r in runs}
    assert sorted(by_key) == ["closed", "closed-again", "nobody", "stranger"]  # once each
    assert {(r.status, r.attempt, r.error_type) for r in runs} == {("failed", 1, "DiscordRefused")}
    for key, user_id in (("closed", closed.id), ("stranger", stranger.id)):
        error = by_key[key].error_message or ""
        assert f"user {user_id} (direct message)" in error, error
        assert "does not accept direct messages" in error, error
    assert "Discord does not know user 4242" in (by_key["nobody"].error_message or "")
    assert "not sent: channel" in (by_key["closed-again"].error_message or "")
    dm = fake.dm_channels[closed.id]
    assert len(fake.requests_matching(f"POST /channels/{dm.id}/messages")) == 1
    assert fake.sent_messages() == []


async def test_a_dm_post_names_a_user_id(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    @actor(platform="discord")
    async def bad(ctx: RunContext) -> None:
        await ctx.post("hi", user_id="alice")

    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(bad, keyed_actor("bad"))], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        await harness.schedules.add("bad", key="k", schedule=Once(at=SLOT))
        [run] = await harness.tick(timedelta(minutes=2))  # one attempt: the same post again
    assert (run.status, run.error_type) == ("failed", "InvalidPost")
    assert "ctx.post(user_id=...) takes a Discord user id (a positive int), not 'alice'" in (
        run.error_message or "")
