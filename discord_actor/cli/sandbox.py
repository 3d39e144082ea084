"""``discord-actor sandbox``: the bot against a fake Discord, commands typed in the terminal
(``discord_actor.sandbox``)."""

from __future__ import annotations

import argparse

from discord_actor.cli.common import Commands
from discord_actor.config.model import CONFIG_FILE


def add_commands(commands: Commands) -> None:
    commands.add("sandbox", cmd_sandbox, "try the bot without a token: a local fake Discord "
                 "that prints what the bot posts; type slash commands such as "
                 "'/remind in:10s text:stand up' (-v shows the runtime's log)")


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Until end of input, 'quit' or Ctrl-C; 0 for any of them."""
    from discord_actor.sandbox import run_sandbox

    return run_sandbox(getattr(args, "config", CONFIG_FILE))
