"""Delivering posts to Discord at scale: idempotent posts (one nonce per post, the same at every
attempt), errors by kind, the guard on invalid requests. Real discord.py against the fake
Discord with its limits on, real PostgreSQL, a fake clock for the runtime's retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from discord.ext import commands

from discord_actor import Once, RunContext, actor
from discord_actor.config import RetryPolicy, ScheduleConfig
from discord_actor.db import Database
from discord_actor.platforms.discord import DiscordPlatform
from discord_actor.platforms.nonces import post_nonce
from discord_actor.testing.fake_discord import FakeDiscord
from discord_actor.testing.harness import ActorHarness, actor_config

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
    platform = DiscordPlatform(fake_discord_bot)
    async with ActorHarness(database, [(remind, keyed_actor())], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        channels = await add_keys(harness, fake, 6)
        # Every key's first post is made, then its answer is lost: the attempt fails.
        dropped = fake.disconnect_after_write("POST /channels/*/messages", count=6)
        runs = await harness.tick(timedelta(minutes=1, seconds=10))
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
    platform = NoNonce(fake_discord_bot)
    async with ActorHarness(database, [(remind, keyed_actor())], platform=platform) as harness:
        harness.clock.set(SLOT - timedelta(minutes=1))
        channels = await add_keys(harness, fake, 2)
        fake.disconnect_after_write("POST /channels/*/messages", count=2)
        await harness.tick(timedelta(minutes=1, seconds=10))
    assert [len(fake.sent_messages(c)) for c in channels.values()] == [2, 2]
