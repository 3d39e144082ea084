"""The ``discord-actor`` command line: its parser, wired from one module per command group,
and one exit code per outcome.

Exit codes: 0 success (``run`` stopped by SIGINT or SIGTERM, even during start-up, is a clean
stop), 1 runtime failure (database unreachable, actor not in the database yet, a paused actor
triggered...), 2 usage or configuration error, 3 no database yet (a command that reads or
changes the database found none, and creates none: only ``run``, ``migrate`` and ``schedules
add`` create it), 130 another command interrupted by Ctrl-C. Anything a user can cause ends
with a message, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from discord_actor.cli import (
    actions,
    database,
    output,
    project,
    reads,
    run,
    sandbox,
    schedules,
)
from discord_actor.cli.common import Commands
from discord_actor.config.model import CONFIG_FILE, ConfigError
from discord_actor.hosting import FAILURE, USAGE, HostError
from discord_actor.logs import (
    FORMATS,
    LEVELS,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    LogSettingError,
    configure_logging,
    resolve_format,
    resolve_level,
)
from discord_actor.version import __version__

INTERRUPTED = 130  # Ctrl-C during a command (0, 1 and 2: hosting's; 3: common.NO_DATABASE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (the console script exits with it)."""
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    try:
        _configure_logging(args)
        code: int = args.handler(args)
        return code
    except LogSettingError as e:
        output.error(str(e))
        return USAGE
    except HostError as e:
        output.error(str(e))
        return e.code
    except ConfigError as e:
        output.problems(e.problems)
        return USAGE
    except KeyboardInterrupt:
        output.interrupted()
        return INTERRUPTED
    except BrokenPipeError:
        # Output piped into a command that exited early (``status | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILURE


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options; each command group adds its own (in the order
    ``--help`` lists them)."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="discord-actor", parents=[common],
        description="Scheduled actors inside a Discord bot, every run tracked in PostgreSQL.",
        epilog="Exit codes: 0 success ('run' stopped by SIGINT/SIGTERM too), 1 runtime failure "
        "(e.g. database unreachable), 2 usage or configuration error, 3 no database yet "
        "('discord-actor run' or 'migrate' creates it), 130 another command interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = Commands(
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True), common
    )
    project.add_commands(commands)  # init, check
    run.add_commands(commands)  # run
    sandbox.add_commands(commands)  # sandbox
    reads.add_commands(commands)  # status, history, next
    actions.add_commands(commands)  # pause, resume, trigger
    database.add_commands(commands)  # migrate, prune
    schedules.add_commands(commands)  # schedules list, add, remove
    project.add_config_commands(commands)  # config show
    return parser


def _common_options() -> argparse.ArgumentParser:
    """The options every command takes: --config and logging. Accepted before and after the
    command: both parsers know them, and the command's value (only set if given) wins."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS,
        help=f"configuration file (default: ./{CONFIG_FILE})",
    )
    logs = common.add_argument_group("logging")
    logs.add_argument(
        "--log-level", choices=LEVELS, metavar="LEVEL", default=argparse.SUPPRESS,
        help=f"{', '.join(LEVELS)} (default: ${LOG_LEVEL_ENV}, else info for run and warning "
        "for the other commands)",
    )
    logs.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                      help="more detail (one level per -v)")
    logs.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS,
                      help="less detail (one level per -q)")
    logs.add_argument(
        "--log-format", choices=FORMATS, metavar="FORMAT", default=argparse.SUPPRESS,
        help=f"text, or json: one object per line (default: ${LOG_FORMAT_ENV}, else text)",
    )
    return common


def _configure_logging(args: argparse.Namespace) -> None:
    """The log set-up every command shares: ``run`` tells what it does at info; the other
    commands print their answers and log only warnings unless asked for more."""
    default = logging.INFO if args.handler is run.cmd_run else logging.WARNING
    level = resolve_level(getattr(args, "log_level", None), getattr(args, "verbose", 0),
                          getattr(args, "quiet", 0), default)
    configure_logging(level, resolve_format(getattr(args, "log_format", None)))
