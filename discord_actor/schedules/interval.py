"""``interval``: every ``seconds``, at a fixed rate that does not drift with run time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..enums import ScheduleKind
from .base import Schedule, ScheduleConfig, utc
from .kind import CliFlag, KeyPath, Kind, ScheduleSpec, TomlReader, checked_common

MAX_INTERVAL_SECONDS = 100 * 365 * 86400
_FLAG = CliFlag("--every", "SECONDS", "every SECONDS seconds, the first run now")


class IntervalSchedule(Schedule):
    """Fixed rate: slots are the first slot plus whole multiples of ``seconds``."""

    repeats = True

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        if config.seconds is None or not config.seconds > 0:
            raise ValueError(f"an interval schedule needs seconds > 0, got {config.seconds!r}")
        if not config.seconds <= MAX_INTERVAL_SECONDS:  # inf too: slots past year 9999 fail
            raise ValueError(f"an interval schedule needs seconds <= {MAX_INTERVAL_SECONDS} "
                             f"(100 years), got {config.seconds!r}")
        self.seconds = float(config.seconds)
        self.step = timedelta(seconds=self.seconds)
        if self.step <= timedelta(0):
            raise ValueError(f"interval seconds {config.seconds!r} is below one microsecond")

    def initial_slot(self, now: datetime) -> datetime:
        utc(now, "now")
        return self._local(now)

    def next_after(self, slot: datetime) -> datetime:
        return self._local(utc(slot, "slot") + self.step)

    def first_anchor(self, now: datetime) -> datetime:
        """Its first slot: the grid of a new task starts there."""
        return self.initial_slot(now)

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """Slots on the grid ``anchor + k * seconds`` (k >= 0) after ``after``.

        ``anchor`` is normally the task's stored next slot; without one the grid starts at
        ``after`` itself, so the first slot is ``after + seconds``. Computed without looping
        over skipped slots, so a far ``after`` costs nothing.
        """
        after_u = utc(after, "after")
        base = after_u if anchor is None else utc(anchor, "anchor")
        k = 0 if after_u < base else (after_u - base) // self.step + 1
        return [self._local(base + (k + i) * self.step) for i in range(max(count, 0))]

    def normalized(self) -> dict[str, Any]:
        return {"type": ScheduleKind.INTERVAL.value, "seconds": self.seconds}

    def missed(self, slot: datetime, now: datetime) -> tuple[datetime, int, datetime | None]:
        slot_u = utc(slot, "slot")
        k = max((utc(now, "now") - slot_u) // self.step, 0)
        latest = slot_u + k * self.step
        return self._local(latest), k + 1, self._local(latest + self.step)


@dataclass(frozen=True)
class Interval(ScheduleSpec):
    """Every ``seconds``, from ``start_at`` (default: now, so the first run is at once)."""

    seconds: float
    start_at: datetime | None = None
    timezone: str | None = None
    jitter_seconds: float = 0.0
    catch_up: str = "latest"

    def schedule_config(self, default_zone: str) -> ScheduleConfig:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise ValueError("Interval(seconds=...) needs a number")
        if self.start_at is not None and (
            not isinstance(self.start_at, datetime) or self.start_at.tzinfo is None
        ):
            raise ValueError("Interval(start_at=...) must be timezone-aware")
        return ScheduleConfig(type=ScheduleKind.INTERVAL.value,
                              timezone=self.timezone or default_zone,
                              seconds=float(self.seconds),
                              **checked_common(self.jitter_seconds, self.catch_up))

    def first_slot(self, schedule: Schedule, now: datetime) -> datetime | None:
        """``start_at`` when given, else now."""
        if self.start_at is not None:
            return self.start_at.astimezone(schedule.tz)
        return schedule.initial_slot(now)


class IntervalKind(Kind):
    name = ScheduleKind.INTERVAL.value
    schedule = IntervalSchedule
    keys = ("seconds",)
    flag = _FLAG
    spec_usage = "Interval(seconds=...)"
    listed = 1

    def read_key(self, key: str, table: dict[str, Any], path: KeyPath, reader: TomlReader,
                 zone: ZoneInfo | None) -> float | None:
        return reader.number(table, key, path, None)

    def describe(self, config: ScheduleConfig) -> str:
        return f"every {config.seconds:g} s"

    def spec_from_flag(self, value: str, zone: str | None, default_zone: str) -> Interval:
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"{_FLAG.option} {value!r} is not a number of seconds") from None
        return Interval(seconds=seconds, timezone=zone)
