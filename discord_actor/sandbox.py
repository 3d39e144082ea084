"""``discord-actor sandbox``: the project's bot against a fake Discord, driven from the terminal.

The fake Discord of ``testing.fake_discord`` runs in this process and the bot that ``run``
would start connects to it over loopback, with no token. Every message the bot posts, every
answer to a command and every command set it registers is printed (``Console``); each line
typed is a slash command run by the fake's user, ``@you``, who is the bot's only owner (so
``/actors`` answers them)::

    /remind in:10s text:stand up

The sandbox never touches the project's data: it uses a database of its own (``sandbox-pgdata``
beside the embedded server's ``data_dir``, or the schema ``<schema>_sandbox`` of a configured
URL), emptied at every start, since each start is a new fake Discord whose channels and users
have new ids. The HTTP server stays off. End of input, ``quit`` or Ctrl-C stop it cleanly.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from discord_actor.config.model import CONFIG_FILE, Config
from discord_actor.hosting import (
    OK,
    HostError,
    database_label,
    open_for,
    run_async,
    serve_as_bot,
    stop_on_signals,
    until_signalled,
    until_stopped,
)

if TYPE_CHECKING:
    from discord_actor.bot import ActorBot, ShardedActorBot
    from discord_actor.db import Database
    from discord_actor.plugins import LoadedActor
    from discord_actor.testing.fake_discord.console import Console
    from discord_actor.testing.fake_discord.server import FakeDiscord

log = logging.getLogger("discord_actor.sandbox")

DATA_DIR = "sandbox-pgdata"  # beside the configured data_dir
SCHEMA_SUFFIX = "_sandbox"  # of the configured schema, on a configured database URL
USER = "you"  # the fake's user, who types the commands
EXAMPLE = "/remind in:10s text:stand up"
QUIT = {"quit", "exit", "/quit", "/exit"}
HELP = {"help", "/help", "?"}
ANSWER_SECONDS = 3.0  # Discord gives a bot 3 s to answer an interaction
GUILD_READY_SECONDS = 0.05  # discord.py waits this long for more guilds; the fake has one


def run_sandbox(config_path: str | os.PathLike[str] = CONFIG_FILE, *,
                out: TextIO | None = None) -> int:
    """Serve the project's bot against a fake Discord, reading commands from standard input,
    until end of input, ``quit``, SIGINT or SIGTERM; the exit code (0 for any of those)."""
    return until_signalled(lambda: _sandbox(Path(config_path), out))


def _sandbox(config_path: Path, out: TextIO | None) -> int:
    from discord_actor.plugins import load_project

    config, actors = load_project(config_path)  # every problem exits 2 before anything starts
    return run_async(serve_sandbox(config, actors, stdin_lines(), out))


def sandbox_config(config: Config, fake: FakeDiscord) -> Config:
    """``config`` pointed at ``fake``, with the sandbox's own database, ``@you`` as the only
    owner, commands synced globally (the fake has one guild), one shard and no HTTP."""
    from discord_actor.db import resolve_url

    database = config.database
    if resolve_url(database) is None:
        database = dataclasses.replace(database, data_dir=Path(database.data_dir).parent / DATA_DIR)
    else:
        database = dataclasses.replace(database, schema=database.schema + SCHEMA_SUFFIX)
    discord = dataclasses.replace(
        config.discord, owner_ids=(fake.owner.id,), admin_role_ids=(), command_guild_ids=(),
        shard_count=None, shard_ids=None, api_base_url=fake.api_url, gateway_url=fake.gateway_url,
    )
    http = dataclasses.replace(config.http, enabled=False)
    return dataclasses.replace(config, database=database, discord=discord, http=http)


def add_configured_channels(fake: FakeDiscord, config: Config) -> None:
    """The channels the configuration names (actors' ``channel_id``, ``alert_channel_id``),
    with those ids, so that posts to them arrive; named after their actor (or ``alerts``)."""
    wanted: dict[int, str] = {}
    for entry in config.actors:
        if entry.channel_id:
            wanted.setdefault(entry.channel_id, entry.name)  # the first actor names a shared one
    if config.discord.alert_channel_id:
        wanted.setdefault(config.discord.alert_channel_id, "alerts")
    for channel_id, name in wanted.items():
        fake.add_channel(fake.guild, name, channel_id=channel_id)


async def _fresh_database(config: Config) -> Database:
    """The sandbox's database, emptied, and left open for the sandbox's lifetime.

    Opened here without the "created a new, empty database" warning (a sandbox's database is
    expected to be new); the bot's runtime then attaches to the same embedded server and
    migrates the schema afresh."""
    from discord_actor.db.migrations import quote_ident

    database = await open_for(config, migrate=False)
    try:
        others = database.server.shared_with if database.server is not None else []
        if others:
            raise HostError(
                f"another process uses the sandbox's database in {config.database.data_dir} "
                f"(pid {', '.join(map(str, others))}), likely a sandbox of this project still "
                "running: stop it first (this one would empty the database under it)")
        await database.pool.execute(f"DROP SCHEMA IF EXISTS {quote_ident(config.database.schema)} "
                                    "CASCADE")
    except BaseException:
        await database.close()
        raise
    return database


async def serve_sandbox(
    config: Config, actors: dict[str, LoadedActor], lines: AsyncIterator[str],
    out: TextIO | None = None,
) -> int:
    """The sandbox of ``config``'s project: runs each line of ``lines`` as a command until they
    end, ``quit`` or a signal; prints on ``out`` (default: standard output)."""
    from discord_actor.bot import create_bot
    from discord_actor.testing.fake_discord.console import Console
    from discord_actor.testing.fake_discord.server import FakeDiscord

    stop = asyncio.Event()
    bot: ActorBot | ShardedActorBot | None = None

    def cancel() -> None:
        if bot is not None:
            bot.actor_runtime.cancel_runs("cancelled by a second interrupt during shutdown")

    with stop_on_signals(stop, config.server.shutdown_grace_seconds, cancel):
        async with FakeDiscord(owner_name=USER) as fake:
            console = Console(fake, out)
            fake.listen(console.show)
            add_configured_channels(fake, config)
            cfg = sandbox_config(config, fake)
            log.info("fake Discord at %s; database: %s", fake.base_url, database_label(cfg))
            database = await until_stopped(_fresh_database(cfg), stop)
            if database is None:
                return OK
            bot = create_bot(cfg, actors, guild_ready_timeout=GUILD_READY_SECONDS)
            typing = asyncio.create_task(_type_commands(fake, bot, console, lines, stop))
            try:
                await serve_as_bot(bot, cfg, fake.token, stop)
            finally:
                typing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await typing
                await database.close()
    log.info("stopped cleanly")
    return OK


async def _type_commands(
    fake: FakeDiscord, bot: ActorBot | ShardedActorBot, console: Console,
    lines: AsyncIterator[str], stop: asyncio.Event,
) -> None:
    """Once the bot is ready: say what to do, then run each line as a command."""
    while not bot.is_ready():
        if stop.is_set():
            return
        await asyncio.sleep(0.05)
    helped = fake.command_help()
    example = EXAMPLE if any(line.startswith("/remind ") for line in helped) else (
        helped[0].split("  ")[0] if helped else "/name option:value")
    console.say(f"sandbox: the bot is connected to a fake Discord; you are @{USER} in "
                f"#{fake.channel.name}.\nType a command such as {example}; 'help' lists "
                "them, 'quit' or Ctrl-D stops.")
    _help(fake, console)
    why = "end of input"
    async for line in lines:
        text = line.strip()
        if text.lower() in QUIT:
            why = text.lower().lstrip("/")
            break
        if not text or text.lower() in HELP:
            _help(fake, console)
            continue
        await _run_command(fake, console, text)
    console.say(f"stopping ({why})")
    stop.set()


def _help(fake: FakeDiscord, console: Console) -> None:
    lines = fake.command_help() or ["(the bot registered no commands)"]
    console.say("commands:\n" + "\n".join(f"  {line}" for line in lines))


async def _run_command(fake: FakeDiscord, console: Console, text: str) -> None:
    """Deliver one typed command; a line that is no command says why, and a bot that does not
    answer in time is pointed out, as Discord shows "The application did not respond"."""
    from discord_actor.testing.fake_discord.errors import FakeDiscordError

    try:
        interaction = await fake.type_command(text)
    except FakeDiscordError as e:
        console.say(str(e))
        if str(e).startswith("no command"):
            _help(fake, console)
        return
    except Exception as e:  # the sandbox keeps reading whatever one line did
        log.debug("typed %r", text, exc_info=True)
        console.say(f"could not run {text!r}: {type(e).__name__}: {e}")
        return

    async def watch() -> None:
        with contextlib.suppress(TimeoutError):
            await interaction.wait_response(ANSWER_SECONDS)
            return
        console.say(f"/{interaction.name}: the bot did not answer within {ANSWER_SECONDS:g} s "
                    "(Discord would show 'The application did not respond'); -v shows its log")

    watcher = asyncio.create_task(watch())
    _watchers.add(watcher)
    watcher.add_done_callback(_watchers.discard)


_watchers: set[asyncio.Task[None]] = set()  # referenced until done


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of standard input, read by a thread so the event loop never blocks on them.

    The thread reads the file descriptor itself (no ``sys.stdin`` buffer, whose lock a thread
    blocked in a read would hold at interpreter exit); it is a daemon, left blocked at exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        while True:
            try:
                chunk = os.read(sys.stdin.fileno(), 4096)
            except (AttributeError, ValueError, OSError):  # no standard input, or closed
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                put(line)
            if not chunk:
                if pending:
                    put(pending)
                put(None)
                return

    threading.Thread(target=read, name="discord-actor sandbox stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line
