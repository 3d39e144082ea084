"""The store's records: what its statements take and return.

A record read from a row has its one mapping (``from_record``), through ``from_row``: its fields
are the row's columns of the same names, and only what differs is spelled out.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..enums import RunStatus, Trigger
from ..storable import storable_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Record = TypeVar("Record", bound="DataclassInstance")

# A stored trigger or status as its member, by a dict lookup: the claim reads both for every run,
# and ``Trigger(text)`` costs a few hundred nanoseconds more.
_TRIGGER_OF: dict[str, Trigger] = {t.value: t for t in Trigger}
_STATUS_OF: dict[str, RunStatus] = {s.value: s for s in RunStatus}


def from_row(cls: type[Record], row: Mapping[str, Any], **given: Any) -> Record:
    """The dataclass ``cls`` from a row: each field from the column of its name, but those
    ``given`` (a column of another name, a value decoded or worked out). A field without its
    column is a KeyError, not a silent None."""
    names = _init_fields(cls)
    if not given:
        return cls(*[row[name] for name in names])
    if unknown := given.keys() - names:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)}")
    return cls(*[given[name] if name in given else row[name] for name in names])


@functools.cache
def _init_fields(cls: type[DataclassInstance]) -> tuple[str, ...]:
    """The fields ``cls.__init__`` takes, in order (``from_row`` passes them by position)."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if any(f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__}: from_row does not pass keyword-only fields")
    return tuple(f.name for f in fields)


def stored_status(stored: str | None) -> RunStatus | None:
    """A task's ``last_status`` column as its member (None before the task's first run)."""
    return None if stored is None else RunStatus(stored)


def json_column(value: Any) -> Any:
    """A ``jsonb`` column's value as Python: asyncpg hands it over as its JSON text."""
    return json.loads(value) if isinstance(value, str) else value


@dataclass(slots=True, eq=False, repr=False)
class TaskView:
    """The scheduler's copy of one task row with work due soon."""

    id: int
    actor: str
    enabled: bool
    paused: bool
    max_instances: int
    next_run: datetime | None
    due_at: datetime | None
    retry_slot: datetime | None
    retry_attempt: int | None
    retry_at: datetime | None
    manual_at: datetime | None
    key: str | None = None  # None: the actor's configured schedule
    keyed_schedule: str | None = None  # a keyed schedule's definition (JSON text)

    def __repr__(self) -> str:
        return (
            f"TaskView(id={self.id}, actor={self.actor!r}, key={self.key!r}, due_at={self.due_at},"
            f" retry_at={self.retry_at}, manual_at={self.manual_at})"
        )

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> TaskView:
        return from_row(cls, r)

    def due_time(self) -> float | None:
        """When this task next has work, as a POSIX timestamp; 0 (at once) for a trigger."""
        if self.manual_at is not None:
            return 0.0
        when = self.due_at
        if self.retry_at is not None and (when is None or self.retry_at < when):
            when = self.retry_at
        return None if when is None else when.timestamp()


@dataclass(frozen=True)
class DueWindow:
    """The tasks with work due up to the ``until`` asked for; complete up to ``complete_until``.

    When a part of the window query hit its limit, what lies beyond its last row was not read:
    ``complete_until`` is then earlier than ``until``, and the caller reads again before then.
    ``complete_until`` speaks of keyed schedules (and retries, triggers); ``own_complete_until``
    of the actors' own rows, read apart (a burst of keyed slots must not cut their read short).
    """

    views: list[TaskView]
    complete_until: datetime
    own_complete_until: datetime | None = None  # None: as complete_until


@dataclass(frozen=True)
class TaskSpec:
    """What the configuration says about one actor, for ``reconcile``."""

    actor: str
    enabled: bool
    schedule_json: str  # the schedule's canonical JSON
    schedule_hash: str
    max_instances: int
    max_attempts: int
    initial_slot: datetime | None
    initial_due: datetime | None
    on_every_start: bool  # "immediate": a new slot each time a server starts

    # What a row of an actor is written from, in the order the statements take it.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "actor", "enabled", "schedule_json", "schedule_hash", "max_instances", "max_attempts",
        "initial_slot", "initial_due",
    )


class PendingItem(StrEnum):
    """Which of a task's pending items a claim takes (the claim statement's ``kind``): its
    scheduled slot, its retry or its manual trigger. Not a ``Trigger``: a scheduled slot's run is
    a ``schedule``, ``startup`` or ``catch_up`` run."""

    SCHEDULE = "schedule"
    RETRY = "retry"
    MANUAL = "manual"


@dataclass(frozen=True)
class ClaimRequest:
    """One piece of due work the scheduler wants to start.

    ``kind`` says which pending item of the task it is (its scheduled slot, a retry or a manual
    trigger) and ``expected`` is that item's value as the scheduler last saw it, so that two
    processes can never both claim it.
    """

    task_id: int
    kind: PendingItem
    expected: datetime
    attempt: int
    scheduled_for: datetime
    trigger: Trigger
    status: RunStatus = RunStatus.RUNNING  # SKIPPED records missed slots without running them
    new_next_run: datetime | None = None  # kind SCHEDULE: the task's next slot after this
    new_due_at: datetime | None = None
    note: str | None = None

    # What the claim statement takes of each request, in its order.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "task_id", "kind", "expected", "attempt", "scheduled_for", "trigger", "status",
        "new_next_run", "new_due_at", "note",
    )


@dataclass(frozen=True)
class ClaimedRun:
    run_id: int
    task_id: int
    actor: str
    scheduled_for: datetime
    attempt: int
    trigger: Trigger
    status: RunStatus
    state: dict[str, Any]
    key: str | None = None  # a keyed schedule's run; None for the configured schedule
    payload: dict[str, Any] | None = None
    channel_id: int | None = None  # a keyed schedule's channel, over the actor's
    keyed_schedule: str | None = None  # a keyed schedule's stored definition (JSON text)

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ClaimedRun:
        """A run the claim statement started (its row joined with its task's)."""
        return from_row(
            cls,
            r,
            run_id=r["id"],
            trigger=_TRIGGER_OF[r["trigger"]],
            status=_STATUS_OF[r["status"]],
            state=json_column(r["state"]),
            payload=json_column(r["payload"]),
        )


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as ``finish`` records it."""

    status: RunStatus  # SUCCEEDED | FAILED | TIMED_OUT | CANCELLED
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    posted: Sequence[dict[str, Any]] = ()
    state_json: str | None = None  # the new state as JSON; None keeps what is stored
    retry_at: datetime | None = None  # schedule attempt + 1 of the same slot at this time
    counts_as_failure: bool = False  # towards the circuit breaker
    max_consecutive_failures: int = 5
    not_retried: bool = False  # an error another attempt would meet again (``NotRetried``)

    # What the statement that records outcomes takes of each, in its order.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "status", "error_type", "error_message", "error_traceback", "posted_json", "state_json",
        "retry_at", "counts_as_failure", "max_consecutive_failures",
    )

    @property
    def posted_json(self) -> str:
        """What the run posted, as the runs table keeps it."""
        return storable_json(list(self.posted)) if self.posted else "[]"


@dataclass(frozen=True)
class Operator:
    """Who changed a task by hand, and from where: written into the paused reason and sent to
    every running server in the notification, which logs it."""

    who: str  # the OS user of the CLI, or the Discord user
    where: str  # "CLI on host db1", or "Discord, guild 1 channel 2"

    def text(self) -> str:
        return f"{self.who} via {self.where}"

    def reason(self, given: str | None) -> str:
        """The paused reason: what the operator gave (if anything), and who paused."""
        return f"{given}; paused by {self.text()}" if given else f"paused by {self.text()}"


@dataclass(frozen=True)
class KeyedRow:
    """One keyed schedule to write, as ``add_keyed`` stores it."""

    key: str
    definition_json: str  # schedules.definition(), canonical JSON
    definition_hash: str  # of the definition, payload, channel and owner together
    payload_json: str | None
    channel_id: int | None
    owner: str | None
    next_run: datetime | None
    due_at: datetime | None

    # What the statement that writes keyed schedules takes of each, in its order.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "key", "definition_json", "definition_hash", "next_run", "due_at", "payload_json",
        "channel_id", "owner",
    )


@dataclass(frozen=True)
class KeyedWrite:
    """What ``add_keyed`` did: the keys it wrote (new, re-armed or replaced), and of those the
    ones that were pending with another definition (replaced)."""

    written: list[str]
    replaced: list[str]


@dataclass(frozen=True)
class TaskChange:
    """What an operator's pause, resume or trigger found on the task row (as it was before the
    change, locked) and whether it applied."""

    applied: bool  # False: refused by the precondition (a trigger of a paused/disabled actor)
    enabled: bool
    was_paused: bool
    paused_reason: str | None  # before the change
    was_pending: bool  # a manual trigger was already waiting
    next_run: datetime | None  # after the change (None also when not applied)

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> TaskChange:
        """What the operator's change statement returned."""
        return from_row(cls, r, was_paused=r["paused"], was_pending=r["manual_at"] is not None)


@dataclass(frozen=True)
class Finished:
    """A run's outcome as recorded, and its task as it is after it."""

    task: TaskView
    consecutive_failures: int
    paused_reason: str | None
    breaker_tripped: bool

    @classmethod
    def from_record(cls, r: Mapping[str, Any], outcome: Outcome) -> Finished:
        """What ``finish_run`` returned for ``outcome``."""
        task = TaskView.from_record(r)
        if outcome.retry_at is not None and (
            task.retry_at is None or outcome.retry_at < task.retry_at
        ):
            # The retry this statement queued is not in its own snapshot.
            task.retry_slot, task.retry_attempt = r["scheduled_for"], r["attempt"] + 1
            task.retry_at = outcome.retry_at
        return from_row(cls, r, task=task, breaker_tripped=r["paused"] and not r["was_paused"])
