"""What every schedule kind shares: its configuration, the Schedule base class, slot helpers
and the catch-up decision.

Slots are instants. They are returned timezone-aware in the schedule's zone, but all arithmetic
and comparisons here go through UTC: Python compares and subtracts two datetimes that share a
``tzinfo`` by wall clock, ignoring ``fold`` and the UTC offset, which is wrong across DST changes.
Callers comparing slots should do the same (or compare against a UTC ``now``).
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..enums import Trigger

# The triggers a slot decision gives, bound once (a member read from its enum class costs a
# descriptor call, and ``decide`` runs for every scheduled run); importable under these names.
TRIGGER_SCHEDULE = Trigger.SCHEDULE
TRIGGER_STARTUP = Trigger.STARTUP
TRIGGER_CATCH_UP = Trigger.CATCH_UP
CATCH_UP_POLICIES = ("latest", "skip", "all")
#: The zone of a schedule that names none, when the server names none either (server.timezone).
DEFAULT_TIMEZONE = "UTC"
MISFIRE_GRACE_SECONDS = 60.0  # a slot later than this (plus its jitter) counts as missed


@dataclass(frozen=True)
class ScheduleConfig:
    """One schedule as configured (``[actors.schedule]``) or asked for (a keyed schedule).

    The fields of the built-in kinds live here; a kind with other keys subclasses it (a frozen
    dataclass, so that equal schedules still hash equal and dump as TOML). The defaults are the
    configuration's: ``ScheduleConfig(type="interval", seconds=3)`` is what
    ``[actors.schedule]`` with those two keys gives on a server without a ``timezone``.
    """

    type: str  # normalized to lower case: a name in the kind registry
    timezone: str = DEFAULT_TIMEZONE  # effective IANA zone (schedule's own, else server's)
    seconds: float | None = None  # interval
    expression: str | None = None  # cron, 5 fields
    at: datetime | None = None  # once, timezone-aware
    jitter_seconds: float = 0.0
    catch_up: str = "latest"


def zone_info(name: str) -> ZoneInfo:
    """The zone named ``name``; ValueError with a readable message if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name such as 'Europe/Berlin')"
        ) from None


def utc(dt: datetime, what: str = "datetime") -> datetime:
    """``dt`` in UTC; ValueError naming ``what`` if it is naive."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {dt.isoformat()}")
    return dt.astimezone(UTC)


def format_slot(dt: datetime) -> str:
    """ISO 8601 with its UTC offset at seconds precision, e.g. ``2026-03-29T03:00:00+02:00``."""
    utc(dt, "slot")
    return dt.isoformat(timespec="seconds")


class RandomSource(Protocol):
    """Anything with ``random()`` in [0, 1): the ``random`` module, or a seeded one in tests."""

    def random(self) -> float: ...


def jittered(slot: datetime, jitter_seconds: float, rng: RandomSource = random) -> datetime:
    """``slot`` plus a uniform delay in [0, jitter_seconds), so many actors do not start at once."""
    if jitter_seconds <= 0:
        return slot
    delay = timedelta(microseconds=int(rng.random() * jitter_seconds * 1_000_000))
    return (utc(slot, "slot") + delay).astimezone(slot.tzinfo)


@dataclass(frozen=True)
class SlotDecision:
    """What to do with a due slot; ``next_run`` is what the task's next slot becomes."""

    action: Literal["run", "skip"]
    scheduled_for: datetime
    trigger: Trigger
    skipped: int
    next_run: datetime | None


class Schedule(ABC):
    """Computes slots for one actor. Built by ``registry.build_schedule``."""

    #: A new slot each time a server starts (``immediate``): its run is a ``startup`` run.
    on_every_start: ClassVar[bool] = False
    #: Slot after slot (interval, cron): a paused one goes on at its next slot after it is
    #: resumed, instead of running the slot it was held from.
    repeats: ClassVar[bool] = False

    def __init__(self, config: ScheduleConfig) -> None:
        self.config = config
        self.tz = zone_info(config.timezone)

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

    def first_anchor(self, now: datetime) -> datetime | None:
        """The ``anchor`` of :meth:`upcoming` for a task added at ``now``, for a kind whose slots
        are counted from it (an interval's grid starts at its first slot); None otherwise."""
        return None

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

    def missed(self, slot: datetime, now: datetime) -> tuple[datetime, int, datetime | None]:
        """(latest slot <= now, slots missed from ``slot`` through it, first slot > now)."""
        return self._local(slot), 1, self.next_after(now)


class NoClockSlots(Schedule):
    """A schedule whose slots no clock can list: at most one at start-up (or none at all)."""

    def next_after(self, slot: datetime) -> None:
        return None

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        """Nothing: a start-up slot is the next start, which no clock can predict."""
        return []


def resumed_slot(schedule: Schedule, next_run: datetime | None, now: datetime) -> datetime | None:
    """Where a paused actor resumed at ``now`` goes on, if its stored ``next_run`` passed while
    it was paused: the schedule's first slot after ``now`` (on an interval's grid). None keeps
    the stored slot: it has not passed, or the actor runs once (``once``, ``immediate``) and its
    one slot still runs, at once.

    Slots that fell while an operator (or the circuit breaker) held the actor paused were not
    missed by the runtime: they are not caught up, and the next run is a ``schedule`` run.
    """
    if next_run is None or utc(next_run, "next_run") > utc(now, "now"):
        return None
    if not schedule.repeats:
        return None
    slots = schedule.upcoming(now, 1, next_run)
    return slots[0] if slots else None


@dataclass(frozen=True)
class Prediction:
    """An actor's next slots as a server runs them (``predict``).

    ``slots``: the slots that run, in order; one that is already due comes first when it runs
    (a ``catch_up`` run of a slot missed while no server ran, say). ``due``: what the scheduler
    decides about the slot already due (None: none is), the same :func:`decide_due` it calls.
    ``done``: a ``once`` actor's one slot has run (or was skipped): it never runs again.
    """

    slots: list[datetime]
    due: SlotDecision | None = None
    done: bool = False


def predict(
    schedule: Schedule, task: Mapping[str, Any] | None, now: datetime, count: int,
    after: datetime | None = None,
) -> Prediction:
    """The next ``count`` slots of an actor as the runtime computes them; what ``discord-actor
    check`` and ``next`` show.

    From the actor's stored task (``task``: its row) when it is for this schedule: its stored
    next slot (an interval's grid is anchored there). Otherwise as for a new task added at
    ``now``: the schedule's first slot, which for a ``once`` in the past is its ``at``.

    Without ``after``: from ``now``, as a server (running, or starting now) goes on. A slot that
    is due already is decided by :func:`decide_due`, as the scheduler decides it: it is listed
    if it runs (``catch_up = "latest"`` or ``"all"``), left out if ``"skip"`` skips it. A paused
    interval or cron actor goes on at its next slot after now, as a resume does
    (:func:`resumed_slot`). With ``after``: the slots strictly after it on the same grid,
    nothing decided (``next --after``: what the schedule says, at a time of one's choosing).
    """
    if schedule.on_every_start:  # a new slot at each start, none a clock can list
        return Prediction([])
    slot: datetime | None
    stored = task is not None and task["schedule_hash"] == schedule.hash()
    if stored:
        assert task is not None
        slot = task["next_run"]
        if slot is None:  # a once actor that ran: no slot left
            return Prediction([], done=True)
        if task.get("paused"):
            slot = resumed_slot(schedule, slot, now) or slot
    else:
        slot = schedule.initial_slot(now)
    if after is not None:
        anchor = slot if stored else schedule.first_anchor(now)
        if anchor is not None and anchor == after:
            after -= timedelta(microseconds=1)  # the anchor itself is a slot (a new interval's)
        return Prediction(schedule.upcoming(after, count, anchor))
    slots: list[datetime] = []
    due: SlotDecision | None = None
    now_u = utc(now, "now")
    while slot is not None and len(slots) < count:
        if utc(slot, "slot") > now_u:
            slots.append(schedule._local(slot))
            slot = schedule.next_after(slot)
            continue
        decision = decide_due(schedule, slot, now)
        due = due or decision
        slot = decision.next_run
        if decision.action == "run":
            slots.append(decision.scheduled_for)
        elif slot is not None and utc(slot, "next_run") <= now_u:
            break  # a kind whose skip does not move past now: nothing more to tell
    return Prediction(slots, due)


def predicted_slots(
    schedule: Schedule, task: Mapping[str, Any] | None, after: datetime, count: int,
    now: datetime,
) -> tuple[list[datetime], bool]:
    """The next ``count`` slots after ``after`` (``predict`` with ``after``), and True when a
    ``once`` actor has run its slot."""
    found = predict(schedule, task, now, count, after)
    return found.slots, found.done


def decide_due(schedule: Schedule, slot: datetime, now: datetime) -> SlotDecision:
    """:func:`decide` with the scheduler's grace: a slot later than ``MISFIRE_GRACE_SECONDS``
    plus the schedule's jitter is missed. The scheduler decides every due slot with this, and
    ``predict`` answers ``check`` and ``next`` with it, so that they say what a server does."""
    return decide(schedule, slot, now, MISFIRE_GRACE_SECONDS + schedule.config.jitter_seconds)


def decide(
    schedule: Schedule, slot: datetime, now: datetime,
    misfire_grace_seconds: float = MISFIRE_GRACE_SECONDS,
) -> SlotDecision:
    """What to do with the due ``slot`` at ``now``, after downtime applying ``catch_up``.

    A slot is missed when a later slot is also due, or it is older than the grace period.
    "latest" runs only the newest due slot and counts the older ones in ``skipped``; "skip"
    runs nothing (``scheduled_for`` is the newest due slot, ``skipped`` counts all missed
    ones); "all" runs the missed slots one by one, oldest first.
    """
    slot_u, now_u = utc(slot, "slot"), utc(now, "now")
    if slot_u > now_u:
        raise ValueError(f"slot {format_slot(slot)} is not due at {format_slot(now)}")
    local = schedule._local(slot_u)
    following = schedule.next_after(slot_u)
    missed = (following is not None and following.astimezone(UTC) <= now_u) or (
        (now_u - slot_u).total_seconds() > misfire_grace_seconds
    )
    if not missed:
        trigger = TRIGGER_STARTUP if schedule.on_every_start else TRIGGER_SCHEDULE
        return SlotDecision("run", local, trigger, 0, following)
    policy = schedule.config.catch_up
    if policy == "all":
        return SlotDecision("run", local, TRIGGER_CATCH_UP, 0, following)
    if policy not in ("latest", "skip"):
        raise ValueError(f"unknown catch_up policy {policy!r} (expected latest, skip or all)")
    latest, count, next_run = schedule.missed(slot_u, now_u)
    if policy == "latest":
        return SlotDecision("run", latest, TRIGGER_CATCH_UP, count - 1, next_run)
    return SlotDecision("skip", latest, TRIGGER_CATCH_UP, count, next_run)
