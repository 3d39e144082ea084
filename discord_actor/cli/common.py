"""What every command group shares: adding a command, the values its options take, the
configuration and the actor a command names, and the database's operations with their
refusals worded for the command line.

Heavy modules (asyncpg, the operations layer) are imported by the functions that open the
database, so that importing this module costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from discord_actor.cli import output
from discord_actor.config.model import CONFIG_FILE, ActorConfig, Config
from discord_actor.config.reader import load_config
from discord_actor.config.redaction import redact_url
from discord_actor.config.values import closest
from discord_actor.hosting import USAGE, HostError, database_label, open_for, run_async

if TYPE_CHECKING:
    from discord_actor.db.records import Operator
    from discord_actor.operations import Operations, ScheduleRefused

NEXT_DB_TIMEOUT = 3.0  # seconds ``next`` waits for the database before using the schedule alone

# The exit code of a command that needs the database and found none: it creates none either
# (only ``run``, ``migrate`` and ``schedules add`` do), so that the first ``run`` still says it
# created a new, empty database.
NO_DATABASE = 3
HOW_TO_CREATE = ("'discord-actor run' creates it as it starts the actors, 'discord-actor "
                 "migrate' creates it without running them")

# A failure to report as one message and an exit code (no traceback): the same for every
# command as for ``run``.
CliError = HostError


class NoDatabaseYet(CliError):
    """No database to open, and none created (exit code ``NO_DATABASE``); ``reason`` says what
    is missing, the message adds how to create it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; {HOW_TO_CREATE}", NO_DATABASE)
        self.reason = reason


Handler = Callable[[argparse.Namespace], int]
_R = TypeVar("_R")


class Commands:
    """Where a command group adds its commands; each takes the options every command takes
    (``--config``, logging), before or after its name."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def add(self, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        """The command ``name``, which ``handler`` runs; returns its parser for its options."""
        p = self._sub.add_parser(name, parents=[self._common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def group(self, name: str, help: str, description: str, dest: str) -> Commands:
        """A command with commands of its own (``schedules list``); ``dest``: where argparse
        keeps which one was given."""
        parser = self._sub.add_parser(name, parents=[self._common], help=help,
                                      description=description)
        sub = parser.add_subparsers(dest=dest, metavar="COMMAND", required=True)
        return Commands(sub, self._common)


# --------------------------------------------------------------------------------------------
# Option values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of days >= 0, not {text}")
    return value


def iso_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (e.g. 2026-03-29T09:00:00+02:00)"
        ) from None


# --------------------------------------------------------------------------------------------
# The configuration


def project_config(args: argparse.Namespace) -> Config:
    """The configuration ``--config`` names (default: ./actor_server.toml)."""
    return load_config(getattr(args, "config", CONFIG_FILE))


def configured_actor(config: Config, name: str) -> ActorConfig:
    """The configured actor ``name``; an unknown name is a usage error with a suggestion."""
    try:
        return config.actor(name)
    except KeyError:
        raise CliError(_unknown_actor(config, name), USAGE) from None


def _unknown_actor(config: Config, name: str) -> str:
    names = [a.name for a in config.actors]
    match = closest(name, names)
    hint = f"; did you mean {match!r}?" if match else ""
    known = ", ".join(names) if names else "none"
    return f"unknown actor {name!r} in {config.path}{hint} (configured actors: {known})"


# --------------------------------------------------------------------------------------------
# The database


@contextlib.asynccontextmanager
async def open_operations(
    config: Config, *, migrate: bool = False, actor: str | None = None, **overrides: Any
) -> AsyncIterator[Operations]:
    """The operations layer on this configuration's database (``migrate``: its tables created
    or upgraded first; without it nothing is created: no database is exit code 3); its refusals
    become messages that name the configuration and the command to run instead, and a database
    error one message naming the database. ``actor``: the one the command names; if it is not
    configured, nothing is created for it, and without a database it is the unknown actor it
    is (exit code 2), not a missing database."""
    import asyncpg

    from discord_actor.db import NoDatabase
    from discord_actor.db.pool import pooler_symptom
    from discord_actor.operations import (
        ActorDisabled,
        ActorPaused,
        ActorRemoved,
        NotStarted,
        OperationError,
        Operations,
        RunNotFound,
        ScheduleNotFound,
        ScheduleRefused,
        UnknownActor,
    )

    name = None if actor is None else actor.strip()
    unknown = name is not None and name not in {a.name for a in config.actors}
    create = migrate and not unknown
    try:
        db = await open_for(config, migrate=create, create=create, **overrides)
    except NoDatabase as e:
        if unknown:
            raise CliError(_unknown_actor(config, str(name)), USAGE) from None
        raise NoDatabaseYet(str(e)) from None
    try:
        ops = await Operations.on_database(db, config)
        try:
            yield ops
        except UnknownActor as e:
            raise CliError(_unknown_actor(config, e.actor), USAGE) from None
        except NotStarted as e:
            raise CliError(
                f"actor {e.actor!r} has no task in the database yet ({database_label(config)}): "
                "start 'discord-actor run' once first"
            ) from None
        except ActorRemoved as e:
            raise CliError(f"actor {e.actor!r} is no longer in {config.path}; its history is "
                           f"kept (discord-actor history {e.actor})") from None
        except ActorPaused as e:
            raise CliError(f"{e.actor} is paused ({e.reason}); resume it first with: "
                           f"discord-actor resume {e.actor}") from None
        except ActorDisabled as e:
            raise CliError(f"{e.actor} is disabled (enabled = false in {config.path}): "
                           "a server does not run it") from None
        except RunNotFound as e:
            raise CliError(f"no run with id {e.run_id} in {database_label(config)} (it may "
                           "have been pruned; 'discord-actor history' lists the runs)") from None
        except ScheduleNotFound as e:
            raise CliError(f"{e} (it ran, was removed, or never was; 'discord-actor schedules "
                           f"list {e.actor}' lists the pending ones)") from None
        except ScheduleRefused as e:
            raise CliError(_refused(e), USAGE) from None
        except OperationError as e:
            raise CliError(str(e)) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        what = pooler_symptom(e) or f"{type(e).__name__}: {e}"
        raise CliError(f"database error on {redact_url(db.url)}: {what}") from None
    finally:
        await db.close()


def with_operations(
    config: Config, call: Callable[[Operations], Awaitable[_R]], **options: Any
) -> _R:
    """What ``call`` answers on this configuration's operations (:func:`open_operations`, with
    ``options``), from opening the database to closing it."""

    async def called() -> _R:
        async with open_operations(config, **options) as ops:
            return await call(ops)

    return run_async(called())


def _refused(refused: ScheduleRefused) -> str:
    """The keyed schedules API's refusal in the words of the command line."""
    from discord_actor.keyed import ScheduleConflict

    error = refused.error
    if isinstance(error, ScheduleConflict):
        keys = ", ".join(repr(k) for k in error.keys)
        return (f"actor {refused.actor!r}: key {keys} is already pending with another "
                "schedule, payload, channel or owner; add --replace to change it, or remove it "
                f"first (discord-actor schedules remove {refused.actor} KEY)")
    text = str(error)
    return text if f"actor {refused.actor!r}" in text else f"actor {refused.actor!r}: {text}"


def stored_tasks(config: Config, actor: str | None = None) -> dict[str, Any]:
    """The task rows by actor name (every actor's, or just ``actor``'s), to predict slots
    from; none when no database exists yet (none is created), and an unreachable one is noted,
    not fatal."""
    timeout = min(config.database.connect_timeout_seconds, NEXT_DB_TIMEOUT)
    try:
        return with_operations(config, lambda ops: ops.stored_tasks(actor),
                               connect_timeout_seconds=timeout)
    except NoDatabaseYet as e:
        output.computed_without_database(e.reason)
    except HostError as e:
        output.without_stored_slot(e)
    return {}


def operator() -> Operator:
    """The CLI's operator: the OS user, on this host."""
    import getpass
    import socket

    from discord_actor.db.records import Operator

    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container with an unnamed uid)
        who = f"uid {os.getuid()}"
    return Operator(who, f"CLI on host {socket.gethostname()}")
