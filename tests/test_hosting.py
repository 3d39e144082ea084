"""Hosting: the ActorRuntime cog in an existing bot, the standalone bot, ``discord-actor run``.

Real discord.py against the wire-level fake, a real PostgreSQL; ``discord-actor run`` runs as a
subprocess pointed at the fake through ``api_base_url``/``gateway_url``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import discord
import pytest
from discord.ext import commands

from discord_actor.bot import ActorRuntime, ShardedActorBot, build_intents, create_bot
from discord_actor.config import ConfigError, load_config
from discord_actor.testing.fake_discord import FakeDiscord

READY_TIMEOUT = 0.05  # guild_ready_timeout for in-process bots
CLI = [sys.executable, "-m", "discord_actor.cli"]

HELLO_PY = """
from discord_actor import RunContext, actor


@actor(platform="discord")
async def hello(ctx: RunContext) -> None:
    user = ctx.client.user if ctx.client is not None else None
    await ctx.post(f"hello from {user.id if user else 'nobody'}")
"""

FAILING_PY = """
from discord_actor import RunContext, actor


@actor
async def failing(ctx: RunContext) -> None:
    raise RuntimeError("the feed is down")
"""


def toml_str(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_project(
    root: Path,
    database_url: str,
    schema: str,
    channel_id: int,
    *,
    discord_section: str = "",
    extra_actors: str = "",
) -> tuple[Path, str]:
    """``actor_server.toml`` with one immediate discord actor (module named uniquely, since
    in-process tests share ``sys.modules``); returns the path and the actor's module name."""
    module = f"hello_{secrets.token_hex(4)}"
    (root / "actors").mkdir(parents=True, exist_ok=True)
    (root / "actors" / f"{module}.py").write_text(HELLO_PY)
    (root / "actors" / f"failing_{module}.py").write_text(FAILING_PY)
    path = root / "actor_server.toml"
    path.write_text(
        f"""
[server]
actors_dir = "actors"
shutdown_grace_seconds = 5

[database]
url = {toml_str(database_url)}
schema = {toml_str(schema)}
max_pool_size = 4
connect_timeout_seconds = 5

[discord]
{discord_section}

[[actors]]
name = "hello"
module = "{module}"
channel_id = {channel_id}
schedule = {{ type = "immediate" }}
{extra_actors.replace("FAILING", f"failing_{module}")}
"""
    )
    return path, module


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def until(predicate: Callable[[], Awaitable[Any]], what: str, limit: float = 10) -> Any:
    """Poll an async condition (the database, a subprocess) until it holds."""
    async with asyncio.timeout(limit):
        while not (result := await predicate()):  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.05)
    return result


def runs_of(database_url: str, schema: str) -> Callable[[], Awaitable[list[asyncpg.Record]]]:
    async def runs() -> list[asyncpg.Record]:
        return await query(
            database_url,
            f"SELECT r.status, r.trigger, r.posted FROM {schema}.runs r"
            f" JOIN {schema}.tasks t ON t.id = r.task_id WHERE t.actor = 'hello' ORDER BY r.id",
        )

    return runs


async def instances(database_url: str, schema: str) -> int:
    rows = await query(database_url, f"SELECT count(*) AS n FROM {schema}.instances")
    return int(rows[0]["n"])


class HostBot(commands.Bot):
    """An existing bot of a user, which adds the runtime in its setup_hook."""

    def __init__(self, config_path: Path) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),
            help_command=None,
            guild_ready_timeout=READY_TIMEOUT,
        )
        self.config_path = config_path

    async def setup_hook(self) -> None:
        await self.add_cog(ActorRuntime(self, self.config_path))


# --------------------------------------------------------------------------------------------
# Embedded


async def test_embedded_cog_runs_actors_and_dies_with_the_bot(
    tmp_path: Path, fake_discord: FakeDiscord, database_url: str, db_schema: str
) -> None:
    fake = fake_discord
    path, _ = write_project(tmp_path, database_url, db_schema, fake.channel.id)
    bot = HostBot(path)
    runs = runs_of(database_url, db_schema)
    async with fake.connected(bot):
        cog = bot.get_cog("ActorRuntime")
        assert isinstance(cog, ActorRuntime) and cog.runtime is not None
        message = await fake.wait_for_message(channel_id=fake.channel.id)
        assert message.content == f"hello from {fake.bot_user.id}"  # ctx.client is the bot
        [run] = await until(lambda: _finished(runs), "the run to be recorded")
        assert run["status"] == "succeeded"
        assert json.loads(run["posted"])[0]["message_id"] == message.id
        assert await instances(database_url, db_schema) == 1
        assert "1:actors" in fake.commands[None]  # /actors synced globally
        assert bot.tree.get_command("actors") is not None
        with pytest.raises(discord.ClientException, match="already loaded"):
            await bot.add_cog(ActorRuntime(bot, path))  # one runtime per bot
    # Bot.close() removed the cog: runtime stopped, database closed, commands gone.
    assert cog.runtime is None and cog.database is None
    assert bot.tree.get_command("actors") is None
    assert await instances(database_url, db_schema) == 0


async def _finished(runs: Callable[[], Awaitable[list[asyncpg.Record]]]) -> list[asyncpg.Record]:
    rows = await runs()
    return rows if rows and all(r["status"] != "running" for r in rows) else []


async def test_a_reconnect_does_not_start_a_second_runtime(
    tmp_path: Path, fake_discord: FakeDiscord, database_url: str, db_schema: str
) -> None:
    fake = fake_discord
    path, _ = write_project(tmp_path, database_url, db_schema, fake.channel.id)
    bot = HostBot(path)
    runs = runs_of(database_url, db_schema)
    async with fake.connected(bot):
        await fake.wait_for_message()
        await until(lambda: _finished(runs), "the startup run")
        # A RESUME ...
        resumed = bot.wait_for("resumed", timeout=5)
        await fake.close_gateway(4000)
        await resumed
        # ... and a fresh IDENTIFY, which brings a second on_ready.
        since = len(fake.gateway_frames)
        ready = bot.wait_for("ready", timeout=5)
        await fake.invalidate_session(resumable=False)
        await ready
        await fake.wait_for_frame(op=2, since=since)
        identifies = [f for f in fake.gateway_frames if f.direction == "recv" and f.op == 2]
        assert len(identifies) == 2
        # A manual run goes through the one runtime; then count everything.
        cog = bot.get_cog("ActorRuntime")
        assert isinstance(cog, ActorRuntime) and cog.runtime is not None
        assert await cog.runtime.store.operator.trigger("hello")
        await fake.wait_for_message()

        async def both() -> list[asyncpg.Record]:
            rows = await _finished(runs)
            return rows if len(rows) >= 2 else []

        rows = await until(both, "the manual run")
        assert [(r["trigger"], r["status"]) for r in rows] == [
            ("startup", "succeeded"),
            ("manual", "succeeded"),
        ]
        assert await instances(database_url, db_schema) == 1
        assert list(bot.cogs) == ["ActorRuntime"]
        assert len(fake.sent_messages()) == 2


async def test_a_broken_configuration_fails_add_cog_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "actor_server.toml"
    path.write_text('[discord]\nintents = ["guild"]\n\n[[actors]]\nname = "x"\n')
    bot = HostBot(path)
    with pytest.raises(ConfigError) as info:
        await bot.add_cog(ActorRuntime(bot, path))
    assert [(p.key, p.line) for p in info.value.problems] == [
        ("discord.intents[0]", 2),
        ("actors[0].module", 4),
    ]
    assert bot.get_cog("ActorRuntime") is None


# --------------------------------------------------------------------------------------------
# Standalone, in process


async def test_sharded_standalone_bot_posts_alerts_and_syncs_to_guilds(
    tmp_path: Path, fake_discord: FakeDiscord, database_url: str, db_schema: str
) -> None:
    fake = fake_discord
    fake.shard_count = 2
    alerts = fake.add_channel(fake.guild, "alerts")
    path, _ = write_project(
        tmp_path,
        database_url,
        db_schema,
        fake.channel.id,
        discord_section=(
            f'intents = ["guilds"]\nshard_count = 2\nalert_channel_id = {alerts.id}\n'
            f"command_guild_ids = [{fake.guild.id}]\nowner_ids = [{fake.owner.id}]\n"
        ),
        extra_actors=(
            '[[actors]]\nname = "failing"\nmodule = "FAILING"\nmax_consecutive_failures = 1\n'
            'schedule = { type = "immediate" }\n'
        ),
    )
    config = load_config(path)
    bot = create_bot(config, guild_ready_timeout=READY_TIMEOUT)
    assert isinstance(bot, ShardedActorBot)
    assert bot.intents == discord.Intents(guilds=True)
    async with fake.connected(bot):
        assert bot.shard_count == 2
        message = await fake.wait_for_message(channel_id=fake.channel.id)
        assert message.content == f"hello from {fake.bot_user.id}"
        alert = await fake.wait_for_message(channel_id=alerts.id)
        assert "`failing` was paused by the circuit breaker" in alert.content
        assert "the feed is down" in alert.content
        assert "1:actors" in fake.commands[fake.guild.id]
        cog = bot.actor_runtime
        assert cog.database is not None
    assert cog.runtime is None and cog.database is None  # closed after the bot
    assert await instances(database_url, db_schema) == 0


def test_intents_default_and_privileged(tmp_path: Path) -> None:
    path = tmp_path / "actor_server.toml"
    path.write_text('[discord]\nintents = ["default", "members"]\n')
    intents = build_intents(load_config(path, environ={}).discord)
    assert intents.value == discord.Intents.default().value | discord.Intents(members=True).value
    assert not intents.message_content and not intents.presences
    path.write_text("")
    assert build_intents(load_config(path, environ={}).discord) == discord.Intents.default()


# --------------------------------------------------------------------------------------------
# discord-actor run


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def endpoints(fake: FakeDiscord) -> str:
    return (
        f"api_base_url = {toml_str(fake.api_url)}\ngateway_url = {toml_str(fake.gateway_url)}\n"
        f'intents = ["guilds"]\ncommand_guild_ids = [{fake.guild.id}]\n'
    )


async def test_run_standalone_posts_and_stops_on_sigint(
    tmp_path: Path, fake_discord: FakeDiscord, database_url: str, db_schema: str
) -> None:
    fake = fake_discord
    write_project(
        tmp_path, database_url, db_schema, fake.channel.id, discord_section=endpoints(fake)
    )
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as out_f, err.open("w") as err_f:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", cwd=tmp_path, env=cli_env(DISCORD_TOKEN=fake.token),
            stdout=out_f, stderr=err_f,
        )
    try:
        message = await fake.wait_for_message(channel_id=fake.channel.id, timeout=30)
        assert message.content == f"hello from {fake.bot_user.id}"
        [run] = await until(lambda: _finished(runs_of(database_url, db_schema)), "the run")
        assert json.loads(run["posted"])[0]["message_id"] == message.id
        assert "1:actors" in fake.commands[fake.guild.id]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log, printed = err.read_text(), out.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert f"connecting to Discord at {fake.api_url}" in log
    assert "with the bot token in $DISCORD_TOKEN" in log
    assert "stopped cleanly" in log
    assert fake.token not in log and fake.token not in printed
    assert await instances(database_url, db_schema) == 0
    assert fake.sessions[-1].ended or not fake.gateway.live_connections(None)


async def test_run_with_a_rejected_token_or_intent_exits_2(
    tmp_path: Path, fake_discord: FakeDiscord, database_url: str, db_schema: str
) -> None:
    fake = fake_discord
    write_project(
        tmp_path, database_url, db_schema, fake.channel.id, discord_section=endpoints(fake)
    )
    wrong = "MTIz.not-the-token." + secrets.token_urlsafe(20)
    p = await asyncio.to_thread(
        subprocess.run, [*CLI, "run"], cwd=tmp_path, env=cli_env(DISCORD_TOKEN=wrong),
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert "Discord rejected the bot token in $DISCORD_TOKEN (401 Unauthorized)" in p.stderr
    assert wrong not in p.stderr and wrong not in p.stdout
    schemas = await query(
        database_url, "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
        db_schema,
    )
    assert schemas == []  # the database was not touched

    # A privileged intent that is not enabled in the developer portal: Discord closes with 4014.
    fake.privileged_intents = 0
    write_project(
        tmp_path, database_url, db_schema, fake.channel.id,
        discord_section=endpoints(fake).replace('["guilds"]', '["guilds", "members"]'),
    )
    p = await asyncio.to_thread(
        subprocess.run, [*CLI, "run"], cwd=tmp_path, env=cli_env(DISCORD_TOKEN=fake.token),
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert "Discord refused the privileged intents in discord.intents (members)" in p.stderr
    assert fake.token not in p.stderr and fake.token not in p.stdout


async def test_run_without_a_token_exits_2_unless_dry_run(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    write_project(tmp_path, database_url, db_schema, 1234)
    p = await asyncio.to_thread(
        subprocess.run, [*CLI, "run"], cwd=tmp_path, env=cli_env(),
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "no bot token: $DISCORD_TOKEN is not set" in p.stderr
    assert "discord actors (hello)" in p.stderr and "--dry-run" in p.stderr

    out = tmp_path / "out.txt"
    with out.open("w") as out_f:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "run", "--dry-run", cwd=tmp_path, env=cli_env(),
            stdout=out_f, stderr=subprocess.PIPE,
        )
    try:
        async def printed() -> bool:
            return "[hello -> #1234] hello from nobody" in out.read_text()

        await until(printed, "the dry-run post on the console", limit=30)
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    log = stderr.decode()
    assert "dry run: discord actors (hello) print their posts on the console" in log
    assert "Traceback" not in log


MYBOT_PY = """
import os

import discord
from discord.ext import commands

from discord_actor.bot import ActorRuntime, discord_endpoints
from discord_actor.config import load_config


class MyBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default())

    async def setup_hook(self) -> None:
        await self.add_cog(ActorRuntime(self, "actor_server.toml"))


with discord_endpoints(load_config("actor_server.toml").discord):
    MyBot().run(os.environ["DISCORD_TOKEN"], root_logger=True)
"""


@pytest.mark.slow
async def test_embedded_bot_stops_gracefully_on_sigterm(
    tmp_path: Path, fake_discord: FakeDiscord
) -> None:
    """The embedded example of docs/discord.md under Docker or systemd: SIGTERM closes the bot, the
    runtime and the embedded PostgreSQL, and the process exits 0."""
    fake = fake_discord
    (tmp_path / "actors").mkdir()
    (tmp_path / "actors" / "hello.py").write_text(HELLO_PY)
    (tmp_path / "mybot.py").write_text(MYBOT_PY)
    (tmp_path / "actor_server.toml").write_text(
        f"[discord]\n{endpoints(fake)}\n"
        f'[[actors]]\nname = "hello"\nmodule = "hello"\nchannel_id = {fake.channel.id}\n'
        'schedule = { type = "immediate" }\n'
    )
    err = tmp_path / "err.txt"
    with err.open("w") as err_f:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "mybot.py", cwd=tmp_path, env=cli_env(DISCORD_TOKEN=fake.token),
            stdout=subprocess.DEVNULL, stderr=err_f,
        )
    try:
        message = await fake.wait_for_message(channel_id=fake.channel.id, timeout=60)
        assert message.content == f"hello from {fake.bot_user.id}"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, err.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.read_text()
    assert "SIGTERM: shutting down" in log
    assert "Traceback" not in log, log
    pgdata = tmp_path / ".discord_actor" / "pgdata"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "the embedded PostgreSQL is still running"
