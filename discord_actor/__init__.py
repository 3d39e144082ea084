"""discord-actor: scheduled actors inside a Discord bot, tracked in PostgreSQL."""

from typing import TYPE_CHECKING, Any

from .actor import Actor, RunContext, actor
from .clock import FakeClock
from .keyed import (
    Cron,
    Interval,
    InvalidKey,
    InvalidPayload,
    InvalidSchedule,
    KeyedSchedule,
    NewSchedule,
    Once,
    ScheduleConflict,
    ScheduleError,
    ScheduleLimitReached,
    Schedules,
    UnknownActor,
)

if TYPE_CHECKING:
    from .bot import schedules_of

__all__ = [
    "Actor",
    "Cron",
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
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # schedules_of lives with the cog it looks for; imported on first use, so that importing
    # the package does not load discord.py.
    if name == "schedules_of":
        from .bot import schedules_of

        return schedules_of
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
