"""The fake Discord's own limits (``FakeDiscord(limits=DiscordLimits(...))``): the global limit
per token, the per-channel message bucket, nonce de-duplication, faults after the write and the
count of invalid requests, met over the wire by aiohttp and by the real discord.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from discord_actor.testing.fake_discord import DiscordLimits, FakeDiscord
from discord_actor.testing.fake_discord.fixtures import FIXTURE_GUILD_READY_TIMEOUT


@pytest.fixture
async def limited() -> AsyncIterator[FakeDiscord]:
    limits = DiscordLimits(global_per_second=5, channel_messages=3, channel_window=5.0)
    async with FakeDiscord(heartbeat_interval_ms=500, limits=limits) as fake:
        with fake.patch_discord_py():
            yield fake


async def call(
    fake: FakeDiscord, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, fake.api_url + path, json=body,
            headers={"Authorization": f"Bot {fake.token}"},
        ) as response:
            return response.status, dict(response.headers), await response.json()


async def test_the_global_limit_answers_real_429s(limited: FakeDiscord) -> None:
    fake = limited
    answers = await asyncio.gather(
        *(call(fake, "GET", f"/channels/{fake.channel.id}") for _ in range(8))
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 5 + [429] * 3
    status, headers, body = next(a for a in answers if a[0] == 429)
    assert body["global"] is True and 0 < body["retry_after"] <= 1.0
    assert headers["X-RateLimit-Scope"] == "global" and headers["X-RateLimit-Global"] == "true"
    assert headers["Via"] and headers["Content-Type"] == "application/json"
    assert fake.global_429s == 3 and fake.invalid_requests == 3
    assert fake.peak_requests_per_second == 8
    # Interaction callbacks do not count towards it: an unknown one is a 404, never a 429.
    status, _, body = await call(fake, "POST", "/interactions/1/nothing/callback", {"type": 4})
    assert (status, body["code"]) == (404, 10062)


async def test_a_channel_takes_its_bucket_of_messages_then_429s(limited: FakeDiscord) -> None:
    fake = limited
    other = fake.add_channel(fake.guild, "other")
    results = []
    for i in range(4):
        results.append(await call(fake, "POST", f"/channels/{fake.channel.id}/messages",
                                  {"content": f"m{i}"}))
        await asyncio.sleep(0.21)  # under the global limit of 5/s
    assert [r[0] for r in results] == [200, 200, 200, 429]
    assert [r[1]["X-RateLimit-Remaining"] for r in results[:3]] == ["2", "1", "0"]
    status, headers, body = results[3]
    assert body["global"] is False and headers["X-RateLimit-Scope"] == "user"
    assert headers["X-RateLimit-Limit"] == "3" and float(headers["X-RateLimit-Reset-After"]) > 4
    status, _, _ = await call(fake, "POST", f"/channels/{other.id}/messages", {"content": "x"})
    assert status == 200  # another channel has its own bucket
    assert fake.global_429s == 0 and fake.counts.rate_limited["user"] == 1


async def connected_bot(fake: FakeDiscord) -> commands.Bot:
    return commands.Bot(
        command_prefix="!", intents=discord.Intents.default(), help_command=None,
        guild_ready_timeout=FIXTURE_GUILD_READY_TIMEOUT,
    )


async def test_discord_py_waits_out_the_global_limit(limited: FakeDiscord) -> None:
    fake = limited
    channels = [fake.add_channel(fake.guild, f"c{i}", dispatch=False) for i in range(8)]
    async with fake.connected(await connected_bot(fake)) as bot:
        await asyncio.sleep(1.0)  # the start-up requests leave the window
        await asyncio.gather(
            *(bot.get_partial_messageable(c.id).send("burst") for c in channels)
        )
    assert len(fake.sent_messages()) == 8  # a global 429 with Via is waited out, not a ban
    assert fake.global_429s > 0


async def test_a_repeated_nonce_returns_the_message_it_made(limited: FakeDiscord) -> None:
    fake = limited
    async with fake.connected(await connected_bot(fake)) as bot:
        channel = bot.get_partial_messageable(fake.channel.id)
        first = await channel.send("once", nonce="k1")
        again = await channel.send("once", nonce="k1")  # discord.py adds enforce_nonce
        assert again.id == first.id and fake.nonce_replays == 1
        fake.nonce_seconds = 0.0  # the window passed: a new message
        await asyncio.sleep(0.01)
        later = await channel.send("once", nonce="k1")
        assert later.id != first.id
    assert [m.nonce for m in fake.sent_messages()] == ["k1", "k1"]
    status, _, body = await call(fake, "POST", f"/channels/{fake.channel.id}/messages",
                                 {"content": "x", "nonce": "n" * 26, "enforce_nonce": True})
    assert status == 400 and "nonce" in body["errors"]


async def test_faults_after_the_write_leave_the_message_made(limited: FakeDiscord) -> None:
    fake = limited
    other = fake.add_channel(fake.guild, "other", dispatch=False)
    async with fake.connected(await connected_bot(fake)) as bot:
        channel = bot.get_partial_messageable(fake.channel.id)
        dropped = fake.disconnect_after_write("POST /channels/*/messages")
        with pytest.raises(aiohttp.ClientError):
            await channel.send("dropped")
        assert dropped.hits == 1 and [m.content for m in fake.sent_messages()] == ["dropped"]
        # A 502 after the write: discord.py retries it; the same nonce makes it one message.
        fake.fail_after_write("POST /channels/*/messages", 502)
        sent = await bot.get_partial_messageable(other.id).send("after 502", nonce="n502")
    assert [m.id for m in fake.sent_messages(other.id)] == [sent.id]
    assert [r.status for r in fake.requests_matching(f"POST /channels/{other.id}/messages")] == [
        502, 200
    ]


async def test_a_fraction_of_requests_is_hit(limited: FakeDiscord) -> None:
    fake = limited
    fault = fake.fail_after_write("GET /channels/*", 502, count=1000, fraction=0.5)
    for _ in range(4):
        await asyncio.gather(*(call(fake, "GET", f"/channels/{fake.channel.id}") for _ in range(5)))
        await asyncio.sleep(1.01)
    assert 4 <= fault.hits <= 16  # about half of 20, drawn from fake.random


async def test_invalid_requests_are_counted_as_discord_counts_them(limited: FakeDiscord) -> None:
    fake = limited
    fake.fail_next("GET /channels/*", 403, code=50001, message="Missing Access")
    assert (await call(fake, "GET", f"/channels/{fake.channel.id}"))[0] == 403
    assert (await call(fake, "GET", "/channels/1"))[0] == 404  # not an invalid request
    assert fake.invalid_requests == 1
    fake.counts.answered(429, "shared")  # a shared-scope 429 is not held against the bot
    assert fake.invalid_requests == 1 and fake.counts.rate_limited["shared"] == 1


async def test_without_limits_the_fake_answers_as_before(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    answers = await asyncio.gather(
        *(call(fake, "GET", f"/channels/{fake.channel.id}") for _ in range(20))
    )
    assert {a[0] for a in answers} == {200} and fake.global_429s == 0
