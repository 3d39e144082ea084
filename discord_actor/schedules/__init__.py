"""When actors run: interval, cron, once and immediate schedules, and catch-up after downtime.

One module per kind (``interval``, ``cron``, ``once``, ``immediate``), each with its keys,
its spec for keyed schedules, its slot maths, its stored definition and its description;
``base`` is what they share and ``registry`` the one table of kinds. The names below are
re-exported for code outside the package; modules of ``discord_actor`` import from the module
that defines a name.
"""

from __future__ import annotations

from .base import (
    CATCH_UP_POLICIES,
    TRIGGER_CATCH_UP,
    TRIGGER_SCHEDULE,
    TRIGGER_STARTUP,
    RandomSource,
    Schedule,
    ScheduleConfig,
    SlotDecision,
    decide,
    format_slot,
    jittered,
    resumed_slot,
)
from .cron import CRON_MACROS, Cron, CronKind, CronSchedule, cron_error
from .immediate import NO_SCHEDULE, ImmediateKind, ImmediateSchedule, NoSchedule, NoScheduleKind
from .interval import MAX_INTERVAL_SECONDS, Interval, IntervalKind, IntervalSchedule
from .kind import CliFlag, Kind, ScheduleSpec, TomlReader
from .once import Once, OnceKind, OnceSchedule
from .registry import (
    KINDS,
    build_schedule,
    definition,
    from_definition,
    kind_of,
    register,
    resume_slot,
    schedule_of,
    stored_schedule,
    unregister,
)

__all__ = [
    "CATCH_UP_POLICIES",
    "CRON_MACROS",
    "KINDS",
    "MAX_INTERVAL_SECONDS",
    "NO_SCHEDULE",
    "TRIGGER_CATCH_UP",
    "TRIGGER_SCHEDULE",
    "TRIGGER_STARTUP",
    "CliFlag",
    "Cron",
    "CronKind",
    "CronSchedule",
    "ImmediateKind",
    "ImmediateSchedule",
    "Interval",
    "IntervalKind",
    "IntervalSchedule",
    "Kind",
    "NoSchedule",
    "NoScheduleKind",
    "Once",
    "OnceKind",
    "OnceSchedule",
    "RandomSource",
    "Schedule",
    "ScheduleConfig",
    "ScheduleSpec",
    "SlotDecision",
    "TomlReader",
    "build_schedule",
    "cron_error",
    "decide",
    "definition",
    "format_slot",
    "from_definition",
    "jittered",
    "kind_of",
    "register",
    "resume_slot",
    "resumed_slot",
    "schedule_of",
    "stored_schedule",
    "unregister",
]
