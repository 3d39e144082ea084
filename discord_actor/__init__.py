"""discord-actor: scheduled actors inside a Discord bot, tracked in PostgreSQL.

What an actor's module needs is importable from here::

    from discord_actor import Actor, Interval, RunContext, actor, schedules_of

Names are imported on first use, so that ``import discord_actor`` (and so any of its modules)
loads nothing it does not use. Modules inside the package import each name from the module that
defines it, never from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The decorator ``actor`` has the name of its module: bound here, before anything loads that
# module as ``discord_actor.actor``, the package attribute stays the decorator.
from .actor import Actor, RunContext, actor
from .lazy import lazy_exports
from .version import __version__ as __version__

if TYPE_CHECKING:
    from .bot import schedules_of
    from .clock import FakeClock
    from .errors import DiscordActorError, ScheduleError, UnknownActor
    from .keyed import (
        InvalidKey,
        InvalidPayload,
        InvalidSchedule,
        KeyedSchedule,
        NewSchedule,
        ScheduleConflict,
        ScheduleLimitReached,
        Schedules,
    )
    from .schedules.cron import Cron
    from .schedules.interval import Interval
    from .schedules.once import Once

__all__ = [
    "Actor",
    "Cron",
    "DiscordActorError",
    "FakeClock",
    "Interval",
    "InvalidKey",
    "InvalidPayload",
    "InvalidSchedule",
    "KeyedSchedule",
    "NewSchedule",
    "Once",
    "RunContext",
    "ScheduleConflict",
    "ScheduleError",
    "ScheduleLimitReached",
    "Schedules",
    "UnknownActor",
    "actor",
    "schedules_of",
]

_WHERE = {
    "FakeClock": "discord_actor.clock",
    "DiscordActorError": "discord_actor.errors",
    "Cron": "discord_actor.keyed",
    "Interval": "discord_actor.keyed",
    "InvalidKey": "discord_actor.keyed",
    "InvalidPayload": "discord_actor.keyed",
    "InvalidSchedule": "discord_actor.keyed",
    "KeyedSchedule": "discord_actor.keyed",
    "NewSchedule": "discord_actor.keyed",
    "Once": "discord_actor.keyed",
    "ScheduleConflict": "discord_actor.keyed",
    "ScheduleError": "discord_actor.errors",
    "ScheduleLimitReached": "discord_actor.keyed",
    "Schedules": "discord_actor.keyed",
    "UnknownActor": "discord_actor.errors",
    "schedules_of": "discord_actor.bot",
}

__getattr__, __dir__ = lazy_exports(globals(), _WHERE)
