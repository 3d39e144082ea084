"""The words the runtime stores in PostgreSQL and prints, as ``StrEnum`` s.

They compare equal to the strings in the database (``RunStatus.FAILED == "failed"``), so rows
read back need no conversion, and a typo in code is a mypy error instead of a silent miss.
The migrations' CHECK constraints list the same values.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """How a run attempt ended (``running`` until it has)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    SKIPPED = "skipped"


class Trigger(StrEnum):
    """Why a run attempt happened."""

    SCHEDULE = "schedule"  # its slot came
    STARTUP = "startup"  # an ``immediate`` actor, once per start
    MANUAL = "manual"  # ``discord-actor trigger``, ``/actors trigger`` or the API
    RETRY = "retry"  # a failed attempt's next try of the same slot
    CATCH_UP = "catch_up"  # a slot missed while no process ran


class ScheduleKind(StrEnum):
    """The built-in schedule kinds (``[actors.schedule] type``); the registry may hold more."""

    INTERVAL = "interval"
    CRON = "cron"
    ONCE = "once"
    IMMEDIATE = "immediate"
