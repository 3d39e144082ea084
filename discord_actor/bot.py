"""Hosting the runtime in a discord.py bot: embedded as a cog, or as a standalone bot.

Embedded: an existing bot adds the ``ActorRuntime`` cog, best in its ``setup_hook``::

    class MyBot(commands.Bot):
        async def setup_hook(self) -> None:
            await self.add_cog(ActorRuntime(self, "actor_server.toml"))

``cog_load`` loads the configuration and the actors, opens the database and starts the runtime
(posting through this bot); ``cog_unload``, which ``Bot.close()`` calls, stops it and closes the
database: the runtime lives and dies with the bot. It starts in ``cog_load``, not in
``on_ready``, so the ``on_ready`` that follows every fresh IDENTIFY after a reconnect never
starts a second one.

Standalone: ``discord-actor run`` with a token builds an ``ActorBot`` (``commands.Bot``, or
``ShardedActorBot`` on ``commands.AutoShardedBot`` when ``shard_count``/``shard_ids`` are set)
whose ``setup_hook`` adds the same cog, and closes it in order: the runtime first (runs finish
while the bot can still post), then the bot, then the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands
from discord.ext import commands

from .admin import ActorsCommands, DiscordAlerts, sync_commands
from .alerts import AlertSink
from .assembly import Assembly
from .clock import Clock
from .config.model import (
    CONFIG_FILE,
    DEFAULT_API_BASE_URL,
    DEFAULT_GATEWAY_URL,
    Config,
    DiscordConfig,
)
from .config.reader import load_config
from .config.redaction import redact_url
from .db import Database
from .errors import DiscordActorError
from .keyed import Schedules
from .plugins import LoadedActor, actor_modules, load_actors, load_project
from .runtime import Runtime

log = logging.getLogger("discord_actor.bot")

AppCommand = app_commands.Command[Any, ..., Any] | app_commands.Group


__all__ = [
    "ActorBot",
    "ActorRuntime",
    "GatewayUnreachable",
    "ShardedActorBot",
    "build_intents",
    "create_bot",
    "discord_endpoints",
    "schedules_of",
    "serve_bot",
]


def build_intents(cfg: DiscordConfig) -> discord.Intents:
    """``discord.intents`` as ``discord.Intents``; ``"default"`` adds ``Intents.default()``."""
    intents = discord.Intents.none()
    for name in cfg.intents:
        if name == "default":
            intents.value |= discord.Intents.default().value
        else:
            setattr(intents, name, True)
    return intents


@contextlib.contextmanager
def discord_endpoints(cfg: DiscordConfig) -> Iterator[None]:
    """Send discord.py's REST and gateway traffic to ``api_base_url``/``gateway_url``.

    discord.py has no option for it: the REST base is ``discord.http.Route.BASE`` (webhooks and
    interaction callbacks use it too) and the first gateway address is the class attribute
    ``DiscordWebSocket.DEFAULT_GATEWAY``. Both are process-wide; restored on exit.
    """
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = cfg.api_base_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(cfg.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


class ActorRuntime(commands.Cog, name="ActorRuntime"):
    """The discord-actor runtime as a cog: starts in ``cog_load``, stops in ``cog_unload``.

    ``config`` is the path of ``actor_server.toml`` (or a loaded ``Config``). ``actors``
    replaces loading the configured modules (tests); ``sync_commands=False`` leaves syncing the
    ``/actors`` commands to the host bot (its own ``tree.sync()`` includes them).
    """

    def __init__(
        self,
        bot: commands.Bot | commands.AutoShardedBot,
        config: Config | str | os.PathLike[str] = CONFIG_FILE,
        *,
        actors: Mapping[str, LoadedActor] | None = None,
        sync_commands: bool = True,
        clock: Clock | None = None,
        instance_id: str | None = None,
        stop_on_sigterm: bool = True,
    ) -> None:
        self.bot = bot
        self.config: Config | None = config if isinstance(config, Config) else None
        self._stop_on_sigterm = stop_on_sigterm
        self._sigterm_loop: asyncio.AbstractEventLoop | None = None
        self._sigterms = 0
        self._closing: asyncio.Future[None] | None = None
        self._source = config
        self._actors = actors
        self._sync = sync_commands
        self._clock = clock
        self._instance_id = instance_id
        self._assembly: Assembly | None = None  # the runtime and its database, once loaded
        self.runtime: Runtime | None = None
        #: standalone mode closes the database itself, after the bot
        self.keep_database_open = False
        self._commands: app_commands.Group | None = None
        self._module_commands: list[AppCommand] = []
        self._readies = 0

    @property
    def database(self) -> Database | None:
        """The runtime's database, from ``cog_load`` until it is closed."""
        return self._assembly.database if self._assembly is not None else None

    @property
    def schedules(self) -> Schedules:
        """The runtime's keyed schedules (see ``discord_actor.keyed``); once the cog is loaded."""
        if self.runtime is None:
            raise RuntimeError("the ActorRuntime cog is not loaded (or already stopped)")
        return self.runtime.schedules

    # -- lifecycle ---------------------------------------------------------------------------

    async def cog_load(self) -> None:
        """Load the configuration and actors, open the database, start the runtime."""
        source = self._source  # a path is read again at every load: edits take effect
        # A ConfigError (every problem, with file and line) makes add_cog fail.
        if isinstance(source, Config) or self._actors is not None:
            config = source if isinstance(source, Config) else load_config(Path(source))
            actors = dict(self._actors) if self._actors is not None else load_actors(config)
        else:
            config, actors = load_project(Path(source))  # the modules' problems listed too
        self.config = config
        self._check_endpoints(config.discord)
        assembly = Assembly(
            config,
            actors,
            client=self.bot,
            alerts=self._alerts(config),
            clock=self._clock,
            instance_id=self._instance_id,
        )
        database = await assembly.open()
        if database.applied_migrations:
            log.info("applied migrations: %s", ", ".join(database.applied_migrations))
        runtime = await assembly.start()  # a failed or interrupted start leaves nothing behind
        self._assembly, self.runtime = assembly, runtime
        self._handle_sigterm()
        await self._install_commands(config, runtime)

    async def cog_unload(self) -> None:
        """Stop the runtime (running runs get ``shutdown_grace_seconds``), close the database."""
        try:
            await self.stop()  # a second SIGTERM meanwhile cancels the runs
            if not self.keep_database_open:
                await self.close_database()
        finally:
            self._release_sigterm()

    async def stop(self) -> None:
        """Stop the runtime gracefully; safe to call again and from several tasks at once."""
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            self._uninstall_commands()
        if self._assembly is not None:
            await self._assembly.stop()

    def cancel_runs(self, reason: str) -> None:
        """Cancel the runs in flight (a second Ctrl-C during a graceful stop)."""
        if self._assembly is not None:
            self._assembly.cancel_runs(reason)

    async def close_database(self) -> None:
        assembly, self._assembly = self._assembly, None
        if assembly is not None:
            await assembly.close()

    # -- events ------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Only logs: the runtime started in ``cog_load`` and a reconnect does not restart it."""
        self._readies += 1
        user = self.bot.user
        if self._readies == 1:
            log.info(
                "connected to Discord as %s (id %s) in %d server(s)",
                user,
                user.id if user else "?",
                len(self.bot.guilds),
            )
        else:
            log.info("connected to Discord again (new session); the runtime keeps running")

    # -- SIGTERM -----------------------------------------------------------------------------

    def _handle_sigterm(self) -> None:
        """Close the bot gracefully on SIGTERM, as on Ctrl-C in ``bot.run``.

        Docker and systemd stop a service with SIGTERM, whose default action kills the process
        at once: runs cut off, the embedded PostgreSQL left running. Only taken over when
        nobody handles SIGTERM yet (``discord-actor run`` does, and so may the host program)
        and on the main thread, where signals are delivered.
        """
        if not self._stop_on_sigterm or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        except (NotImplementedError, RuntimeError, ValueError):  # e.g. Windows
            return
        self._sigterm_loop = loop
        self._sigterms = 0

    def _release_sigterm(self) -> None:
        loop, self._sigterm_loop = self._sigterm_loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_signal_handler(signal.SIGTERM)  # back to the default action

    def _on_sigterm(self) -> None:
        self._sigterms += 1
        if self._sigterms == 1:
            grace = self.config.server.shutdown_grace_seconds if self.config else 0
            log.info(
                "SIGTERM: shutting down (running runs get up to %g s; send it again to cancel"
                " them now)",
                grace,
            )
            self._closing = asyncio.ensure_future(self.bot.close())
        else:
            log.warning("SIGTERM again: cancelling running runs now")
            self.cancel_runs("cancelled by a second SIGTERM during shutdown")

    # -- helpers -----------------------------------------------------------------------------

    def _alerts(self, config: Config) -> AlertSink | None:
        channel = config.discord.alert_channel_id
        return DiscordAlerts(self.bot, channel) if channel else None

    async def _install_commands(self, config: Config, runtime: Runtime) -> None:
        """Add ``/actors`` and the actor modules' own commands to the bot's tree and sync it
        (a failure is logged, not fatal)."""
        self._add_module_commands(runtime)
        group = ActorsCommands(runtime.store, config)
        try:
            self.bot.tree.add_command(group)
        except app_commands.CommandAlreadyRegistered:
            log.error("the bot already has a /actors command; discord-actor's is not added")
        else:
            self._commands = group
        if self._commands is None and not self._module_commands:
            return
        if not self._sync:
            return
        try:
            await sync_commands(self.bot.tree, config)
        except Exception as e:  # missing applications.commands scope, Discord down...
            log.warning(
                "could not sync the /actors commands with Discord (%s: %s); they may be"
                " missing or outdated until the next start",
                type(e).__name__,
                e,
            )

    def _add_module_commands(self, runtime: Runtime) -> None:
        """The application commands that actor modules list in a module-level ``commands``."""
        for module in actor_modules(runtime.actors):
            listed = getattr(module, "commands", None)
            if listed is None:
                continue
            if not isinstance(listed, list | tuple):
                log.error(
                    "module %s: 'commands' must be a list of application commands"
                    " (app_commands.Command or Group), not %s; none of them is added",
                    module.__name__,
                    type(listed).__name__,
                )
                continue
            for command in listed:
                if not isinstance(command, app_commands.Command | app_commands.Group):
                    log.error(
                        "module %s: %r in 'commands' is not an application command; skipped",
                        module.__name__,
                        command,
                    )
                    continue
                try:
                    self.bot.tree.add_command(command)
                except app_commands.CommandAlreadyRegistered:
                    log.error(
                        "module %s: the bot already has a /%s command; not added",
                        module.__name__,
                        command.name,
                    )
                    continue
                self._module_commands.append(command)

    def _uninstall_commands(self) -> None:
        """Take ``/actors`` and the modules' commands out of the bot's tree (globally and where
        they were copied to)."""
        names = [c.name for c in self._module_commands]
        if self._commands is not None:
            names.append(self._commands.name)
        self._commands, self._module_commands = None, []
        if self.config is None:
            return
        tree = self.bot.tree
        scopes = [None, *(discord.Object(g) for g in self.config.discord.command_guild_ids)]
        for name in names:
            for guild in scopes:
                command = tree.get_command(name, guild=guild)
                if command is not None and command.name == name:
                    tree.remove_command(name, guild=guild)

    def _check_endpoints(self, cfg: DiscordConfig) -> None:
        configured = (cfg.api_base_url, cfg.gateway_url)
        if configured == (DEFAULT_API_BASE_URL, DEFAULT_GATEWAY_URL):
            return
        current = (
            discord.http.Route.BASE,
            str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY),
        )
        if current != configured:
            log.warning(
                "discord.api_base_url/gateway_url (%s, %s) are not applied to a bot that is"
                " already logged in; wrap its start in"
                " 'with discord_actor.bot.discord_endpoints(config.discord):'",
                redact_url(cfg.api_base_url),
                redact_url(cfg.gateway_url),
            )


def schedules_of(interaction: discord.Interaction[Any]) -> Schedules:
    """The keyed schedules of the runtime that the interaction's bot hosts: what an actor
    module's slash commands use to add, list and remove schedules."""
    client = interaction.client
    cog = client.get_cog("ActorRuntime") if hasattr(client, "get_cog") else None
    if not isinstance(cog, ActorRuntime):
        raise RuntimeError("this bot does not host discord-actor's ActorRuntime cog")
    return cog.schedules


# --------------------------------------------------------------------------------------------
# Standalone


def _bot_options(config: Config, options: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "command_prefix": commands.when_mentioned,  # no text commands; one is required
        "help_command": None,
        "intents": build_intents(config.discord),
        "allowed_mentions": discord.AllowedMentions.none(),
    }
    return defaults | options


async def _close_in_order(cog: ActorRuntime, close_bot: Callable[[], Awaitable[None]]) -> None:
    """The runtime first (runs may still post), then the bot, then the database."""
    try:
        await cog.stop()
    finally:
        try:
            await close_bot()
        finally:
            await cog.close_database()


def _standalone_runtime(
    bot: commands.Bot | commands.AutoShardedBot,
    config: Config,
    actors: Mapping[str, LoadedActor] | None,
    clock: Clock | None,
    instance_id: str | None,
) -> ActorRuntime:
    """The cog a standalone bot hosts; the bot closes the database itself, last."""
    runtime = ActorRuntime(bot, config, actors=actors, clock=clock, instance_id=instance_id)
    runtime.keep_database_open = True
    return runtime


class ActorBot(commands.Bot):
    """The standalone bot: a ``commands.Bot`` that hosts ``ActorRuntime``."""

    def __init__(
        self,
        config: Config,
        actors: Mapping[str, LoadedActor] | None = None,
        *,
        clock: Clock | None = None,
        instance_id: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**_bot_options(config, options))
        self.actor_runtime = _standalone_runtime(self, config, actors, clock, instance_id)

    async def setup_hook(self) -> None:
        await self.add_cog(self.actor_runtime)

    async def close(self) -> None:
        await _close_in_order(self.actor_runtime, super().close)


class ShardedActorBot(commands.AutoShardedBot):
    """``ActorBot`` on discord.py's ``AutoShardedBot`` (``shard_count``/``shard_ids`` set)."""

    def __init__(
        self,
        config: Config,
        actors: Mapping[str, LoadedActor] | None = None,
        *,
        clock: Clock | None = None,
        instance_id: str | None = None,
        **options: Any,
    ) -> None:
        cfg = config.discord
        shards: dict[str, Any] = {"shard_count": cfg.shard_count}
        if cfg.shard_ids is not None:
            shards["shard_ids"] = list(cfg.shard_ids)
        super().__init__(**_bot_options(config, shards | options))
        self.actor_runtime = _standalone_runtime(self, config, actors, clock, instance_id)

    async def setup_hook(self) -> None:
        await self.add_cog(self.actor_runtime)

    async def close(self) -> None:
        await _close_in_order(self.actor_runtime, super().close)


def create_bot(
    config: Config,
    actors: Mapping[str, LoadedActor] | None = None,
    **options: Any,
) -> ActorBot | ShardedActorBot:
    """The standalone bot for ``config``: sharded when ``shard_count``/``shard_ids`` are set.

    ``options`` go to the bot (and ``clock``/``instance_id`` to the runtime).
    """
    if config.discord.shard_count is not None or config.discord.shard_ids is not None:
        return ShardedActorBot(config, actors, **options)
    return ActorBot(config, actors, **options)


class GatewayUnreachable(DiscordActorError):
    """The bot logged in but could not keep a gateway connection."""


async def _start(bot: ActorBot | ShardedActorBot, token: str, gateway_url: str) -> None:
    """``bot.start(token)``, with gateway failures that discord.py gives up on made clear."""
    await bot.login(token)  # LoginFailure; runs setup_hook, which starts the runtime
    try:
        await bot.connect()
    except (discord.ConnectionClosed, discord.PrivilegedIntentsRequired):
        raise  # Discord said why; the caller explains it
    except Exception as e:
        if getattr(bot, "ws", None) is None:
            # discord.py fails its first reconnect with an AttributeError when it never got
            # a connection: the real errors are the ones it logged.
            why = "never connected; the connection errors are logged above"
        else:
            why = f"{type(e).__name__}: {e}"
        raise GatewayUnreachable(
            f"lost the Discord gateway at {redact_url(gateway_url)} ({why}); check"
            " discord.gateway_url and the network"
        ) from e


async def serve_bot(bot: ActorBot | ShardedActorBot, token: str, stop: asyncio.Event) -> None:
    """Run ``bot`` until ``stop`` is set, then close it (runtime, bot, database in that order).

    Raises what stopped the bot (``discord.LoginFailure``, ``PrivilegedIntentsRequired``,
    ``GatewayUnreachable``, a database error from ``cog_load``...) unless ``stop`` was set.
    """
    cfg = bot.actor_runtime.config.discord if bot.actor_runtime.config else DiscordConfig()
    with discord_endpoints(cfg):
        start = asyncio.create_task(_start(bot, token, cfg.gateway_url), name="discord-actor bot")
        waiter = asyncio.create_task(stop.wait(), name="discord-actor stop")
        try:
            await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not start.done() and bot.actor_runtime.runtime is None:
                start.cancel()  # stopped while logging in or opening the database
            try:
                await bot.close()
            finally:
                await asyncio.wait({start})
    if start.cancelled() or stop.is_set():
        if not start.cancelled() and start.exception() is not None:
            log.debug("after the stop: %r", start.exception())
        return
    start.result()  # raises what stopped the bot
