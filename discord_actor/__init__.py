"""discord-actor: scheduled actors inside a Discord bot, tracked in PostgreSQL."""

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
    schedules_of,
)

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
