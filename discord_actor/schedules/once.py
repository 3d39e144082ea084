"""``once``: one slot at ``at``; after it has run there is no next one."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import timezone as fixed_offset
from typing import Any
from zoneinfo import ZoneInfo

from ..enums import ScheduleKind
from .base import Schedule, ScheduleConfig, format_slot, utc, zone_info
from .kind import CliFlag, KeyPath, Kind, ScheduleSpec, TomlReader, checked_common

_AT_EXAMPLE = "e.g. 2026-12-01T09:00:00+01:00"
_FLAG = CliFlag("--at", "ISO8601", "once, at this time (without an offset: read in "
                "--timezone, else server.timezone)")


class OnceSchedule(Schedule):
    """One slot at ``at``; after it has run there is no next one."""

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        if config.at is None:
            raise ValueError("a once schedule needs 'at'")
        at = config.at if config.at.tzinfo is not None else config.at.replace(tzinfo=self.tz)
        try:
            self.at = self._local(at)
        except OverflowError:  # within a day of year 1 or 9999: not a time in every zone
            raise ValueError(f"a once schedule's 'at' {config.at.isoformat()} is out of "
                             "range") from None

    def initial_slot(self, now: datetime) -> datetime:
        """``at`` even when it is past: whether it still runs is :func:`decide`'s call."""
        return self.at

    def next_after(self, slot: datetime) -> None:
        return None

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """``[at]`` if it is after ``after`` (and count > 0), else nothing."""
        return [self.at] if count > 0 and self.at.astimezone(UTC) > utc(after, "after") else []

    def normalized(self) -> dict[str, Any]:
        return {"type": ScheduleKind.ONCE.value, "at": self.at.astimezone(UTC).isoformat()}


@dataclass(frozen=True)
class Once(ScheduleSpec):
    """One run at ``at`` (timezone-aware, or naive in ``timezone``). Once it has run, or used
    up its retries, it leaves the pending schedules and keeps its run history."""

    at: datetime
    timezone: str | None = None  # shown in; default: the aware ``at``'s own, else server's
    jitter_seconds: float = 0.0
    catch_up: str = "latest"  # if the server was down at ``at``: run late, or "skip"

    def schedule_config(self, default_zone: str) -> ScheduleConfig:
        if not isinstance(self.at, datetime):
            raise ValueError(f"Once(at=...) needs a datetime, not {self.at!r}")
        at, zone = self.at, self.timezone or getattr(self.at.tzinfo, "key", None)
        if at.tzinfo is None:
            if self.timezone is None:
                raise ValueError(
                    f"Once(at={at.isoformat()}) is a naive time: give it a timezone"
                    " (datetime(..., tzinfo=...)) or Once(at=..., timezone='Europe/Berlin')"
                )
            at = at.replace(tzinfo=zone_info(self.timezone))
        return ScheduleConfig(type=ScheduleKind.ONCE.value, timezone=zone or default_zone,
                              at=at, **checked_common(self.jitter_seconds, self.catch_up))


class OnceKind(Kind):
    name = ScheduleKind.ONCE.value
    schedule = OnceSchedule
    keys = ("at",)
    flag = _FLAG
    spec_usage = "Once(at=...)"
    listed = 0

    def read_key(self, key: str, table: dict[str, Any], path: KeyPath, reader: TomlReader,
                 zone: ZoneInfo | None) -> datetime | None:
        return _moment(table[key], (*path, key), zone, reader)

    def from_definition(self, data: Mapping[str, Any], common: ScheduleConfig) -> ScheduleConfig:
        at = data.get("at")
        return dataclasses.replace(common, at=None if at is None else datetime.fromisoformat(at))

    def describe(self, config: ScheduleConfig) -> str:
        return f"once at {format_slot(config.at)}" if config.at is not None else "once"

    def describe_stored(self, config: ScheduleConfig) -> str:
        """``at`` is stored in UTC: shown in its zone."""
        if config.at is not None:
            config = dataclasses.replace(config, at=config.at.astimezone(
                zone_info(config.timezone)))
        return super().describe_stored(config)

    def spec_from_flag(self, value: str, zone: str | None, default_zone: str) -> Once:
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{_FLAG.option} {value!r} is not an ISO 8601 date-time (e.g. "
                             "2026-03-29T09:00:00+02:00, or 2026-03-29T09:00 in --timezone)"
                             ) from None
        if at.tzinfo is None and zone is None:
            zone = default_zone  # a naive time is read in server.timezone
        return Once(at=at, timezone=zone)


def _moment(value: Any, path: KeyPath, tz: ZoneInfo | None, reader: TomlReader) -> datetime | None:
    """A once-schedule's ``at``: an offset date-time, or a local one read in ``tz``.

    A local time is stored with the UTC offset it has in ``tz`` (fixed offsets compare and
    dump reliably): at a fall-back it is the first of the two, and in a spring-forward gap
    it keeps the offset from before the jump (02:30 in a 02:00->03:00 gap is 03:30).
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            reader.problem(path, f"{value!r} is not an ISO 8601 date-time ({_AT_EXAMPLE})")
            return None
    if not isinstance(value, datetime):
        reader.problem(path, f"must be a date and time ({_AT_EXAMPLE}), "
                       f"not {reader.describe(value, path)}")
        return None
    if value.tzinfo is None:
        if tz is None:
            return None  # the time zone's own problem is already reported
        offset = value.replace(tzinfo=tz).utcoffset()
        assert offset is not None
        return value.replace(tzinfo=fixed_offset(offset))
    return value
