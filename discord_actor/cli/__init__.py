"""The ``discord-actor`` command; the console script runs :func:`main`.

One module per command group: ``project`` (init, check, config show), ``run``, ``sandbox``,
``reads`` (status, history, next), ``actions`` (pause, resume, trigger), ``schedules``
(schedules list, add, remove) and ``database`` (migrate, prune). ``main`` wires them into one
parser, ``common`` is what they share and ``output`` is everything they print. They parse and
print: what the commands do is in ``operations`` (the operator commands), ``hosting``
(``run``), ``sandbox`` (``sandbox``, which prints through the fake Discord's console) and
``logs`` (the log set-up every command shares).

Heavy modules (asyncpg, discord.py, the runtime, the plugins) are imported by the commands that
need them, so that ``init``, ``config show``, ``--help``, ``--version`` and usage errors answer
without loading them. The names below that live elsewhere are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .main import INTERRUPTED, build_parser, main

if TYPE_CHECKING:
    from ..operations import format_duration
    from ..schedules.base import predicted_slots
    from .actions import cmd_pause, cmd_resume, cmd_trigger
    from .common import NO_DATABASE, CliError
    from .database import cmd_migrate, cmd_prune
    from .project import cmd_check, cmd_config_show, cmd_init
    from .reads import cmd_history, cmd_next, cmd_status
    from .run import cmd_run
    from .schedules import cmd_schedules_add, cmd_schedules_list, cmd_schedules_remove

__all__ = [
    "INTERRUPTED",
    "NO_DATABASE",
    "CliError",
    "build_parser",
    "cmd_check",
    "cmd_config_show",
    "cmd_history",
    "cmd_init",
    "cmd_migrate",
    "cmd_next",
    "cmd_pause",
    "cmd_prune",
    "cmd_resume",
    "cmd_run",
    "cmd_schedules_add",
    "cmd_schedules_list",
    "cmd_schedules_remove",
    "cmd_status",
    "cmd_trigger",
    "format_duration",
    "main",
    "predicted_slots",
]

# Where each name is defined (``_schedule_spec``: for the tests that import it from here).
_WHERE = {
    "CliError": "discord_actor.cli.common",
    "NO_DATABASE": "discord_actor.cli.common",
    "_schedule_spec": "discord_actor.cli.schedules",
    "cmd_check": "discord_actor.cli.project",
    "cmd_config_show": "discord_actor.cli.project",
    "cmd_history": "discord_actor.cli.reads",
    "cmd_init": "discord_actor.cli.project",
    "cmd_migrate": "discord_actor.cli.database",
    "cmd_next": "discord_actor.cli.reads",
    "cmd_pause": "discord_actor.cli.actions",
    "cmd_prune": "discord_actor.cli.database",
    "cmd_resume": "discord_actor.cli.actions",
    "cmd_run": "discord_actor.cli.run",
    "cmd_schedules_add": "discord_actor.cli.schedules",
    "cmd_schedules_list": "discord_actor.cli.schedules",
    "cmd_schedules_remove": "discord_actor.cli.schedules",
    "cmd_status": "discord_actor.cli.reads",
    "cmd_trigger": "discord_actor.cli.actions",
    "format_duration": "discord_actor.operations",
    "predicted_slots": "discord_actor.schedules.base",
}

__getattr__, __dir__ = lazy_exports(globals(), _WHERE)
