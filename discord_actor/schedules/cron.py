"""``cron``: a 5-field expression with Debian cron's meaning, in the schedule's time zone.

Cron follows Debian cron through ``cronsim``: names, ranges, steps, Sunday as 0 or 7, day-of-month
and day-of-week OR-ed when both are restricted, and the DST rules (a job whose minute and hour
fields do not start with ``*`` runs right after a forward jump that skips its time, and only once
when its time repeats; any other job follows the wall clock). Note that, as in Debian, ``*/2`` in
the hour field counts as ``*`` but ``0-23/2`` counts as a fixed time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from ..enums import ScheduleKind
from .base import Schedule, ScheduleConfig, utc
from .kind import CliFlag, KeyPath, Kind, ScheduleSpec, TomlReader, checked_common

# Debian cron's shorthands, translated to the 5-field form so they follow the same DST rules as
# the expression a user would have written (@hourly has '*' in the hour: wall clock).
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or LW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 (0 and 7 are Sunday), SUN-SAT, e.g. 5L or MON#2",
}
_EPSILON = timedelta(microseconds=1)
_DAY_METHOD_MIN_DAYS = 3  # spans shorter than this are counted slot by slot


def _normalize_cron(expression: str) -> str:
    """Collapse whitespace, upper-case names and expand macros, so equal schedules hash equal."""
    text = " ".join(expression.split())
    return CRON_MACROS.get(text.lower(), text.upper())


def cron_error(expression: str) -> str | None:
    """None if ``expression`` is a valid 5-field cron expression (or a macro), else why not."""
    if not isinstance(expression, str):
        return f"a cron expression must be a string, not {type(expression).__name__}"
    text = " ".join(expression.split())
    if not text:
        return "empty cron expression (expected minute hour day-of-month month day-of-week)"
    if text.startswith("@"):
        if text.lower() in CRON_MACROS:
            return None
        if text.lower() == "@reboot":
            return "'@reboot' is not supported here: use type = \"immediate\" to run at start-up"
        return f"unknown cron macro {text!r} (known: {', '.join(CRON_MACROS)})"
    fields = text.split()
    if len(fields) != 5:
        hint = " (seconds and year fields are not supported)" if len(fields) == 6 else ""
        return (
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
            f" in {text!r}{hint}"
        )
    normalized = _normalize_cron(text)
    try:
        first = next(CronSim(normalized, datetime(2000, 1, 1, tzinfo=UTC)), None)
    except CronSimError as exc:
        return _explain(text, fields, str(exc))
    if first is None:
        return f"{text!r} never matches a date"
    return None


def _explain(text: str, fields: list[str], message: str) -> str:
    """Turn cronsim's terse 'Bad <field>' into which value is wrong and what is allowed."""
    name = message.removeprefix("Bad ").strip()
    if name not in _FIELDS:
        return f"invalid cron expression {text!r}: {message}"
    index = _FIELDS.index(name)
    value = fields[index]
    probe = ["0", "0", "*", "*", "*"]
    probe[index] = value
    try:
        CronSim(" ".join(probe).upper(), datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:
        return f"bad {name} field {value!r} in {text!r} (allowed: {_ALLOWED[name]})"
    # The field is fine alone, so it is the combination (e.g. day 30 in February).
    return f"day-of-month {value!r} never occurs in month {fields[3]!r} in {text!r}"


class CronSchedule(Schedule):
    """Debian cron semantics through cronsim, in the schedule's time zone."""

    repeats = True

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        expression = config.expression or ""
        error = cron_error(expression)
        if error is not None:
            raise ValueError(error)
        self.expression = _normalize_cron(expression)
        self._fields = self.expression.split()

    def _forward(self, after: datetime) -> Iterator[datetime]:
        """Slots strictly after ``after``, in order.

        cronsim works on the naive wall clock for fixed-time jobs, so a start in the second pass
        of a repeated hour can yield first-pass times that are earlier: they are dropped.
        """
        after_u = utc(after, "after")
        for dt in CronSim(self.expression, after_u.astimezone(self.tz)):
            dt_u = dt.astimezone(UTC)
            if dt_u > after_u:
                yield dt_u.astimezone(self.tz)

    def _latest(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """(latest slot <= now, first slot > now) by reverse iteration, without a long loop."""
        now_u = utc(now, "now")
        start = (now_u.replace(microsecond=0) + timedelta(seconds=1)).astimezone(self.tz)
        latest: datetime | None = None
        for dt in CronSim(self.expression, start, reverse=True):
            if dt.astimezone(UTC) <= now_u:
                latest = self._local(dt)
                break
        # Reverse iteration on the wall clock can land short inside a repeated hour: walk
        # forward (normally a single step, which also gives the first slot after now).
        following = next(self._forward(latest if latest is not None else now_u), None)
        while following is not None and following.astimezone(UTC) <= now_u:
            latest = following
            following = next(self._forward(following), None)
        return latest, following

    def initial_slot(self, now: datetime) -> datetime | None:
        return self.next_after(now)

    def next_after(self, slot: datetime) -> datetime | None:
        return next(self._forward(slot), None)

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """The next ``count`` cron slots after ``after``; ``anchor`` is ignored."""
        result: list[datetime] = []
        if count <= 0:
            return result
        for dt in self._forward(after):
            result.append(dt)
            if len(result) >= count:
                break
        return result

    def normalized(self) -> dict[str, Any]:
        return {"type": ScheduleKind.CRON.value, "expression": self.expression,
                "timezone": self.tz.key}

    def missed(self, slot: datetime, now: datetime) -> tuple[datetime, int, datetime | None]:
        slot_local = self._local(slot)
        latest, following = self._latest(now)
        if latest is None or latest.astimezone(UTC) <= slot_local.astimezone(UTC):
            return slot_local, 1, self.next_after(now)
        return latest, 1 + self._count(slot_local, latest), following

    # Counting missed slots. A month of a per-minute job is 43,200 slots; rather than iterate
    # them all, whole days whose UTC offset does not change contribute a fixed count.

    def _count(self, a: datetime, b: datetime) -> int:
        """Number of slots s with a < s <= b."""
        first, last = self._local(a).date(), self._local(b).date()
        if (last - first).days < _DAY_METHOD_MIN_DAYS:
            return self._count_by_iteration(a, b)
        total = self._count_by_iteration(a, self._day_edge(first + timedelta(days=1)))
        total += self._count_by_iteration(self._day_edge(last), b)
        for day in self._matching_days(first + timedelta(days=1), last - timedelta(days=1)):
            if self._offset_changes(day):
                total += self._count_by_iteration(
                    self._day_edge(day), self._day_edge(day + timedelta(days=1))
                )
            else:
                total += self._slots_per_plain_day
        return total

    def _count_by_iteration(self, a: datetime, b: datetime) -> int:
        b_u = b.astimezone(UTC)
        n = 0
        for dt in self._forward(a):
            if dt.astimezone(UTC) > b_u:
                break
            n += 1
        return n

    def _day_edge(self, day: date) -> datetime:
        """Just before local midnight starting ``day``: days are the intervals (edge, edge]."""
        return datetime.combine(day, time(), tzinfo=self.tz).astimezone(UTC) - _EPSILON

    def _offset_changes(self, day: date) -> bool:
        offsets = {
            datetime.combine(d, time(), tzinfo=self.tz).replace(fold=fold).utcoffset()
            for d in (day, day + timedelta(days=1))
            for fold in (0, 1)
        }
        return len(offsets) > 1

    def _matching_days(self, first: date, last: date) -> Iterator[date]:
        """Days in [first, last] whose day-of-month, month and day-of-week match."""
        if last < first:
            return
        dom, month, dow = self._fields[2:]
        start = datetime.combine(first, time(), tzinfo=UTC) - timedelta(seconds=1)
        for dt in CronSim(f"0 0 {dom} {month} {dow}", start):
            if dt.date() > last:
                return
            yield dt.date()

    @cached_property
    def _slots_per_plain_day(self) -> int:
        minute, hour = self._fields[:2]
        start = datetime(2001, 1, 1, tzinfo=UTC)
        end = start + timedelta(days=1)
        n = 0
        for dt in CronSim(f"{minute} {hour} * * *", start - timedelta(seconds=1)):
            if dt >= end:
                break
            n += 1
        return n


@dataclass(frozen=True)
class Cron(ScheduleSpec):
    """A 5-field cron expression (Debian semantics) in ``timezone``."""

    expression: str
    timezone: str | None = None
    jitter_seconds: float = 0.0
    catch_up: str = "latest"

    def schedule_config(self, default_zone: str) -> ScheduleConfig:
        return ScheduleConfig(type=ScheduleKind.CRON.value,
                              timezone=self.timezone or default_zone,
                              expression=self.expression,
                              **checked_common(self.jitter_seconds, self.catch_up))


class CronKind(Kind):
    name = ScheduleKind.CRON.value
    schedule = CronSchedule
    keys = ("expression",)
    flag = CliFlag("--cron", "EXPR", "a 5-field cron expression, in --timezone")
    spec_usage = "Cron(expression)"
    listed = 2

    def read_key(self, key: str, table: dict[str, Any], path: KeyPath, reader: TomlReader,
                 zone: ZoneInfo | None) -> str | None:
        expression = reader.string(table, key, path, None)
        error = cron_error(expression) if expression is not None else None
        if error and expression is not None:
            # cron_error usually quotes the expression itself; don't say it twice.
            quoted = repr(" ".join(expression.split())) in error or "cron" in error
            reader.problem((*path, key), error if quoted else
                           f"invalid cron expression {expression!r}: {error}")
        return expression

    def describe(self, config: ScheduleConfig) -> str:
        return f"cron '{config.expression}' ({config.timezone})"

    def describe_stored(self, config: ScheduleConfig) -> str:
        """As configured: the line names its zone already."""
        return self.describe(config)

    def spec_from_flag(self, value: str, zone: str | None, default_zone: str) -> Cron:
        return Cron(value, timezone=zone)
