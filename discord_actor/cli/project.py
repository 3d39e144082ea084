"""The project's commands: ``init`` (a starter project), ``check`` (the configuration and the
actors validated, their next slots) and ``config show`` (the configuration as resolved)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from discord_actor.cli import output
from discord_actor.cli.common import (
    CliError,
    Commands,
    project_config,
    stored_tasks,
)
from discord_actor.config.model import CONFIG_FILE
from discord_actor.config.starter import write_starter
from discord_actor.hosting import FAILURE, OK, USAGE, bot_token, discord_actor_names, run_async
from discord_actor.schedules.base import predict
from discord_actor.schedules.registry import build_schedule

if TYPE_CHECKING:
    from discord_actor.plugins import LoadedActor

CHECK_SLOTS = 3  # next slots shown per actor by ``check``


def add_commands(commands: Commands) -> None:
    """``init`` and ``check``."""
    p = commands.add("init", cmd_init, "write a starter actor_server.toml and actors/hello.py")
    p.add_argument("directory", nargs="?", metavar="DIR",
                   help="where to write them (default: the directory of --config, else the "
                   "current directory)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")

    p = commands.add("check", cmd_check,
                     "validate the configuration and the actors; show next slots")
    p.add_argument("--setup", action="store_true",
                   help="also run each enabled actor's setup() and teardown() hooks; exit 1 if "
                   "one fails")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object: the actors with their next slots (and, with "
                   "--setup, the hooks that failed)")


def add_config_commands(commands: Commands) -> None:
    """``config show``."""
    config = commands.group("config", "configuration commands", "configuration commands",
                            dest="config_command")
    config.add("show", cmd_config_show,
               "print the resolved configuration as TOML, secrets redacted")


def cmd_init(args: argparse.Namespace) -> int:
    config = getattr(args, "config", None)
    if args.directory is not None:
        directory = Path(args.directory)
    elif config is not None:
        if Path(config).name != CONFIG_FILE:
            raise CliError(f"init writes {CONFIG_FILE}, not {Path(config).name}: "
                           "name the directory instead (discord-actor init DIR)", USAGE)
        directory = Path(config).parent
    else:
        directory = Path(".")
    try:
        written = write_starter(directory, force=args.force)
    except FileExistsError as e:
        # write_starter's message is args[0]; str() would show "[Errno None] None: ..."
        raise CliError(e.args[0] if len(e.args) == 1 else str(e), USAGE) from None
    except OSError as e:
        raise CliError(f"cannot write into {directory}: {e.strerror or e}") from None
    output.written(written, directory)
    return OK


def cmd_config_show(args: argparse.Namespace) -> int:
    output.configuration(project_config(args))
    return OK


def cmd_check(args: argparse.Namespace) -> int:
    from discord_actor.plugins import load_project

    config, actors = load_project(getattr(args, "config", CONFIG_FILE))
    now = datetime.now(UTC)
    stored = stored_tasks(config)
    found = []
    for a in config.actors:
        schedule = build_schedule(a.schedule)
        task = stored.get(a.name)
        found.append(output.CheckedActor(a, actors[a.name].platform, schedule,
                                         predict(schedule, task, now, CHECK_SLOTS), task))
        if not args.json:
            output.checked_actor(found[-1])
    names = discord_actor_names(actors)
    if names and bot_token(config) is None:
        output.needs_token(config.discord.token_env, names)
    failures = run_async(_try_hooks(actors)) if args.setup else None
    output.checked(config, found, failures, as_json=args.json)
    return FAILURE if failures else OK


async def _try_hooks(actors: dict[str, LoadedActor]) -> list[str]:
    """Run each enabled actor's setup() and then teardown(), as a server does around its runs;
    what fails is returned as one line per hook."""
    problems: list[str] = []
    for name, loaded in actors.items():
        if not loaded.config.enabled:
            continue
        for hook in ("setup", "teardown"):
            try:
                await getattr(loaded.instance, hook)()
            except Exception as e:
                problems.append(f"actor {name}: {hook}() failed: {type(e).__name__}: {e}")
                break  # a server does not tear down an actor whose setup() failed
    return problems
