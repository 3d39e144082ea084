"""The discord platform: real discord.py against the wire-level fake, real PostgreSQL.

Each test drives a runtime with a fake clock (``ActorHarness``) whose actors post through
``DiscordPlatform(bot)``, where ``bot`` is connected to the fake.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import discord
import pytest
from discord.ext import commands

from discord_actor import RunContext, actor
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database
from discord_actor.platforms.discord import DiscordPlatform, DiscordPostError
from discord_actor.testing.fake_discord import FakeDiscord
from discord_actor.testing.harness import ActorHarness, actor_config


async def until(predicate: Callable[[], Any], what: str, limit: float = 5.0) -> None:
    """Poll a condition of the client (not of the fake, which ``fake.wait_until`` covers)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 (client state has no event)
            await asyncio.sleep(0.01)


def discord_actor(name: str, channel_id: int, **overrides: Any) -> Any:
    return actor_config(name, platform="discord", channel_id=channel_id, **overrides)


@actor
async def ticker(ctx: RunContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    await ctx.post(f"tick {ctx.state['n']}")


async def test_posts_on_schedule_reach_the_channel(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    every_minute = ScheduleConfig(type="interval", timezone="UTC", seconds=60)
    cfg = discord_actor("ticker", fake.channel.id, schedule=every_minute)
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(ticker, cfg)], platform=platform) as harness:
        [first] = await harness.tick()
        assert await harness.tick(30) == []  # not due yet
        [second] = await harness.tick(30)
    sent = fake.sent_messages()
    assert [(m.channel_id, m.content) for m in sent] == [
        (fake.channel.id, "tick 1"),
        (fake.channel.id, "tick 2"),
    ]
    for run, message in zip((first, second), sent, strict=True):
        assert run.status == "succeeded"
        assert run.posted == [
            {
                "platform": "discord",
                "channel_id": fake.channel.id,
                "message_id": message.id,
                "content": message.content,
                "embeds": 0,
                "files": 0,
            }
        ]


async def test_embeds_and_files_as_objects_or_plain_values(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord

    @actor
    async def report(ctx: RunContext) -> None:
        await ctx.post(
            "weekly report",
            embed=discord.Embed(title="Summary", description="3 items"),
            embeds=[{"title": "Details", "fields": [{"name": "a", "value": "1"}]}],
            file=discord.File(io.BytesIO(b"a,b\n1,2\n"), "report.csv"),
            files=[("notes.txt", b"hello")],
        )
        await ctx.post(embed={"title": "embed only"})

    cfg = discord_actor("report", fake.channel.id)
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(report, cfg)], platform=platform) as harness:
        [run] = await harness.tick()
    assert run.status == "succeeded", run.error_message
    full, embed_only = fake.sent_messages()
    assert [e["title"] for e in full.embeds] == ["Summary", "Details"]
    assert full.embeds[1]["fields"][0]["name"] == "a"
    assert full.attachment_names == ["report.csv", "notes.txt"]
    assert [a.data for a in full.attachments] == [b"a,b\n1,2\n", b"hello"]
    assert (embed_only.content, embed_only.embeds[0]["title"]) == ("", "embed only")
    assert [(p["embeds"], p["files"], p["content"]) for p in run.posted] == [
        (2, 2, "weekly report"),
        (1, 0, None),
    ]


async def test_a_post_while_the_gateway_is_down_waits_then_succeeds(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    platform = DiscordPlatform(bot)
    cfg = discord_actor("ticker", fake.channel.id, timeout_seconds=30)
    async with ActorHarness(database, [(ticker, cfg)], platform=platform) as harness:
        resumed = asyncio.ensure_future(bot.wait_for("resumed", timeout=10))
        async with fake.gateway_down():
            await until(lambda: not platform.gateway_ready(), "the bot to notice")
            tick = asyncio.create_task(harness.tick())
            await until(lambda: platform.waiting == 1, "the post to wait for the gateway")
            assert fake.sent_messages() == []
            assert not tick.done()
        [run] = await tick
        await resumed
    assert run.status == "succeeded", run.error_message
    [message] = fake.sent_messages()
    assert message.content == "tick 1" and run.posted[0]["message_id"] == message.id
    assert platform.waiting == 0


async def test_a_429_is_waited_out(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    fake.rate_limit_next("POST /channels/*/messages", retry_after=0.05)
    cfg = discord_actor("ticker", fake.channel.id)
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(ticker, cfg)], platform=platform) as harness:
        [run] = await harness.tick()
    assert (run.status, run.attempt) == ("succeeded", 1)
    assert [r.status for r in fake.requests_matching("POST /channels/*/messages")] == [429, 200]
    assert [m.content for m in fake.sent_messages()] == ["tick 1"]


async def test_transient_failures_fail_the_attempt_and_the_retry_posts(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    """A 5xx discord.py does not retry itself (503), then a lost connection, then success."""
    fake = fake_discord
    fake.fail_next("POST /channels/*/messages", 503)
    cfg = discord_actor(
        "ticker",
        fake.channel.id,
        retry=RetryPolicy(attempts=3, backoff_seconds=10),
    )
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(ticker, cfg)], platform=platform) as harness:
        [first] = await harness.tick()
        fake.disconnect_next("POST /channels/*/messages")
        [second] = await harness.tick(timedelta(seconds=10))
        [third] = await harness.tick(timedelta(seconds=20))
    assert [(r.status, r.attempt, r.trigger) for r in (first, second, third)] == [
        ("failed", 1, "startup"),
        ("failed", 2, "retry"),
        ("succeeded", 3, "retry"),
    ]
    assert first.error_type == "DiscordUnavailable"
    assert first.error_message is not None
    assert "Discord failed (503 Service Unavailable) for actor 'ticker'" in first.error_message
    assert "retry policy applies" in first.error_message
    assert second.error_type == "DiscordUnavailable"
    assert second.error_message is not None
    assert "lost the connection to Discord" in second.error_message
    assert [m.content for m in fake.sent_messages()] == ["tick 1"]
    assert third.state == {"n": 1}  # failed attempts' state changes were discarded


async def test_refused_posts_say_what_to_fix(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    missing = discord_actor("lost", 4242)
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(ticker, missing)], platform=platform) as harness:
        [run] = await harness.tick()
    assert (run.status, run.error_type) == ("failed", "DiscordRefused")
    assert run.error_message is not None
    assert run.error_message.startswith(
        "Discord does not know channel 4242 (404 Not Found, error 10003: Unknown Channel): check"
        " actors[0].channel_id of 'lost' (or the keyed schedule's channel_id)"
    )
    nowhere = actor_config("keyed_only", platform="discord",
                           schedule=ScheduleConfig(type="none", timezone="UTC"))
    with pytest.raises(DiscordPostError) as e:
        await platform.post(nowhere, "x")
    assert str(e.value) == (
        "actor 'keyed_only' has no channel to post to: set actors[0].channel_id, give the"
        " keyed schedule one (schedules.add(..., channel_id=...)), or post to a user"
        " (ctx.post(..., user_id=...))"
    )
    with pytest.raises(DiscordPostError, match="needs content, an embed or a file"):
        await platform.post(discord_actor("empty", fake_discord.channel.id), None)
    with pytest.raises(TypeError, match=r"discord\.Embed or a dict"):
        await platform.post(discord_actor("bad", fake_discord.channel.id), "x", embed="no")


async def test_mentions_are_off_unless_the_actor_allows_them(
    database: Database,
    fake_discord: FakeDiscord,
    fake_discord_bot: commands.Bot,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    role = fake.add_role(fake.guild, "oncall")
    ping = f"{fake.owner.mention} <@&{role.id}> @everyone"

    @actor
    async def pinger(ctx: RunContext) -> None:
        await ctx.post(ping)

    @actor
    async def narrowed(ctx: RunContext) -> None:  # asks for less than it may
        await ctx.post(ping, allowed_mentions=discord.AllowedMentions(users=False))

    @actor
    async def one_user(ctx: RunContext) -> None:  # pings exactly one user, whatever the text
        only = discord.AllowedMentions(users=[discord.Object(fake.owner.id)], replied_user=False)
        await ctx.post(f"{ping} <@{other.id}>", allowed_mentions=only)

    other = fake.add_user("other")
    actors = [
        (one_user, discord_actor("one", fake.channel.id, allowed_mentions=("users",))),
        (one_user, discord_actor("one_refused", fake.channel.id)),
        (pinger, discord_actor("quiet", fake.channel.id)),
        (pinger, discord_actor("users", fake.channel.id, allowed_mentions=("users",))),
        (
            pinger,
            discord_actor("all", fake.channel.id, allowed_mentions=("users", "roles", "everyone")),
        ),
        (narrowed, discord_actor("narrowed", fake.channel.id, allowed_mentions=("users", "roles"))),
    ]
    platform = DiscordPlatform(fake_discord_bot)
    with caplog.at_level(logging.WARNING, "discord_actor.platforms.discord"):
        async with ActorHarness(database, actors, platform=platform) as harness:
            runs = await harness.tick()
            assert await harness.store.operator.trigger("one_refused")
            runs += await harness.tick()
    assert {r.status for r in runs} == {"succeeded"}
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        'actor one_refused: a post names users to ping, but its allowed_mentions does not list'
        ' "users", so nobody is pinged; add "users" to actors[1].allowed_mentions'
    ]  # once, though it posted twice
    by_actor = {r.actor: r.posted[0]["message_id"] for r in runs}
    messages = {m.id: m for m in fake.sent_messages()}

    def mentions(name: str) -> tuple[list[int], list[int], bool]:
        m = messages[by_actor[name]]
        return m.mention_user_ids, m.mention_role_ids, m.mention_everyone

    assert messages[by_actor["quiet"]].allowed_mentions == {"parse": []}
    assert mentions("quiet") == ([], [], False)
    assert mentions("users") == ([fake.owner.id], [], False)
    assert mentions("all") == ([fake.owner.id], [role.id], True)
    assert mentions("narrowed") == ([], [role.id], False)
    assert mentions("one") == ([fake.owner.id], [], False)
    assert mentions("one_refused") == ([], [], False)
