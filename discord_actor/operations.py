"""What an operator can ask of the actors: status, history, one run, pause, resume, trigger,
and their keyed schedules (list, add, remove).

One layer for every front end (the ``discord-actor`` commands, ``/actors`` in Discord, the HTTP
side): each builds an ``Operations`` from a ``Store`` and the configuration, calls it, and only
formats what comes back. Results are dataclasses; what an operator asked for and cannot have
(an unknown actor, a paused one triggered...) is an ``OperationError`` naming why.

Preconditions are checked by the database in the statement that makes the change, on the
locked row (``Store.operator.pause``/``resume``/``trigger``): nothing is read first and written
later, so two operators (or an operator and the circuit breaker) cannot interleave between a
check and its write.

Without the CLI::

    ops = Operations(Store(pool, "discord_actor"), config)
    for actor in (await ops.status()).actors:
        print(actor.actor, actor.state)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from . import retention
from .config.model import Config
from .config.values import closest
from .db.migrations import applied_versions
from .db.records import Operator, from_row, json_column, stored_status
from .db.store import Store
from .enums import RunStatus, Trigger
from .errors import OperationError as OperationError  # "as": still importable from here
from .errors import ScheduleError
from .errors import UnknownActor as UnknownActor
from .keyed import KeyedSchedule, Schedules
from .schedules.base import ScheduleConfig, format_slot
from .schedules.kind import ScheduleSpec
from .schedules.registry import describe, describe_stored, resume_slot
from .storable import MAX_ERROR_MESSAGE, cap

if TYPE_CHECKING:
    from .db import Database

#: every status a run can have, as stored (plain strings, which argparse shows as its choices)
RUN_STATUSES = tuple(status.value for status in RunStatus)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ActorStatus:
    """One actor as the configuration and the database know it (times in UTC; ``timezone`` is
    its schedule's zone, for showing them)."""

    actor: str
    in_config: bool
    registered: bool  # has a task row: a server has run it
    schedule: str | None  # described for a person (None: not in the configuration)
    timezone: tzinfo | None
    enabled: bool
    paused: bool
    paused_reason: str | None
    setup_error: str | None  # setup() failed at the last start of a server: it does not run
    next_run: datetime | None
    last_status: RunStatus | None
    last_run_at: datetime | None
    consecutive_failures: int
    running: int
    trigger_pending: bool
    retry_at: datetime | None
    keyed: int = 0  # its pending keyed schedules
    #: its rows (its own, its keyed schedules') whose last run met a post Discord refused, and
    #: the latest one's key (None: its own) and reason
    refused: int = 0
    refused_key: str | None = None
    refused_reason: str | None = None

    @property
    def refusal(self) -> str | None:
        """What to fix, in one line, when Discord refused its posts (None: it did not)."""
        if not self.refused:
            return None
        where = "its own schedule" if self.refused_key is None else f"key {self.refused_key}"
        return (
            f"{self.refused} post(s) refused by Discord, not retried; the latest"
            f" ({where}): {self.refused_reason}"
        )

    @property
    def broken(self) -> bool:
        return self.setup_error is not None

    @property
    def held(self) -> str | None:
        """``"disabled"``, ``"broken"`` or ``"paused"`` when it does not run though it has a
        next slot (None: nothing holds it): what every front end shows in place of its next
        run, whose stored slot (often past) stays in ``next_run``."""
        if not self.enabled:
            return "disabled"
        if self.broken:
            return "broken"
        if self.paused:
            return "paused"
        return None

    @property
    def state(self) -> str:
        """One word (or two) for its state, the same in every front end."""
        if not self.in_config:
            return "not in config"
        if not self.enabled:
            return "disabled"
        if not self.registered:
            return "not started"
        if self.broken:
            return "broken"
        if self.paused:
            return "paused"
        return "running" if self.running else "active"

    def to_json(self) -> dict[str, Any]:
        """As ``discord-actor status --json`` prints it (times in the schedule's zone)."""
        tz = self.timezone
        return {
            "actor": self.actor,
            "state": self.state,
            "in_config": self.in_config,
            "registered": self.registered,
            "schedule": self.schedule,
            "enabled": self.enabled,
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "broken": self.broken,
            "setup_error": self.setup_error,
            "next_run": iso(self.next_run, tz),
            "last_status": self.last_status,
            "last_run_at": iso(self.last_run_at, tz),
            "consecutive_failures": self.consecutive_failures,
            "running": self.running,
            "trigger_pending": self.trigger_pending,
            "retry_at": iso(self.retry_at, tz),
            "keyed": self.keyed,
            "refused": self.refused,
            "refused_key": self.refused_key,
            "refused_reason": self.refused_reason,
        }


@dataclass(frozen=True)
class Status:
    """Configured actors first (in configuration order), then those only in the database."""

    actors: list[ActorStatus]
    initialized: bool  # False: no server has run on this database yet (no tables)
    #: Live processes that hear no notifications ("host pid 12: why"): they only poll.
    polling: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunInfo:
    """One recorded run. ``traceback`` is only read for a single run (``Operations.run``)."""

    id: int
    actor: str
    timezone: tzinfo | None
    scheduled_for: datetime
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    status: RunStatus
    attempt: int
    trigger: Trigger
    error_type: str | None
    error_message: str | None
    instance_id: str | None
    posted: list[Any]
    traceback: str | None = None
    key: str | None = None  # the keyed schedule it ran for (None: the configured one)

    @classmethod
    def from_record(
        cls, r: Mapping[str, Any], timezone: tzinfo | None, *, traceback: bool = False
    ) -> RunInfo:
        """A run as the store's history, recent runs and run read it; ``timezone``: its actor's
        (a keyed schedule's own zone, if it has one, wins)."""
        message = r["error_message"]
        if message is not None:  # bounded even for runs recorded before texts were capped
            message = cap(message, MAX_ERROR_MESSAGE)
        return from_row(
            cls,
            r,
            timezone=ZoneInfo(r["key_zone"]) if r.get("key_zone") else timezone,
            status=RunStatus(r["status"]),
            trigger=Trigger(r["trigger"]),
            error_message=message,
            posted=list(json_column(r["posted"]) or []),
            traceback=r["error_traceback"] if traceback else None,
        )

    @property
    def error(self) -> str | None:
        """``Type: message`` of a run that raised; None otherwise."""
        if not self.error_type:
            return None
        return f"{self.error_type}: {self.error_message}" if self.error_message \
            else self.error_type

    @property
    def note(self) -> str | None:
        """A message without an error type: why slots were skipped, for instance."""
        return None if self.error_type else self.error_message

    def to_json(self, *, traceback: bool = False) -> dict[str, Any]:
        """As ``discord-actor history --json`` prints it; ``traceback`` adds the traceback."""
        tz = self.timezone
        item: dict[str, Any] = {
            "id": self.id,
            "actor": self.actor,
            "key": self.key,
            "scheduled_for": iso(self.scheduled_for, tz),
            "started_at": iso(self.started_at, tz),
            "finished_at": iso(self.finished_at, tz),
            "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 3),
            "status": self.status,
            "attempt": self.attempt,
            "trigger": self.trigger,
            "error": self.error,
            "note": self.note,
            "instance_id": self.instance_id,
            "posted": self.posted,
        }
        if traceback:
            item["traceback"] = self.traceback
        return item


@dataclass(frozen=True)
class PauseResult:
    actor: str
    reason: str  # as stored: what was given, and who paused
    was_paused: bool
    previous_reason: str | None  # when it was already paused


@dataclass(frozen=True)
class ResumeResult:
    actor: str
    was_paused: bool  # False: only its failure count was reset
    #: its slot passed while it was paused and moved on to this one (None: kept)
    next_run: datetime | None
    timezone: tzinfo | None


@dataclass(frozen=True)
class TriggerResult:
    actor: str
    already_pending: bool  # an earlier trigger has not started yet; this one joined it


@dataclass(frozen=True)
class ScheduleAdded:
    schedule: KeyedSchedule  # as stored, with its next run
    #: "added" (new, or armed again after it ran or was removed), "replaced" (it was pending
    #: with another definition), "unchanged" (pending with this same definition already)
    outcome: str


@dataclass(frozen=True)
class ScheduleRemoved:
    actor: str
    key: str


# --------------------------------------------------------------------------------------------
# Refusals


# OperationError, their base, and UnknownActor (neither configured nor ever run here: most likely
# a typo) are in ``errors``: the keyed schedules API raises the same UnknownActor.


class NotStarted(OperationError):
    """Configured, but no server has run it yet: it has no task row to change."""

    def __init__(self, actor: str) -> None:
        super().__init__(f"actor {actor!r} has no task in the database yet")
        self.actor = actor


class ActorRemoved(OperationError):
    """Gone from the configuration; its history is kept."""

    def __init__(self, actor: str) -> None:
        super().__init__(f"actor {actor!r} is no longer in the configuration")
        self.actor = actor


class ActorPaused(OperationError):
    def __init__(self, actor: str, reason: str | None) -> None:
        super().__init__(f"{actor} is paused ({reason})")
        self.actor = actor
        self.reason = reason


class ActorDisabled(OperationError):
    def __init__(self, actor: str) -> None:
        super().__init__(f"{actor} is disabled (enabled = false)")
        self.actor = actor


class RunNotFound(OperationError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run with id {run_id}")
        self.run_id = run_id


class ScheduleNotFound(OperationError):
    """No pending keyed schedule of the actor has that key (it ran, was removed, or never was)."""

    def __init__(self, actor: str, key: str) -> None:
        super().__init__(f"actor {actor!r} has no pending schedule with key {key!r}")
        self.actor = actor
        self.key = key


class ScheduleRefused(OperationError):
    """The keyed schedules API refused an add: ``error`` is its typed error (``InvalidKey``,
    ``InvalidSchedule``, ``InvalidPayload``, ``ScheduleConflict``, ``ScheduleLimitReached``),
    whose message says what is wrong."""

    def __init__(self, actor: str, error: ScheduleError) -> None:
        super().__init__(str(error))
        self.actor = actor
        self.error = error


# --------------------------------------------------------------------------------------------
# The operations


class Operations:
    """The operator's view of one database and configuration.

    ``store`` None: the schema has no tables yet (no server has run); reads answer empty and
    changes raise ``NotStarted``.
    """

    def __init__(self, store: Store | None, config: Config) -> None:
        self.store = store
        self.config = config
        self._configured = {a.name: a for a in config.actors}

    @classmethod
    async def on_database(cls, database: Database, config: Config) -> Operations:
        """Operations on an open database; without a Store if no server has created its
        tables yet (a command run before the first ``discord-actor run``)."""
        async with database.pool.acquire() as conn:
            initialized = bool(await applied_versions(conn, database.schema))
        return cls(Store(database.pool, database.schema) if initialized else None, config)

    # -- reads -------------------------------------------------------------------------------

    async def status(self, actor: str | None = None) -> Status:
        """Every actor (configured, or known to the database), or only ``actor``."""
        records = await self.store.operator.status(actor) if self.store is not None else []
        by_actor = {r["actor"]: r for r in records}
        names = list(self._configured) + sorted(set(by_actor) - set(self._configured))
        if actor is not None:
            names = [name for name in names if name == actor]
        deaf = await self.store.instances.deaf() if self.store is not None else []
        return Status(
            [self._actor_status(name, by_actor.get(name)) for name in names],
            initialized=self.store is not None,
            polling=[f"{r['hostname']} pid {r['pid']}: {r['notifications']}" for r in deaf],
        )

    async def history(
        self, actor: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[RunInfo]:
        """Recorded runs, newest first; of one actor and/or with one status when given."""
        if status is not None and status not in RUN_STATUSES:
            raise OperationError(
                f"unknown run status {status!r} (expected one of {', '.join(RUN_STATUSES)})"
            )
        if actor is not None:
            actor = await self._existing(actor)
        if self.store is None:
            return []
        records = await self.store.operator.history(actor, limit, status)
        return [self._run_info(r) for r in records]

    async def recent_runs(self, actors: Sequence[str], limit: int) -> dict[str, list[RunInfo]]:
        """Each actor's newest ``limit`` runs, newest first, read together."""
        found: dict[str, list[RunInfo]] = {actor: [] for actor in actors}
        if self.store is not None and actors:
            for r in await self.store.operator.recent_runs(actors, limit):
                found[r["actor"]].append(self._run_info(r))
        return found

    async def run(self, run_id: int) -> RunInfo:
        """One run with its traceback and what it posted."""
        record = await self.store.operator.run(run_id) if self.store is not None else None
        if record is None:
            raise RunNotFound(run_id)
        return self._run_info(record, traceback=True)

    async def stored_tasks(self, actor: str | None = None) -> dict[str, Any]:
        """The task rows by actor name (every actor's, or only ``actor``'s), as stored: the
        next slots ``discord-actor check`` and ``next`` predict from."""
        if self.store is None:
            return {}
        if actor is not None:
            row = await self.store.operator.task(actor)
            return {} if row is None else {actor: row}
        return {r["actor"]: r for r in await self.store.operator.status()}

    def zone(self, actor: str) -> tzinfo | None:
        """The time zone an actor's slots are shown in (None if it left the configuration)."""
        cfg = self._configured.get(actor)
        return None if cfg is None else ZoneInfo(cfg.schedule.timezone)

    # -- changes -----------------------------------------------------------------------------

    async def pause(
        self, actor: str, reason: str | None = None, by: Operator | None = None
    ) -> PauseResult:
        """Pause: running servers stop starting its runs. ``reason`` is stored with who paused."""
        given = " ".join((reason or "").split()) or None
        stored = by.reason(given) if by is not None else (given or "paused by an operator")
        change = (
            await self.store.operator.pause(actor, stored, by) if self.store is not None else None
        )
        if change is None:
            raise await self._why_no_task(actor)
        return PauseResult(actor, stored, change.was_paused,
                           change.paused_reason if change.was_paused else None)

    async def resume(self, actor: str, by: Operator | None = None) -> ResumeResult:
        """Unpause and reset the failure count. A slot that passed while it was paused is not
        caught up: the next one after now takes its place."""
        if self.store is None:
            raise await self._why_no_task(actor)
        moved = None
        cfg = self._configured.get(actor)
        if cfg is not None:
            # Only to compute the slot after now: the statement moves it only if the actor was
            # paused and the stored slot is still this one.
            task = await self.store.operator.task(actor)
            if task is not None:
                moved = resume_slot(cfg.schedule, task, datetime.now(UTC))
        change = await self.store.operator.resume(actor, by, moved=moved)
        if change is None:
            raise await self._why_no_task(actor)
        new = None
        if change.was_paused and moved is not None and change.next_run == moved[1]:
            new = change.next_run
        return ResumeResult(actor, change.was_paused, new, self.zone(actor))

    async def trigger(self, actor: str, by: Operator | None = None) -> TriggerResult:
        """Ask a running server to run it now (it starts within a second)."""
        change = await self.store.operator.trigger(actor, by) if self.store is not None else None
        if change is None:
            raise await self._why_no_task(actor)
        if not change.applied:
            if change.was_paused:
                raise ActorPaused(actor, change.paused_reason)
            raise ActorDisabled(actor)
        return TriggerResult(actor, change.was_pending)

    # -- keyed schedules ---------------------------------------------------------------------

    async def list_schedules(
        self,
        actor: str,
        *,
        prefix: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[KeyedSchedule]:
        """The actor's pending keyed schedules, soonest first."""
        name = await self._configured_actor(actor)
        if self.store is None:
            return []
        return await self._schedules(self.store).list(
            name, prefix=prefix, owner=owner, limit=limit
        )

    async def add_schedule(
        self,
        actor: str,
        key: str,
        schedule: ScheduleSpec,
        *,
        payload: dict[str, Any] | None = None,
        channel_id: int | None = None,
        owner: str | None = None,
        replace: bool = False,
    ) -> ScheduleAdded:
        """Add a keyed schedule through ``keyed.Schedules`` (same checks, limits and errors as
        from code; those errors come back as ``ScheduleRefused``)."""
        name = await self._configured_actor(actor)
        if self.store is None:
            raise NotStarted(name)
        schedules = self._schedules(self.store)
        try:
            added = await schedules.add(
                name, key=key, schedule=schedule, payload=payload, channel_id=channel_id,
                owner=owner, replace=replace,
            )
        except ScheduleError as e:
            raise ScheduleRefused(name, e) from None
        return ScheduleAdded(added, added.change or "added")

    async def remove_schedule(self, actor: str, key: str) -> ScheduleRemoved:
        """Remove a pending keyed schedule (its run history stays)."""
        name = await self._configured_actor(actor)
        if self.store is None or not await self._schedules(self.store).remove(name, key):
            raise ScheduleNotFound(name, key)
        return ScheduleRemoved(name, key)

    def _schedules(self, store: Store) -> Schedules:
        return Schedules(store, self.config)

    # -- retention ---------------------------------------------------------------------------

    async def prunable(
        self, older_than_days: float
    ) -> tuple[datetime | None, list[tuple[str, int]]]:
        """What a prune would delete, deleting nothing: its cutoff (None: no tables yet) and
        how many finished runs of each actor ended before it."""
        if self.store is None:
            return None, []
        cutoff = await self.store.retention.cutoff(older_than_days)
        return cutoff, await self.store.retention.prunable(cutoff)

    async def prune(self, older_than_days: float) -> retention.PruneResult | None:
        """Delete the finished runs older than ``older_than_days`` as a server's retention does
        (None: no tables yet, nothing to delete)."""
        if self.store is None:
            return None
        return await retention.prune(self.store, older_than_days)

    # -- helpers -----------------------------------------------------------------------------

    async def _configured_actor(self, actor: str) -> str:
        """``actor`` if it is configured: keyed schedules run only for configured actors."""
        name = actor.strip()
        if name in self._configured:
            return name
        task = await self.store.operator.task(name) if self.store is not None else None
        if task is not None:
            raise ActorRemoved(name)
        raise await self._unknown(name)

    async def _existing(self, actor: str) -> str:
        """``actor`` if it is configured or has a task (even a removed one)."""
        name = actor.strip()
        if name in self._configured:
            return name
        if self.store is not None and await self.store.operator.task(name) is not None:
            return name
        raise await self._unknown(name)

    async def _why_no_task(self, actor: str) -> OperationError:
        """Why a change found no current task row for ``actor``."""
        task = await self.store.operator.task(actor) if self.store is not None else None
        if task is not None:
            return ActorRemoved(actor)
        if actor in self._configured:
            return NotStarted(actor)
        return await self._unknown(actor)

    async def _unknown(self, actor: str) -> UnknownActor:
        known = set(self._configured)
        if self.store is not None:
            known |= {r["actor"] for r in await self.store.operator.status()}
        names = sorted(known)
        return UnknownActor(actor, closest(actor, names), names)

    def _actor_status(self, name: str, row: Any) -> ActorStatus:
        cfg = self._configured.get(name)
        return ActorStatus(
            actor=name,
            in_config=cfg is not None,
            registered=row is not None,
            schedule=describe_schedule(cfg.schedule) if cfg is not None else None,
            timezone=self.zone(name),
            enabled=row["enabled"] if row is not None else bool(cfg and cfg.enabled),
            paused=bool(row and row["paused"]),
            paused_reason=row["paused_reason"] if row is not None else None,
            setup_error=(row.get("setup_error") or None) if row is not None else None,
            next_run=row["next_run"] if row is not None else None,
            last_status=stored_status(row["last_status"]) if row is not None else None,
            last_run_at=row["last_run_at"] if row is not None else None,
            consecutive_failures=int(row["consecutive_failures"]) if row is not None else 0,
            running=int(row["running"]) if row is not None else 0,
            trigger_pending=bool(row and row["manual_at"] is not None),
            retry_at=row["retry_at"] if row is not None else None,
            keyed=int(row["keyed"]) if row is not None else 0,
            refused=int(row["refused"]) if row is not None else 0,
            refused_key=row["refused_key"] if row is not None else None,
            refused_reason=row["refused_reason"] if row is not None else None,
        )

    def _run_info(self, r: Any, *, traceback: bool = False) -> RunInfo:
        return RunInfo.from_record(r, self.zone(r["actor"]), traceback=traceback)


# --------------------------------------------------------------------------------------------
# Formatting shared by the text front ends


def schedule_json(s: KeyedSchedule) -> dict[str, Any]:
    """A keyed schedule as ``discord-actor schedules list --json`` prints it."""
    return {
        "actor": s.actor,
        "key": s.key,
        "next_run": iso(s.next_run),
        "schedule": s.schedule,
        "payload": s.payload,
        "channel_id": s.channel_id,
        "owner": s.owner,
        "paused": s.paused,
        "last_status": s.last_status,
    }


def describe_keyed(s: KeyedSchedule) -> str:
    """A keyed schedule's definition in one line, as ``describe_schedule`` says a configured
    one (an interval says its zone too: its times are shown in it)."""
    return describe_stored(s.schedule)


def iso(value: datetime | None, tz: tzinfo | None = None) -> str | None:
    if value is None:
        return None
    return (value.astimezone(tz) if tz is not None else value).isoformat()


def when(value: datetime | None, tz: tzinfo | None = None) -> str:
    """A time for a person (``format_slot``), in ``tz`` when given; ``-`` for none."""
    if value is None:
        return "-"
    return format_slot(value.astimezone(tz) if tz is not None else value)


def describe_schedule(cfg: ScheduleConfig) -> str:
    """One line a person reads: ``every 10 s``, ``cron '0 9 * * 1-5' (Europe/Berlin)``."""
    return describe(cfg)


def format_duration(ms: float | None) -> str:
    """A run's duration as measured (claim to recorded outcome, by the database's clock):
    ``2.1 ms`` under a second, ``1.25 s`` under a minute, ``3 min 05 s`` beyond."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes} min {seconds:02d} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned columns, one string per line (headers first)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]


def one_line(text: str) -> str:
    return " ".join(text.split())


def shorten(text: str, width: int) -> str:
    """At most ``width`` characters, an ellipsis where it was cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "\N{HORIZONTAL ELLIPSIS}"
