"""When actors run: interval, cron, once and immediate schedules, and catch-up after downtime.

Slots are instants. They are returned timezone-aware in the schedule's zone, but all arithmetic
and comparisons here go through UTC: Python compares and subtracts two datetimes that share a
``tzinfo`` by wall clock, ignoring ``fold`` and the UTC offset, which is wrong across DST changes.
Callers comparing slots should do the same (or compare against a UTC ``now``).

Cron follows Debian cron through ``cronsim``: names, ranges, steps, Sunday as 0 or 7, day-of-month
and day-of-week OR-ed when both are restricted, and the DST rules (a job whose minute and hour
fields do not start with ``*`` runs right after a forward jump that skips its time, and only once
when its time repeats; any other job follows the wall clock). Note that, as in Debian, ``*/2`` in
the hour field counts as ``*`` but ``0-23/2`` counts as a fixed time.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

if TYPE_CHECKING:
    from discord_actor.config import ScheduleConfig

__all__ = [
    "CRON_MACROS",
    "TRIGGER_CATCH_UP",
    "TRIGGER_SCHEDULE",
    "TRIGGER_STARTUP",
    "CronSchedule",
    "ImmediateSchedule",
    "IntervalSchedule",
    "NoSchedule",
    "OnceSchedule",
    "RandomSource",
    "Schedule",
    "SlotDecision",
    "build_schedule",
    "cron_error",
    "decide",
    "definition",
    "format_slot",
    "from_definition",
    "jittered",
    "schedule_of",
    "stored_schedule",
]

TRIGGER_SCHEDULE = "schedule"
TRIGGER_STARTUP = "startup"
TRIGGER_CATCH_UP = "catch_up"

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


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Berlin')"
        ) from None


def _utc(dt: datetime, what: str = "datetime") -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {dt.isoformat()}")
    return dt.astimezone(UTC)


def format_slot(dt: datetime) -> str:
    """ISO 8601 with its UTC offset at seconds precision, e.g. ``2026-03-29T03:00:00+02:00``."""
    _utc(dt, "slot")
    return dt.isoformat(timespec="seconds")


class RandomSource(Protocol):
    """Anything with ``random()`` in [0, 1): the ``random`` module, or a seeded one in tests."""

    def random(self) -> float: ...


def jittered(slot: datetime, jitter_seconds: float, rng: RandomSource = random) -> datetime:
    """``slot`` plus a uniform delay in [0, jitter_seconds), so many actors do not start at once."""
    if jitter_seconds <= 0:
        return slot
    delay = timedelta(microseconds=int(rng.random() * jitter_seconds * 1_000_000))
    return (_utc(slot, "slot") + delay).astimezone(slot.tzinfo)


@dataclass(frozen=True)
class SlotDecision:
    """What to do with a due slot; ``next_run`` is what the task's next slot becomes."""

    action: Literal["run", "skip"]
    scheduled_for: datetime
    trigger: str
    skipped: int
    next_run: datetime | None


class Schedule(ABC):
    """Computes slots for one actor. Built by :func:`build_schedule`."""

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.tz = _zone(config.timezone)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.normalized()!r})"

    def _local(self, dt: datetime) -> datetime:
        return dt.astimezone(UTC).astimezone(self.tz)

    @abstractmethod
    def initial_slot(self, now: datetime) -> datetime | None:
        """First slot of a new task or one whose schedule changed."""

    @abstractmethod
    def next_after(self, slot: datetime) -> datetime | None:
        """The next slot strictly after ``slot``, or None if there is none."""

    @abstractmethod
    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """The next ``count`` slots strictly after ``after`` (``anchor``: see subclasses)."""

    @abstractmethod
    def normalized(self) -> dict[str, Any]:
        """What decides *when* slots fall, as JSON-able data.

        ``jitter_seconds`` and ``catch_up`` are left out on purpose: changing them must not
        reset an interval's phase or re-arm a ``once`` task that already ran.
        """

    @cached_property
    def canonical(self) -> str:
        """The canonical JSON of :meth:`normalized`, as stored on the task row (computed once:
        actors with equal schedules share one Schedule)."""
        return json.dumps(self.normalized(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 of :attr:`canonical`; a change means a new schedule."""
        return self._hash

    @cached_property
    def _hash(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()

    def _missed(self, slot: datetime, now: datetime) -> tuple[datetime, int, datetime | None]:
        """(latest slot <= now, slots missed from ``slot`` through it, first slot > now)."""
        return self._local(slot), 1, self.next_after(now)


MAX_INTERVAL_SECONDS = 100 * 365 * 86400


class IntervalSchedule(Schedule):
    """Fixed rate: slots are the first slot plus whole multiples of ``seconds``."""

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
        _utc(now, "now")
        return self._local(now)

    def next_after(self, slot: datetime) -> datetime:
        return self._local(_utc(slot, "slot") + self.step)

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """Slots on the grid ``anchor + k * seconds`` (k >= 0) after ``after``.

        ``anchor`` is normally the task's stored next slot; without one the grid starts at
        ``after`` itself, so the first slot is ``after + seconds``. Computed without looping
        over skipped slots, so a far ``after`` costs nothing.
        """
        after_u = _utc(after, "after")
        base = after_u if anchor is None else _utc(anchor, "anchor")
        k = 0 if after_u < base else (after_u - base) // self.step + 1
        return [self._local(base + (k + i) * self.step) for i in range(max(count, 0))]

    def normalized(self) -> dict[str, Any]:
        return {"type": "interval", "seconds": self.seconds}

    def _missed(self, slot: datetime, now: datetime) -> tuple[datetime, int, datetime | None]:
        slot_u = _utc(slot, "slot")
        k = max((_utc(now, "now") - slot_u) // self.step, 0)
        latest = slot_u + k * self.step
        return self._local(latest), k + 1, self._local(latest + self.step)


class CronSchedule(Schedule):
    """Debian cron semantics through cronsim, in the schedule's time zone."""

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
        after_u = _utc(after, "after")
        for dt in CronSim(self.expression, after_u.astimezone(self.tz)):
            dt_u = dt.astimezone(UTC)
            if dt_u > after_u:
                yield dt_u.astimezone(self.tz)

    def _latest(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """(latest slot <= now, first slot > now) by reverse iteration, without a long loop."""
        now_u = _utc(now, "now")
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
        return {"type": "cron", "expression": self.expression, "timezone": self.tz.key}

    def _missed(self, slot: datetime, now: datetime) -> tuple[datetime, int, datetime | None]:
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
        return [self.at] if count > 0 and self.at.astimezone(UTC) > _utc(after, "after") else []

    def normalized(self) -> dict[str, Any]:
        return {"type": "once", "at": self.at.astimezone(UTC).isoformat()}


class _NoNextSlot(Schedule):
    """A schedule whose slots no clock can list: at most one at start-up (or none at all)."""

    def next_after(self, slot: datetime) -> None:
        return None

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """Nothing: a start-up slot is the next start, which no clock can predict."""
        return []


class ImmediateSchedule(_NoNextSlot):
    """One slot each time the server starts, at the start."""

    def initial_slot(self, now: datetime) -> datetime:
        _utc(now, "now")
        return self._local(now)

    def normalized(self) -> dict[str, Any]:
        return {"type": "immediate"}


class NoSchedule(_NoNextSlot):
    """No slots at all: an actor without ``[actors.schedule]`` runs only through its keyed
    schedules and manual triggers."""

    def initial_slot(self, now: datetime) -> None:
        return None

    def normalized(self) -> dict[str, Any]:
        return {"type": "none"}


_TYPES: dict[str, type[Schedule]] = {
    "interval": IntervalSchedule,
    "cron": CronSchedule,
    "once": OnceSchedule,
    "immediate": ImmediateSchedule,
    "none": NoSchedule,
}


def build_schedule(cfg: ScheduleConfig) -> Schedule:
    """The Schedule for a config; ValueError with a readable message if it cannot work."""
    kind = cfg.type.lower()
    if kind not in _TYPES:
        expected = ", ".join(_TYPES)
        raise ValueError(f"unknown schedule type {cfg.type!r} (expected one of {expected})")
    return _TYPES[kind](cfg)


def definition(cfg: ScheduleConfig, schedule: Schedule | None = None) -> dict[str, Any]:
    """A keyed schedule's whole definition as stored (its ``schedule`` column): when slots fall
    (:meth:`Schedule.normalized`) plus the zone they are shown in, jitter and catch-up.
    ``schedule``: the one already built from ``cfg``, if any."""
    schedule = schedule or build_schedule(cfg)
    return schedule.normalized() | {
        "timezone": schedule.tz.key,
        "jitter_seconds": cfg.jitter_seconds,
        "catch_up": cfg.catch_up,
    }


def from_definition(data: Mapping[str, Any]) -> ScheduleConfig:
    """The ScheduleConfig of a stored :func:`definition`."""
    from discord_actor.config import ScheduleConfig

    at = data.get("at")
    return ScheduleConfig(
        type=data["type"],
        timezone=data.get("timezone", "UTC"),
        seconds=data.get("seconds"),
        expression=data.get("expression"),
        at=None if at is None else datetime.fromisoformat(at),
        jitter_seconds=float(data.get("jitter_seconds", 0.0)),
        catch_up=data.get("catch_up", "latest"),
    )


@lru_cache(maxsize=4096)
def stored_schedule(definition_json: str) -> Schedule:
    """The Schedule of a keyed schedule's stored definition (JSON text). Cached: schedules
    with equal definitions (every poll of a feed every 300 s) share one."""
    return build_schedule(from_definition(json.loads(definition_json)))


def schedule_of(
    actor_schedules: Mapping[str, Schedule], actor: str, keyed_definition: str | None
) -> Schedule:
    """A task's schedule: its actor's configured one, or a keyed schedule's stored one."""
    if keyed_definition is None:
        return actor_schedules[actor]
    return stored_schedule(keyed_definition)


def resumed_slot(schedule: Schedule, next_run: datetime | None, now: datetime) -> datetime | None:
    """Where a paused actor resumed at ``now`` goes on, if its stored ``next_run`` passed while
    it was paused: the schedule's first slot after ``now`` (on an interval's grid). None keeps
    the stored slot: it has not passed, or the actor runs once (``once``, ``immediate``) and its
    one slot still runs, at once.

    Slots that fell while an operator (or the circuit breaker) held the actor paused were not
    missed by the runtime: they are not caught up, and the next run is a ``schedule`` run.
    """
    if next_run is None or _utc(next_run, "next_run") > _utc(now, "now"):
        return None
    if schedule.config.type not in ("interval", "cron"):
        return None
    slots = schedule.upcoming(now, 1, next_run)
    return slots[0] if slots else None


def resume_slot(
    cfg: ScheduleConfig, task: Mapping[str, Any], now: datetime
) -> tuple[datetime, datetime, datetime] | None:
    """For a paused actor (``task``: its row) whose stored next slot passed: (that slot, the
    next slot after ``now``, its due time with jitter), which ``Store.operator.resume`` puts in
    its place. None keeps the stored slot. ``discord-actor resume`` and ``/actors resume`` use
    it."""
    schedule = build_schedule(cfg)
    if not task["paused"] or task["schedule_hash"] != schedule.hash():
        return None
    new = resumed_slot(schedule, task["next_run"], now)
    if new is None:
        return None
    return task["next_run"], new, jittered(new, cfg.jitter_seconds)


def decide(
    schedule: Schedule, slot: datetime, now: datetime, misfire_grace_seconds: float = 60.0
) -> SlotDecision:
    """What to do with the due ``slot`` at ``now``, after downtime applying ``catch_up``.

    A slot is missed when a later slot is also due, or it is older than the grace period.
    "latest" runs only the newest due slot and counts the older ones in ``skipped``; "skip"
    runs nothing (``scheduled_for`` is the newest due slot, ``skipped`` counts all missed
    ones); "all" runs the missed slots one by one, oldest first.
    """
    slot_u, now_u = _utc(slot, "slot"), _utc(now, "now")
    if slot_u > now_u:
        raise ValueError(f"slot {format_slot(slot)} is not due at {format_slot(now)}")
    local = schedule._local(slot_u)
    following = schedule.next_after(slot_u)
    missed = (following is not None and following.astimezone(UTC) <= now_u) or (
        (now_u - slot_u).total_seconds() > misfire_grace_seconds
    )
    if not missed:
        trigger = TRIGGER_STARTUP if isinstance(schedule, ImmediateSchedule) else TRIGGER_SCHEDULE
        return SlotDecision("run", local, trigger, 0, following)
    policy = schedule.config.catch_up
    if policy == "all":
        return SlotDecision("run", local, TRIGGER_CATCH_UP, 0, following)
    if policy not in ("latest", "skip"):
        raise ValueError(f"unknown catch_up policy {policy!r} (expected latest, skip or all)")
    latest, count, next_run = schedule._missed(slot_u, now_u)
    if policy == "latest":
        return SlotDecision("run", latest, TRIGGER_CATCH_UP, count - 1, next_run)
    return SlotDecision("skip", latest, TRIGGER_CATCH_UP, count, next_run)
