"""``discord-actor run``: the actors served until SIGINT or SIGTERM (``hosting.run_server``)."""

from __future__ import annotations

import argparse

from discord_actor.cli.common import Commands
from discord_actor.config.model import CONFIG_FILE
from discord_actor.hosting import run_server


def add_commands(commands: Commands) -> None:
    p = commands.add("run", cmd_run, "run the actors until Ctrl-C or SIGTERM (with a bot token: "
                     "as a Discord bot)")
    p.add_argument("--dry-run", action="store_true",
                   help="do not connect to Discord: discord actors print their posts on the "
                   "console")


def cmd_run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; 0 for a stop by either signal."""
    return run_server(getattr(args, "config", CONFIG_FILE), dry_run=args.dry_run)
