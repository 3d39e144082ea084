"""discord-actor: scheduled actors inside a Discord bot, tracked in PostgreSQL."""

from .actor import Actor, RunContext, actor
from .clock import FakeClock
from .keyed import (
    InvalidKey,
    InvalidPayload,
    InvalidSchedule,
    KeyedSchedule,
    NewSchedule,
    ScheduleConflict,
    ScheduleError,
    ScheduleLimitReached,
    Schedules,
    UnknownActor,
    schedules_of,
)
from .schedules.cron import Cron
from .schedules.interval import Interval
from .schedules.once import Once

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
