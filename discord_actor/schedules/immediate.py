"""``immediate``: one slot each time a server starts; and ``none``, no slot at all, the kind of
an actor without ``[actors.schedule]`` (it runs only by its keyed schedules and triggers).

Neither has slots a clock can list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..enums import ScheduleKind
from .base import NoClockSlots, ScheduleConfig, utc
from .kind import Kind

NO_SCHEDULE = "none"  # the type of an actor without [actors.schedule]


class ImmediateSchedule(NoClockSlots):
    """One slot each time the server starts, at the start."""

    on_every_start = True

    def initial_slot(self, now: datetime) -> datetime:
        utc(now, "now")
        return self._local(now)

    def normalized(self) -> dict[str, Any]:
        return {"type": ScheduleKind.IMMEDIATE.value}


class NoSchedule(NoClockSlots):
    """No slots at all: an actor without ``[actors.schedule]`` runs only through its keyed
    schedules and manual triggers."""

    def initial_slot(self, now: datetime) -> None:
        return None

    def normalized(self) -> dict[str, Any]:
        return {"type": NO_SCHEDULE}


class ImmediateKind(Kind):
    name = ScheduleKind.IMMEDIATE.value
    schedule = ImmediateSchedule

    def describe(self, config: ScheduleConfig) -> str:
        return "once at every start (immediate)"


class NoScheduleKind(Kind):
    name = NO_SCHEDULE
    schedule = NoSchedule
    in_toml = False

    def describe(self, config: ScheduleConfig) -> str:
        return "keyed schedules and triggers only"
