"""Pacing posts under Discord's limits: the global limit shared by every process of a bot
through the database, and each channel's bucket. Real PostgreSQL, real ``discord-actor run``
processes and the real discord.py against the fake Discord with its limits on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import discord
import pytest
from discord.ext import commands
from servers import configured, fetch, stop_servers

from discord_actor import Once, RunContext, actor
from discord_actor.config import ScheduleConfig, load_config
from discord_actor.db import Database, open_database
from discord_actor.db.store import Store
from discord_actor.keyed import NewSchedule, Schedules
from discord_actor.platforms import every_platform, pacing
from discord_actor.platforms.discord import DiscordPlatform
from discord_actor.platforms.pacing import ChannelPacer, GlobalPacer
from discord_actor.runtime import Runtime
from discord_actor.testing.fake_discord import DiscordLimits, FakeDiscord
from discord_actor.testing.fake_discord.front import RateLimiter
from discord_actor.testing.harness import ActorHarness, actor_config


def spawn(directory: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``discord-actor run`` in ``directory``, its output in ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "discord_actor.cli", "run"], cwd=directory, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )


def most_in_a_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(
        sum(1 for u in ordered[i:] if u < t + 1.0) for i, t in enumerate(ordered)
    ) if ordered else 0


async def test_two_pacers_share_one_budget_through_the_database(database: Database) -> None:
    """Two processes' pacers (two here, on one budget row): together never more requests in a
    second than the limit, each reserving a batch per round trip."""
    budgets = Store(database.pool, database.schema).rate_budgets

    async def reserve(count: int, spacing: float) -> float:
        return await budgets.reserve("discord:1", count, spacing)

    pacers = [GlobalPacer(20, reserve), GlobalPacer(20, reserve)]
    loop = asyncio.get_running_loop()
    left: list[float] = []

    async def send(pacer: GlobalPacer) -> None:
        await pacer.acquire()
        left.append(loop.time())

    await asyncio.gather(*(send(p) for p in pacers for _ in range(30)))
    assert len(left) == 60
    assert most_in_a_second(left) <= 20
    assert sum(p.used for p in pacers) == 60
    assert sum(p.reservations for p in pacers) <= 60 / 2  # batched: not a round trip a post
    row = await database.pool.fetchrow(
        f'SELECT reserved_until FROM "{database.schema}".rate_budgets WHERE bucket = $1',
        "discord:1",
    )
    assert row is not None


async def test_without_the_database_a_pacer_paces_its_process_alone() -> None:
    async def broken(count: int, spacing: float) -> float:
        raise OSError("connection refused")

    pacer = GlobalPacer(20, broken)
    loop = asyncio.get_running_loop()
    left: list[float] = []

    async def send() -> None:
        await pacer.acquire()
        left.append(loop.time())

    await asyncio.gather(*(send() for _ in range(25)))
    assert most_in_a_second(left) <= 20 and pacer.reservations == 0


@actor(platform="discord")
async def chatty(ctx: RunContext) -> None:
    for i in range(5):
        await ctx.post(f"line {i}")


async def test_a_channels_posts_keep_their_order_within_its_bucket(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    fake.front.message_limiter = RateLimiter(2, 1.0)  # a small bucket: a quick test
    platform = DiscordPlatform(fake_discord_bot)
    platform.channels = ChannelPacer(messages=2, window=1.05)
    cfg = actor_config("chatty", platform="discord", channel_id=fake.channel.id)
    async with ActorHarness(database, [(chatty, cfg)], platform=platform) as harness:
        [run] = await harness.tick()
    assert run.status == "succeeded", run.error_message
    assert [m.content for m in fake.sent_messages()] == [f"line {i}" for i in range(5)]
    assert fake.counts.rate_limited["user"] == 0  # never reached the bucket's 429


BURST_PY = '''
from discord_actor import RunContext, actor


@actor(platform="discord")
async def burst(ctx: RunContext) -> None:
    await ctx.post(f"burst {ctx.key}")
'''


def burst_project(
    root: Path, fake: FakeDiscord, database_url: str, schema: str, *, server: str,
    discord: str = "",
) -> tuple[Path, dict[str, str]]:
    """The ``burst`` actor (keyed, posting its key) on ``fake``, for ``discord-actor run``
    processes: its config's path, and their environment (the fake's token)."""
    (root / "actors").mkdir()
    (root / "actors" / "burst.py").write_text(BURST_PY)
    config_path = root / "actor_server.toml"
    config_path.write_text(textwrap.dedent(f"""
        [server]
        poll_interval_seconds = 0.2
        {server}

        [database]
        url = {json.dumps(database_url)}
        schema = {json.dumps(schema)}

        [discord]
        api_base_url = {json.dumps(fake.api_url)}
        gateway_url = {json.dumps(fake.gateway_url)}
        intents = ["guilds"]
        command_guild_ids = [{fake.guild.id}]
        {discord}

        [[actors]]
        name = "burst"
        module = "burst"
        platform = "discord"
        retry = {{ attempts = 3, backoff_seconds = 1 }}
        """))
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
    env |= {"PYTHONUNBUFFERED": "1", "DISCORD_TOKEN": fake.token}
    return config_path, env


async def add_burst(config_path: Path, channel_ids: list[int], seconds: float) -> None:
    """Keys ``k0``, ``k1``... of ``burst``, one per channel id given, all due in ``seconds``."""
    config = load_config(config_path)
    database = await open_database(config.database)
    try:
        at = datetime.now(UTC) + timedelta(seconds=seconds)
        await Schedules(Store(database.pool, database.schema), config).add_many(
            "burst",
            [NewSchedule(f"k{i}", Once(at=at), None, c, None) for i, c in enumerate(channel_ids)],
        )
    finally:
        await database.close()


async def test_two_processes_share_the_global_limit_without_a_global_429(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """60 posts due at one instant over 30 channels, two ``discord-actor run`` processes, a
    fake Discord of 20 requests/s per token: every key once, both processes post, and not one
    global 429 (discord.py alone draws dozens here)."""
    limits = DiscordLimits(global_per_second=20)
    async with FakeDiscord(heartbeat_interval_ms=500, limits=limits) as fake:
        channels = [fake.add_channel(fake.guild, f"c{i}", dispatch=False) for i in range(30)]
        config_path, env = burst_project(
            tmp_path, fake, database_url, db_schema,
            server="shutdown_grace_seconds = 5", discord="requests_per_second = 20",
        )
        logs = [tmp_path / f"server{i}.log" for i in range(2)]
        procs = [spawn(tmp_path, env, log) for log in logs]
        try:
            deadline = time.monotonic() + 60
            while not all("connected to Discord as" in log.read_text() for log in logs):
                assert time.monotonic() < deadline, logs[0].read_text()[-2000:]
                assert all(p.poll() is None for p in procs), logs[0].read_text()[-2000:]
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.5)  # the start-up requests leave the fake's window
            await add_burst(config_path, [channels[i % 30].id for i in range(60)], 1.0)
            await fake.wait_until(lambda: len(fake.sent_messages()) >= 60, timeout=60,
                                  what="60 posts")
            await asyncio.sleep(0.5)  # nothing more comes
        finally:
            await stop_servers(procs)
        contents = sorted(m.content for m in fake.sent_messages())
        assert contents == sorted(f"burst k{i}" for i in range(60))  # each key once
        assert fake.global_429s == 0, f"{fake.global_429s} global 429s"
        assert fake.peak_requests_per_second <= 20
    rows = await fetch(
        database_url,
        "SELECT r.instance_id, count(*) AS n FROM S.runs r JOIN S.tasks t ON t.id = r.task_id"
        " WHERE t.key IS NOT NULL AND r.status = 'succeeded' GROUP BY r.instance_id",
        db_schema,
    )
    assert len(rows) == 2, f"one process posted everything: {rows}"
    assert sum(r["n"] for r in rows) == 60


async def test_the_bots_other_requests_and_discord_pys_retries_wait_for_slots_too() -> None:
    """Requests that are not posts (an actor's ``ctx.client`` calls) and discord.py's own retry
    of a 502 leave through the gate: no global 429 from them."""
    limits = DiscordLimits(global_per_second=5)
    async with FakeDiscord(heartbeat_interval_ms=500, limits=limits) as fake:
        with fake.patch_discord_py():
            bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(),
                               help_command=None, guild_ready_timeout=0.05)
            async with fake.connected(bot):
                platform = DiscordPlatform(bot)
                platform.pacer = platform.gate.pacer = GlobalPacer(5)
                await asyncio.sleep(1.0)  # the start-up requests leave the window
                await asyncio.gather(*(bot.fetch_channel(fake.channel.id) for _ in range(12)))
                assert platform.gate.gated == 12
                fake.fail_after_write("POST /channels/*/messages", 502)
                cfg = actor_config("poster", platform="discord", channel_id=fake.channel.id)
                await platform.post(cfg, "after a 502", nonce="n1")
                assert platform.gate.gated == 13  # the retry, not the first request
                # A second platform on the same bot replaces the first one's gate: a request
                # never waits twice.
                second = DiscordPlatform(bot)
                session = bot.http._HTTPClient__session  # type: ignore[attr-defined]
                assert session.trace_configs == [second.gate.trace]
    assert fake.global_429s == 0
    assert [m.content for m in fake.sent_messages()] == ["after a 502"]


async def test_runs_whose_posts_wait_for_discord_leave_room_for_other_actors(
    database: Database, fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    """``max_concurrent_runs = 1``, six posts to one channel that takes 2 a second, and another
    actor due meanwhile: it runs while the posts wait, not after the last of them."""
    fake = fake_discord
    side_ran: list[datetime] = []

    @actor(platform="none")
    async def side(ctx: RunContext) -> None:
        side_ran.append(datetime.now(UTC))

    platform = DiscordPlatform(fake_discord_bot)
    platform.channels = ChannelPacer(messages=2, window=1.05)
    none = ScheduleConfig(type="none", timezone="UTC")
    actors = [
        (chatty_once, actor_config("burst", platform="discord", schedule=none)),
        (side, actor_config("side", platform="none", schedule=none)),
    ]
    config, loaded = configured(database, actors, max_concurrent_runs=1,
                                poll_interval_seconds=0.2)
    runtime = Runtime(config, database, loaded, platforms=every_platform(platform))
    await runtime.start()
    try:
        now = datetime.now(UTC)
        await runtime.schedules.add_many("burst", [
            NewSchedule(f"k{i}", Once(at=now), None, fake.channel.id, None) for i in range(6)
        ])
        await runtime.schedules.add("side", key="s", schedule=Once(at=now + timedelta(seconds=0.5)))
        await fake.wait_until(lambda: len(fake.sent_messages()) == 6 and side_ran, timeout=20,
                              what="the posts and the other actor's run")
    finally:
        await runtime.stop()
    last_post = max(m.timestamp for m in fake.sent_messages())
    assert side_ran[0] < last_post, "the other actor waited for the posts"
    assert platform.parked == 0


@actor(platform="discord")
async def chatty_once(ctx: RunContext) -> None:
    await ctx.post(f"post {ctx.key}")


async def test_on_a_loop_late_at_every_wake_up_requests_still_leave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event loop that wakes every slot too late (a stalled process, a loaded machine):
    each request gives up a few slots, then takes the next however late, never waiting on."""
    pacer = GlobalPacer(20)
    late_by = pacing.LATE_SECONDS * 3
    real_sleep = asyncio.sleep

    async def oversleeping(delay: float) -> None:
        await real_sleep(delay + late_by)

    monkeypatch.setattr(pacing.asyncio, "sleep", oversleeping)
    await asyncio.wait_for(asyncio.gather(*(pacer.acquire() for _ in range(5))), 10)
    monkeypatch.undo()
    assert pacer.used == 5 and 0 < pacer.late <= 5 * pacing.MAX_LATE


@pytest.mark.slow
async def test_a_waiting_post_survives_a_kill_and_every_key_is_delivered_once(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """Seven keys due at one instant in one channel: five leave, two wait for the channel's
    turn; then the process is killed with SIGKILL. A second process takes the dead one's runs
    over after its lease (abandoned, retried with the same nonces): each key is one message,
    whether its post had left (a replay, answered with the message Discord made) or waited."""
    async with FakeDiscord(heartbeat_interval_ms=500, limits=DiscordLimits()) as fake:
        channel = fake.add_channel(fake.guild, "one", dispatch=False)
        config_path, env = burst_project(
            tmp_path, fake, database_url, db_schema,
            server="lease_seconds = 1.5\nshutdown_grace_seconds = 2",
        )

        def connected(log: Path) -> bool:
            return "connected to Discord as" in log.read_text()

        async def started(log: Path, proc: subprocess.Popen[bytes]) -> None:
            deadline = time.monotonic() + 60
            while not connected(log):
                assert time.monotonic() < deadline and proc.poll() is None, "did not start"
                await asyncio.sleep(0.1)

        first = spawn(tmp_path, env, tmp_path / "first.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            await started(tmp_path / "first.log", first)
            await add_burst(config_path, [channel.id] * 7, 0.5)
            await fake.wait_until(lambda: len(fake.sent_messages()) >= 5, timeout=20,
                                  what="the channel's first five posts")
            first.send_signal(signal.SIGKILL)  # two posts wait for the channel's turn
            first.wait()
            assert len(fake.sent_messages()) == 5
            second = spawn(tmp_path, env, tmp_path / "second.log")
            await fake.wait_until(lambda: len(fake.sent_messages()) >= 7, timeout=30,
                                  what="the two posts that waited")
            await asyncio.sleep(1.0)  # nothing more comes
        finally:
            await stop_servers([first, second], grace_seconds=20)
        contents = sorted(m.content for m in fake.sent_messages(channel.id))
        assert contents == sorted(f"burst k{i}" for i in range(7))  # each key once
    rows = await fetch(
        database_url,
        "SELECT t.key, array_agg(r.status ORDER BY r.attempt) AS statuses FROM S.runs r"
        " JOIN S.tasks t ON t.id = r.task_id WHERE t.key IS NOT NULL GROUP BY t.key",
        db_schema,
    )
    by_key = {r["key"]: list(r["statuses"]) for r in rows}
    assert all(s[-1] == "succeeded" for s in by_key.values()), by_key
    taken_over = [k for k, s in by_key.items() if s[0] == "abandoned"]
    assert len(taken_over) >= 2, by_key  # at least the two that waited
