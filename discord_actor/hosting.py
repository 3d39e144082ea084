"""Hosting the runtime in this process until SIGINT/SIGTERM: what ``discord-actor run`` does.

``run_server`` loads the project, takes the signals over, opens the database and serves: as a
Discord bot when there is a token, else on the console. The first signal stops gracefully
(running runs get ``shutdown_grace_seconds``), the second cancels them. A stop by either signal
is a clean stop at any point, while loading the actors and opening the database too.

``discord-actor sandbox`` (``sandbox``) shares the pieces: ``until_signalled``,
``stop_on_signals`` and ``serve_as_bot``, the bot served until an event is set.

Heavy modules (asyncpg, discord.py, the runtime) are imported by the functions that need them,
so that importing this module (the CLI does for every command) costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from discord_actor.config.model import CONFIG_FILE, Config
from discord_actor.config.redaction import redact_url
from discord_actor.errors import DiscordActorError

if TYPE_CHECKING:
    from discord_actor.bot import ActorBot, ShardedActorBot
    from discord_actor.db import Database
    from discord_actor.plugins import LoadedActor

OK, FAILURE, USAGE = 0, 1, 2

log = logging.getLogger("discord_actor.hosting")
_T = TypeVar("_T")

LEFTOVER_TASKS_SECONDS = 2.0  # for tasks still pending when a command is done


class HostError(DiscordActorError):
    """A failure to report as one message and an exit code (1, or 2 for a usage or
    configuration problem), without a traceback."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------
# Entry point


class _StoppedAtStartup(BaseException):
    """SIGINT/SIGTERM before the event loop took the signals over (loading actors).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` (an actor module's
    import) takes it for the module's own failure."""


def _stop_startup(signum: int, frame: object) -> None:
    raise _StoppedAtStartup(signal.Signals(signum).name)


def run_server(
    config_path: str | os.PathLike[str] = CONFIG_FILE,
    *,
    dry_run: bool = False,
) -> int:
    """Run until SIGINT/SIGTERM; the exit code (0 for a stop by either signal). Problems a user
    can cause raise ``HostError`` (or ``ConfigError``)."""
    return until_signalled(lambda: _run(Path(config_path), dry_run))


def until_signalled(body: Callable[[], int]) -> int:
    """``body()``'s exit code, where SIGINT/SIGTERM before its event loop takes the signals
    over (``stop_on_signals``), while actors load, is a clean stop: 0, no traceback."""
    previous = {sig: signal.signal(sig, _stop_startup) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return body()
    except _StoppedAtStartup as e:
        log.info("%s: stopped before the actors started", e)
        return OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(config_path: Path, dry_run: bool) -> int:
    from discord_actor.plugins import load_project

    # Every problem, the configuration's and the actors', exits 2 before the database is used.
    config, actors = load_project(config_path)
    from discord_actor.web.access import exposed_without_token

    exposed = exposed_without_token(config)
    if exposed is not None:
        raise HostError(exposed, USAGE)
    env = config.discord.token_env
    names = discord_actor_names(actors)
    token = None if dry_run else bot_token(config)
    if token is not None:
        return run_async(_serve_bot(config, actors, token))
    if dry_run:
        what = (f"discord actors ({', '.join(names)}) print their posts on the console"
                if names else "not connecting to Discord")
        log.info("dry run: %s", what)
        if config.discord.alert_channel_id:
            log.info("dry run: alerts for channel %s are printed on the console",
                     config.discord.alert_channel_id)
    elif names:
        raise HostError(
            f"no bot token: ${env} is not set, and the discord actors ({', '.join(names)}) "
            f"need one. Set {env} to the bot's token (Discord developer portal > your "
            "application > Bot > Reset Token), or run 'discord-actor run --dry-run' to print "
            "their posts on the console instead", USAGE)
    else:
        log.info("no bot token in $%s: not connecting to Discord (no /actors commands, no "
                 "alerts); the actors post on the console", env)
    return run_async(_serve(config, actors, console_alerts=dry_run))


def discord_actor_names(actors: dict[str, LoadedActor]) -> list[str]:
    """The enabled actors that post to Discord (they need a bot token, or a dry run)."""
    return [n for n, a in actors.items() if a.platform == "discord" and a.config.enabled]


def bot_token(config: Config) -> str | None:
    """The bot token from the variable named by ``discord.token_env`` (never logged)."""
    return (os.environ.get(config.discord.token_env) or "").strip() or None


def run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run``, except that tasks still pending at the end (actor code that ignored its
    cancellation) are cancelled and waited for a bounded time, not forever."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=LEFTOVER_TASKS_SECONDS))
            with contextlib.suppress(TimeoutError):
                loop.run_until_complete(
                    asyncio.wait_for(loop.shutdown_asyncgens(), LEFTOVER_TASKS_SECONDS)
                )
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# --------------------------------------------------------------------------------------------
# The database


def database_label(config: Config) -> str:
    """Which database a command uses, password redacted."""
    from discord_actor.db import resolve_url

    url = resolve_url(config.database)
    where = (redact_url(url) if url is not None
             else f"embedded PostgreSQL in {config.database.data_dir}")
    return f"{where} (schema {config.database.schema})"


async def open_for(
    config: Config, *, migrate: bool = False, for_run: bool = False, announce: bool = False,
    create: bool = True, **overrides: Any,
) -> Database:
    """``open_database`` as the runtime does it (attaching to the embedded server if it runs);
    its failures become a ``HostError`` (``NoDatabase``, of ``create=False``, is left to the
    caller to word). A short command gets a pool of two; ``run`` gets the configured one."""
    from discord_actor.db import open_database

    pool = {} if for_run else {"min_pool_size": 1, "max_pool_size": 2}
    cfg = dataclasses.replace(config.database, **(pool | overrides))
    return await _host_errors(
        open_database(cfg, migrate=migrate, announce=announce, create=create)
    )


async def _host_errors(opening: Coroutine[Any, Any, Database]) -> Database:
    """The database ``opening`` opens; its failures become a ``HostError``."""
    from discord_actor.db import DatabaseUnavailable, MigrationError

    try:
        return await opening
    except (DatabaseUnavailable, MigrationError) as e:
        raise HostError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Serving


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, grace: float,
                    cancel: Callable[[], None]) -> Iterator[None]:
    """SIGINT/SIGTERM: the first stops gracefully, the second cancels the running runs."""
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            log.info("%s: shutting down (running runs get up to %g s; send it again to "
                     "cancel them now)", name, grace)
            stop.set()
        elif signals == 2:
            log.warning("%s again: cancelling running runs now", name)
            cancel()
        else:
            log.info("%s: already shutting down", name)

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _serve(config: Config, actors: dict[str, LoadedActor], *,
                 console_alerts: bool = False) -> int:
    """Without Discord: open the database, run until a signal, shut down, close the database.

    ``console_alerts`` (the dry run): alerts meant for ``discord.alert_channel_id`` are printed
    on the console, like the posts."""
    import asyncpg

    from discord_actor.alerts import ConsoleAlerts
    from discord_actor.assembly import Assembly
    from discord_actor.db.transient import TRANSIENT_DB_ERRORS
    from discord_actor.web.access import HttpUnavailable

    stop = asyncio.Event()
    channel = config.discord.alert_channel_id
    alerts = ConsoleAlerts(channel) if console_alerts and channel else None
    assembly = Assembly(config, actors, alerts=alerts)

    def cancel() -> None:
        assembly.cancel_runs("cancelled by a second interrupt during shutdown")

    with stop_on_signals(stop, config.server.shutdown_grace_seconds, cancel):
        log.info("database: %s", database_label(config))
        database = await until_stopped(_host_errors(assembly.open()), stop)
        if database is None:
            log.info("stopped before the database was open")
            return OK
        if database.applied_migrations:
            log.info("applied migrations: %s", ", ".join(database.applied_migrations))
        try:
            async with assembly:
                await stop.wait()
        except HttpUnavailable as e:
            raise HostError(str(e), USAGE) from None
        except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as e:
            from discord_actor.db.pool import pooler_symptom

            what = pooler_symptom(e) or f"{type(e).__name__}: {e}"
            raise HostError(f"database error on {redact_url(database.url)}: {what}") from None
        log.info("stopped cleanly")
        return OK


async def _serve_bot(config: Config, actors: dict[str, LoadedActor], token: str) -> int:
    """As a Discord bot: the runtime in the bot's ActorRuntime cog, until a signal."""
    from discord_actor.bot import create_bot

    cfg = config.discord
    stop = asyncio.Event()
    bot = create_bot(config, actors)

    def cancel() -> None:
        bot.actor_runtime.cancel_runs("cancelled by a second interrupt during shutdown")

    with stop_on_signals(stop, config.server.shutdown_grace_seconds, cancel):
        log.info("connecting to Discord at %s (gateway %s) with the bot token in $%s",
                 redact_url(cfg.api_base_url), redact_url(cfg.gateway_url), cfg.token_env)
        log.info("database: %s", database_label(config))
        await serve_as_bot(bot, config, token, stop)
    log.info("stopped cleanly")
    return OK


async def serve_as_bot(
    bot: ActorBot | ShardedActorBot, config: Config, token: str, stop: asyncio.Event
) -> None:
    """Serve ``bot`` (``bot.create_bot``) with ``token`` until ``stop`` is set; what Discord,
    the database or the network refused becomes a ``HostError`` that says what to change.
    ``run`` serves Discord with it, ``sandbox`` a fake Discord."""
    import aiohttp
    import asyncpg
    import discord

    from discord_actor.bot import GatewayUnreachable, serve_bot
    from discord_actor.db import DatabaseUnavailable, MigrationError
    from discord_actor.web.access import HttpUnavailable

    cfg = config.discord
    try:
        await serve_bot(bot, token, stop)
    except discord.LoginFailure:
        raise HostError(_rejected_token(cfg.token_env), USAGE) from None
    except discord.PrivilegedIntentsRequired:
        raise HostError(_privileged(config), USAGE) from None
    except discord.ConnectionClosed as e:
        raise _gateway_closed(config, e) from None
    except HttpUnavailable as e:
        raise HostError(str(e), USAGE) from None
    except (DatabaseUnavailable, MigrationError, GatewayUnreachable) as e:
        raise HostError(str(e)) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise HostError(f"database error: {type(e).__name__}: {e}") from None
    except (discord.DiscordException, aiohttp.ClientError, OSError) as e:
        raise HostError(f"cannot use Discord at {redact_url(cfg.api_base_url)}: "
                        f"{type(e).__name__}: {e}") from None


def _rejected_token(env: str) -> str:
    return (f"Discord rejected the bot token in ${env} (401 Unauthorized): set {env} to the "
            "token from the Discord developer portal (your application > Bot > Reset Token); "
            "the client secret and the public key are not bot tokens")


def _privileged(config: Config) -> str:
    from discord_actor.config.model import PRIVILEGED_INTENTS

    asked = [i for i in config.discord.intents if i in PRIVILEGED_INTENTS] or config.discord.intents
    return (f"Discord refused the privileged intents in discord.intents ({', '.join(asked)}): "
            "enable them in the Discord developer portal (your application > Bot > Privileged "
            f"Gateway Intents) or remove them from discord.intents in {config.path}")


def _gateway_closed(config: Config, e: Any) -> HostError:
    code = getattr(e, "code", None)
    if code == 4004:
        return HostError(_rejected_token(config.discord.token_env), USAGE)
    if code == 4014:
        return HostError(_privileged(config), USAGE)
    if code in (4010, 4011):
        return HostError(f"Discord closed the gateway with {code} ({e.reason or 'sharding'}): "
                         "set discord.shard_count (and shard_ids) for a bot in this many "
                         f"servers, in {config.path}", USAGE)
    return HostError(f"Discord closed the gateway connection with code {code}: "
                     f"{e.reason or 'no reason given'}")


async def until_stopped(coro: Coroutine[Any, Any, _T], stop: asyncio.Event) -> _T | None:
    """Await ``coro`` unless ``stop`` is set first (Ctrl-C while connecting); then None."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, HostError):
        result = await task  # finished anyway before the cancellation landed: undo it
        close = getattr(result, "close", None)
        if close is not None:
            await close()
    return None
