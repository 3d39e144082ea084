"""Every SQL statement on the tasks, runs, retries and instances tables.

All statements are parameterized; the only thing formatted into SQL text is the schema name,
which the configuration validates as a plain identifier and which is quoted here.

Hot path: a run costs at most two round trips, ``claim`` (one statement that locks the tasks,
advances their next slots and inserts the runs, for every run due in a pass) and ``finish_many``
(one statement that records outcomes, each through the ``finish_run`` function: the run, the new
state, the retry and the circuit breaker together). ``due_window`` is how the scheduler learns
what is due: a read through the due-time indexes, every poll interval, not per run. Each task
row counts its runs in flight (``running``), so that ``max_instances`` is checked on the locked
row itself: a count of the runs table would be read from the statement's snapshot, which a
concurrent claim can outdate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..storable import storable_json


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# What the scheduler keeps of a task that has work due soon: returned by the due window, by
# ``views`` and by ``finish``. The retry is the task's earliest pending one.
TASK_VIEW_COLUMNS = """
t.id, t.actor, t.enabled, t.paused, t.max_instances, t.next_run, t.due_at,
q.scheduled_for AS retry_slot, q.attempt AS retry_attempt, q.retry_at, t.manual_at
"""
EARLIEST_RETRY_SQL = """
LEFT JOIN LATERAL (
    SELECT scheduled_for, attempt, retry_at FROM {retries}
    WHERE task_id = t.id ORDER BY retry_at, scheduled_for, attempt LIMIT 1
) q ON true
"""

# What is due up to $1, earliest first, at most $2 of each kind: scheduled slots, manual
# triggers and retries, each through its own index. ``kind`` says which part found the row, so
# that the caller can tell whether a part was cut off by the limit.
DUE_WINDOW_SQL = """
WITH due AS (
    (SELECT id, 's' AS kind, due_at AS at FROM {tasks}
     WHERE due_at <= $1 AND enabled AND NOT paused AND removed_at IS NULL
       AND running < max_instances
     ORDER BY due_at LIMIT $2)
    UNION ALL
    (SELECT id, 'm', manual_at FROM {tasks}
     WHERE manual_at IS NOT NULL AND enabled AND NOT paused AND removed_at IS NULL
       AND running < max_instances
     LIMIT $2)
    UNION ALL
    (SELECT task_id, 'r', retry_at FROM {retries} WHERE retry_at <= $1 ORDER BY retry_at LIMIT $2)
)
SELECT due.kind, due.at, {columns}
FROM due JOIN {tasks} t ON t.id = due.id
{earliest_retry}
WHERE t.enabled AND NOT t.paused AND t.removed_at IS NULL
"""


class TaskView:
    """The scheduler's copy of one task row with work due soon."""

    __slots__ = (
        "actor",
        "due_at",
        "enabled",
        "id",
        "manual_at",
        "max_instances",
        "next_run",
        "paused",
        "retry_at",
        "retry_attempt",
        "retry_slot",
    )

    def __init__(
        self,
        id: int,
        actor: str,
        enabled: bool,
        paused: bool,
        max_instances: int,
        next_run: datetime | None,
        due_at: datetime | None,
        retry_slot: datetime | None,
        retry_attempt: int | None,
        retry_at: datetime | None,
        manual_at: datetime | None,
    ) -> None:
        self.id = id
        self.actor = actor
        self.enabled = enabled
        self.paused = paused
        self.max_instances = max_instances
        self.next_run = next_run
        self.due_at = due_at
        self.retry_slot = retry_slot
        self.retry_attempt = retry_attempt
        self.retry_at = retry_at
        self.manual_at = manual_at

    def __repr__(self) -> str:
        return (
            f"TaskView(id={self.id}, actor={self.actor!r}, due_at={self.due_at},"
            f" retry_at={self.retry_at}, manual_at={self.manual_at})"
        )

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> TaskView:
        return cls(
            r["id"],
            r["actor"],
            r["enabled"],
            r["paused"],
            r["max_instances"],
            r["next_run"],
            r["due_at"],
            r["retry_slot"],
            r["retry_attempt"],
            r["retry_at"],
            r["manual_at"],
        )

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
    """

    views: list[TaskView]
    complete_until: datetime


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


@dataclass(frozen=True)
class ClaimRequest:
    """One piece of due work the scheduler wants to start.

    ``kind`` says which pending item of the task it is (its scheduled slot, a retry or a manual
    trigger) and ``expected`` is that item's value as the scheduler last saw it, so that two
    processes can never both claim it.
    """

    task_id: int
    kind: str  # "schedule" | "retry" | "manual"
    expected: datetime
    attempt: int
    scheduled_for: datetime
    trigger: str
    status: str = "running"  # "skipped" records missed slots without running them
    new_next_run: datetime | None = None  # kind "schedule": the task's next slot after this
    new_due_at: datetime | None = None
    note: str | None = None


@dataclass(frozen=True)
class ClaimedRun:
    run_id: int
    task_id: int
    actor: str
    scheduled_for: datetime
    attempt: int
    trigger: str
    status: str
    state: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as ``finish`` records it."""

    status: str  # succeeded | failed | timed_out | cancelled
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    posted: Sequence[dict[str, Any]] = ()
    state_json: str | None = None  # the new state as JSON; None keeps what is stored
    retry_at: datetime | None = None  # schedule attempt + 1 of the same slot at this time
    counts_as_failure: bool = False  # towards the circuit breaker
    max_consecutive_failures: int = 5


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
class TaskChange:
    """What an operator's pause, resume or trigger found on the task row (as it was before the
    change, locked) and whether it applied."""

    applied: bool  # False: refused by the precondition (a trigger of a paused/disabled actor)
    enabled: bool
    was_paused: bool
    paused_reason: str | None  # before the change
    was_pending: bool  # a manual trigger was already waiting
    next_run: datetime | None  # after the change (None also when not applied)


NOTICE_REASON_CHARS = 1000  # of a reason, in a notification (NOTIFY payloads are < 8000 bytes)


@dataclass(frozen=True)
class Finished:
    task: TaskView
    consecutive_failures: int
    paused_reason: str | None
    breaker_tripped: bool


class Store:
    """The database layer of the runtime and the CLI."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        s = quote_ident(schema)
        self._tasks = f"{s}.tasks"
        self._runs = f"{s}.runs"
        self._instances = f"{s}.instances"
        self._retries = f"{s}.retries"
        tables = {"tasks": self._tasks, "runs": self._runs, "retries": self._retries}
        earliest_retry = EARLIEST_RETRY_SQL.format(**tables)
        self._views_sql = (
            f"SELECT {TASK_VIEW_COLUMNS} FROM {self._tasks} t {earliest_retry}"
            " WHERE t.id = ANY($1::bigint[])"
        )
        self._window_sql = DUE_WINDOW_SQL.format(
            columns=TASK_VIEW_COLUMNS, earliest_retry=earliest_retry, **tables
        )
        self._claim_sql = _CLAIM_SQL.format(**tables)
        self._finish_many_sql = _FINISH_MANY_SQL.format(schema=s)

    # -- processes -------------------------------------------------------------------------

    async def register_instance(
        self, instance_id: str, hostname: str, pid: int, lease_seconds: float
    ) -> None:
        await self.pool.execute(
            f"INSERT INTO {self._instances} (id, hostname, pid, lease_seconds)"
            " VALUES ($1, $2, $3, $4)",
            instance_id,
            hostname,
            pid,
            lease_seconds,
        )

    async def heartbeat(self, instance_id: str) -> list[str] | None:
        """Renew this process's lease and return the live processes (``live_instances``);
        None if another process already declared this one dead."""
        row = await self.pool.fetchrow(
            f"WITH renewed AS (UPDATE {self._instances} SET heartbeat_at = now()"
            " WHERE id = $1 RETURNING id)"
            " SELECT EXISTS (SELECT 1 FROM renewed) AS renewed,"
            f" ARRAY(SELECT id FROM {self._instances}"
            "  WHERE id = $1 OR heartbeat_at >= now() - make_interval(secs => lease_seconds)"
            "  ORDER BY id) AS live",
            instance_id,
        )
        return list(row["live"]) if row is not None and row["renewed"] else None

    async def live_instances(self) -> list[str]:
        """The processes whose lease is current, in a stable order (their ids)."""
        rows = await self.pool.fetch(
            f"SELECT id FROM {self._instances}"
            " WHERE heartbeat_at >= now() - make_interval(secs => lease_seconds) ORDER BY id"
        )
        return [r["id"] for r in rows]

    async def unregister_instance(self, instance_id: str) -> None:
        await self.pool.execute(f"DELETE FROM {self._instances} WHERE id = $1", instance_id)

    async def recover_abandoned(self, retry_at: datetime) -> list[asyncpg.Record]:
        """Mark the running runs of dead processes ``abandoned`` and schedule their retries.

        A process is dead when its heartbeat is older than its lease. A run that still has
        attempts left gets a retry of the same slot at ``retry_at``.
        """
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            WITH dead AS (
                DELETE FROM {self._instances}
                WHERE heartbeat_at < now() - make_interval(secs => lease_seconds)
                RETURNING id
            ), lost AS (
                UPDATE {self._runs} r SET status = 'abandoned', finished_at = now(),
                    duration_ms = extract(epoch FROM now() - r.started_at) * 1000,
                    error_type = 'Abandoned',
                    error_message = 'the process running it stopped renewing its lease'
                WHERE r.status = 'running'
                  AND (r.instance_id IN (SELECT id FROM dead)
                       OR r.instance_id NOT IN (SELECT id FROM {self._instances}))
                RETURNING r.id, r.task_id, r.scheduled_for, r.attempt, r.instance_id
            ), per_task AS (
                SELECT task_id, count(*) AS n, max(id) AS last_id FROM lost GROUP BY task_id
            ), counted AS (
                UPDATE {self._tasks} t SET
                    running = greatest(t.running - p.n, 0),
                    last_status = 'abandoned', last_run_id = p.last_id, last_run_at = now(),
                    updated_at = now()
                FROM per_task p WHERE t.id = p.task_id
            ), retried AS (
                INSERT INTO {self._retries} (task_id, scheduled_for, attempt, retry_at)
                SELECT l.task_id, l.scheduled_for, l.attempt + 1, $1
                FROM lost l JOIN {self._tasks} t ON t.id = l.task_id
                WHERE l.attempt < t.max_attempts
                ON CONFLICT DO NOTHING
            )
            SELECT l.id AS run_id, t.actor, l.scheduled_for, l.attempt, l.instance_id
            FROM lost l JOIN {self._tasks} t ON t.id = l.task_id
            """,
            retry_at,
        )
        return rows

    # -- configuration -----------------------------------------------------------------------

    async def reconcile(self, specs: Sequence[TaskSpec], now: datetime) -> None:
        """Make the tasks table match the configuration.

        New actors get a row; a changed schedule (different hash) restarts from its initial
        slot; "immediate" actors get a slot at every start; actors gone from the config are
        marked removed and keep their history.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                f"discord_actor.reconcile.{self.schema}",
            )
            await conn.execute(
                f"""
                INSERT INTO {self._tasks} AS t (actor, enabled, schedule, schedule_hash,
                    max_instances, max_attempts, next_run, due_at)
                SELECT * FROM unnest($1::text[], $2::bool[], $3::jsonb[], $4::text[],
                    $5::int[], $6::int[], $7::timestamptz[], $8::timestamptz[])
                ON CONFLICT (actor) DO UPDATE SET
                    enabled = EXCLUDED.enabled,
                    removed_at = NULL,
                    max_instances = EXCLUDED.max_instances,
                    max_attempts = EXCLUDED.max_attempts,
                    schedule = EXCLUDED.schedule,
                    schedule_hash = EXCLUDED.schedule_hash,
                    next_run = CASE WHEN t.schedule_hash <> EXCLUDED.schedule_hash
                                      OR EXCLUDED.actor = ANY($9::text[])
                                    THEN EXCLUDED.next_run ELSE t.next_run END,
                    due_at = CASE WHEN t.schedule_hash <> EXCLUDED.schedule_hash
                                    OR EXCLUDED.actor = ANY($9::text[])
                                  THEN EXCLUDED.due_at ELSE t.due_at END,
                    updated_at = now()
                -- An unchanged actor is not written again (10,000 of them at every start).
                WHERE t.removed_at IS NOT NULL
                   OR t.enabled IS DISTINCT FROM EXCLUDED.enabled
                   OR t.max_instances IS DISTINCT FROM EXCLUDED.max_instances
                   OR t.max_attempts IS DISTINCT FROM EXCLUDED.max_attempts
                   OR t.schedule_hash IS DISTINCT FROM EXCLUDED.schedule_hash
                   OR EXCLUDED.actor = ANY($9::text[])
                """,
                [s.actor for s in specs],
                [s.enabled for s in specs],
                [s.schedule_json for s in specs],
                [s.schedule_hash for s in specs],
                [s.max_instances for s in specs],
                [s.max_attempts for s in specs],
                [s.initial_slot for s in specs],
                [s.initial_due for s in specs],
                [s.actor for s in specs if s.on_every_start],
            )
            await conn.execute(
                f"UPDATE {self._tasks} SET removed_at = now(), updated_at = now()"
                " WHERE removed_at IS NULL AND actor NOT IN (SELECT unnest($1::text[]))",
                [s.actor for s in specs],
            )
            # Other running servers look at what is due again (a schedule may have changed).
            await conn.execute("SELECT pg_notify($1, '')", self.channel)

    async def record_setup(self, failed: dict[str, str], succeeded: Sequence[str]) -> None:
        """Keep each actor's setup() failure on its task (``failed``: actor -> error), and
        clear it for the actors whose setup() succeeded at this start."""
        await self.pool.execute(
            f"UPDATE {self._tasks} t SET setup_error = s.error,"
            " setup_error_at = CASE WHEN s.error IS NULL THEN NULL ELSE now() END,"
            " updated_at = now()"
            " FROM unnest($1::text[], $2::text[]) AS s(actor, error)"
            " WHERE t.actor = s.actor AND t.setup_error IS DISTINCT FROM s.error",
            [*failed, *succeeded],
            [*failed.values(), *(None for _ in succeeded)],
        )

    # -- the scheduler's hot path ---------------------------------------------------------

    async def due_window(self, until: datetime, limit: int) -> DueWindow:
        """The tasks that may run and have work due up to ``until`` (at most ~``limit`` each of
        slots, triggers and retries), read through the due-time indexes."""
        rows = await self.pool.fetch(self._window_sql, until, limit)
        views: dict[int, TaskView] = {}
        complete_until = until
        counts = {"s": 0, "r": 0}
        last: dict[str, datetime | None] = {"s": None, "r": None}
        for r in rows:
            kind = r["kind"]
            if kind in counts:
                counts[kind] += 1
                at = last[kind]
                if at is None or r["at"] > at:
                    last[kind] = r["at"]
            if r["id"] not in views:
                views[r["id"]] = TaskView.from_record(r)
        for kind, count in counts.items():
            at = last[kind]
            if count >= limit and at is not None and at < complete_until:
                complete_until = at
        return DueWindow(list(views.values()), complete_until)

    async def views(self, task_ids: Sequence[int]) -> list[TaskView]:
        """The current rows of these tasks (whatever their state)."""
        rows = await self.pool.fetch(self._views_sql, list(task_ids))
        return [TaskView.from_record(r) for r in rows]

    async def claim(
        self, instance_id: str, requests: Sequence[ClaimRequest], now: datetime
    ) -> list[ClaimedRun]:
        """Start the requested runs that are still due; others may have taken the rest."""
        if not requests:
            return []
        rows = await self.pool.fetch(
            self._claim_sql,
            instance_id,
            [r.task_id for r in requests],
            [r.kind for r in requests],
            [r.expected for r in requests],
            [r.attempt for r in requests],
            [r.scheduled_for for r in requests],
            [r.trigger for r in requests],
            [r.status for r in requests],
            [r.new_next_run for r in requests],
            [r.new_due_at for r in requests],
            [r.note for r in requests],
            now,
        )
        return [
            ClaimedRun(
                run_id=r["id"],
                task_id=r["task_id"],
                actor=r["actor"],
                scheduled_for=r["scheduled_for"],
                attempt=r["attempt"],
                trigger=r["trigger"],
                status=r["status"],
                state=json.loads(r["state"]),
            )
            for r in rows
        ]

    async def finish(self, run_id: int, outcome: Outcome) -> Finished | None:
        """Record a run's outcome; None if the run was no longer ours (declared abandoned)."""
        return (await self.finish_many([(run_id, outcome)]))[0]

    async def finish_many(
        self, outcomes: Sequence[tuple[int, Outcome]]
    ) -> list[Finished | None]:
        """Record many runs' outcomes in one statement and one transaction, each applied on its
        own and in order; per run, what ``finish`` returns."""
        rows = await self.pool.fetch(
            self._finish_many_sql,
            [run_id for run_id, _ in outcomes],
            [o.status for _, o in outcomes],
            [o.error_type for _, o in outcomes],
            [o.error_message for _, o in outcomes],
            [o.error_traceback for _, o in outcomes],
            [_posted_json(o.posted) for _, o in outcomes],
            [o.state_json for _, o in outcomes],
            [o.retry_at for _, o in outcomes],
            [o.counts_as_failure for _, o in outcomes],
            [o.max_consecutive_failures for _, o in outcomes],
        )
        results: list[Finished | None] = [None] * len(outcomes)
        for row in rows:
            index = row["n"] - 1
            results[index] = _finished(row, outcomes[index][1])
        return results

    async def checkpoint(self, task_id: int, run_id: int, state_json: str) -> bool:
        """Save a running run's state (JSON text) now; False if the run is no longer running."""
        status: str = await self.pool.execute(
            f"UPDATE {self._tasks} SET state = $3::jsonb, updated_at = now() WHERE id = $1"
            f" AND EXISTS (SELECT 1 FROM {self._runs} WHERE id = $2 AND status = 'running')",
            task_id,
            run_id,
            state_json,
        )
        return status != "UPDATE 0"

    async def set_state(self, actor: str, state: dict[str, Any]) -> None:
        """Replace an actor's stored state (tests and operators; not while it runs)."""
        await self.pool.execute(
            f"UPDATE {self._tasks} SET state = $2::jsonb, updated_at = now() WHERE actor = $1",
            actor,
            json.dumps(state),
        )

    async def retries(self, actor: str) -> list[asyncpg.Record]:
        """The actor's pending retries, earliest first."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"SELECT q.* FROM {self._retries} q JOIN {self._tasks} t ON t.id = q.task_id"
            " WHERE t.actor = $1 ORDER BY q.retry_at, q.scheduled_for, q.attempt",
            actor,
        )
        return rows

    # -- operator commands -------------------------------------------------------------------

    async def status(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            SELECT t.*, q.retry_at
            FROM {self._tasks} t
            LEFT JOIN LATERAL (SELECT min(retry_at) AS retry_at FROM {self._retries}
                               WHERE task_id = t.id) q ON true
            WHERE t.removed_at IS NULL ORDER BY t.actor
            """
        )
        return rows

    async def task(self, actor: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(f"SELECT * FROM {self._tasks} WHERE actor = $1", actor)

    async def history(
        self, actor: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            SELECT r.*, t.actor FROM {self._runs} r JOIN {self._tasks} t ON t.id = r.task_id
            WHERE ($1::text IS NULL OR t.actor = $1) AND ($2::text IS NULL OR r.status = $2)
            ORDER BY r.started_at DESC, r.id DESC LIMIT $3
            """,
            actor,
            status,
            limit,
        )
        return rows

    async def run(self, run_id: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT r.*, t.actor FROM {self._runs} r JOIN {self._tasks} t ON t.id = r.task_id"
            " WHERE r.id = $1",
            run_id,
        )

    async def pause(
        self, actor: str, reason: str | None, by: Operator | None = None
    ) -> TaskChange | None:
        """Pause; ``reason`` is stored as given (``Operator.reason`` adds who paused). None when
        the actor has no task (or it was removed from the configuration)."""
        reason = reason or "paused by an operator"
        return await self._change(
            "paused = true, paused_reason = $2, paused_at = now()",
            "true",
            actor,
            reason,
            notice=_notice(actor, "paused", by, reason),
        )

    async def resume(
        self,
        actor: str,
        by: Operator | None = None,
        *,
        moved: tuple[datetime, datetime, datetime] | None = None,
    ) -> TaskChange | None:
        """Unpause and reset the failure count (the circuit breaker starts afresh).

        ``moved`` (``schedules.resume_slot``): (the next slot as the caller read it, which passed
        while the actor was paused; the first slot after now; its due time). If the actor was
        paused and its stored slot is still the one read, it moves on, so that the slots passed
        while paused are not caught up.
        """
        passed, next_run, due_at = moved or (None, None, None)
        return await self._change(
            "paused = false, paused_reason = NULL, paused_at = NULL, consecutive_failures = 0,"
            " next_run = CASE WHEN old.paused AND t.next_run = $2 THEN $3 ELSE t.next_run END,"
            " due_at = CASE WHEN old.paused AND t.next_run = $2 THEN $4 ELSE t.due_at END",
            "true",
            actor,
            passed,
            next_run,
            due_at,
            notice=_notice(actor, "resumed", by),
        )

    async def trigger(self, actor: str, by: Operator | None = None) -> TaskChange | None:
        """Ask a running server to run the actor now (coalesced with a pending trigger).

        Refused (``applied`` False) when the actor is paused or disabled: checked on the locked
        row by the same statement that sets the trigger."""
        return await self._change(
            "manual_at = coalesce(t.manual_at, clock_timestamp())",
            "old.enabled AND NOT old.paused",
            actor,
            notice=_notice(actor, "triggered", by),
        )

    # -- retention ---------------------------------------------------------------------------

    async def retention_cutoff(self, older_than_days: float) -> datetime:
        """The database's now minus the retention period: runs that finished before it go."""
        cutoff: datetime = await self.pool.fetchval(
            "SELECT now() - make_interval(secs => $1)", older_than_days * 86400.0
        )
        return cutoff

    async def prunable(self, cutoff: datetime) -> list[tuple[str, int]]:
        """(actor, how many of its finished runs finished before ``cutoff``), by actor."""
        rows = await self.pool.fetch(
            f"SELECT t.actor, count(*) AS n FROM {self._runs} r"
            f" JOIN {self._tasks} t ON t.id = r.task_id"
            " WHERE r.status <> 'running' AND r.finished_at < $1"
            " GROUP BY t.actor ORDER BY t.actor",
            cutoff,
        )
        return [(r["actor"], r["n"]) for r in rows]

    async def prune_batch(self, cutoff: datetime, limit: int) -> int | None:
        """Delete at most ``limit`` finished runs that finished before ``cutoff``, oldest first;
        how many. None, deleting nothing, while another process holds the retention lock (one
        deleter at a time: concurrent deletes of the same rows would only wait on each other)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", self.retention_lock
            ):
                return None
            status: str = await conn.execute(
                f"DELETE FROM {self._runs} WHERE id IN ("
                f" SELECT id FROM {self._runs} WHERE status <> 'running' AND finished_at < $1"
                " ORDER BY finished_at LIMIT $2)",
                cutoff,
                limit,
            )
        return int(status.split()[-1])

    @property
    def retention_lock(self) -> str:
        """The advisory lock's name (hashed by ``hashtext``) a process holds while it deletes
        old runs of this schema."""
        return f"discord_actor.retention.{self.schema}"

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel that wakes running servers after operator commands."""
        channel = f"discord_actor.{self.schema}"
        if len(channel) > 63:  # PostgreSQL's identifier limit
            channel = "discord_actor." + hashlib.sha256(self.schema.encode()).hexdigest()[:32]
        return channel

    async def _change(self, assignments: str, allowed: str, actor: str, *args: Any,
                      notice: str) -> TaskChange | None:
        """An operator's change to one task, its precondition (``allowed``, on the row as it
        was) checked in the same statement, on the row locked; the running servers are told
        (``notice``: what happened, as JSON, which they log) when it was applied."""
        sql = f"""
            WITH old AS (
                SELECT id, enabled, paused, paused_reason, manual_at FROM {self._tasks}
                WHERE actor = $1 AND removed_at IS NULL FOR UPDATE
            ), changed AS (
                UPDATE {self._tasks} t SET {assignments}, updated_at = now()
                FROM old WHERE t.id = old.id AND ({allowed})
                RETURNING t.next_run
            )
            SELECT old.*, c.next_run, EXISTS (SELECT 1 FROM changed) AS applied
            FROM old LEFT JOIN changed c ON true
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql, actor, *args)
            if row is None:
                return None
            if row["applied"]:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, notice)
        return TaskChange(
            applied=row["applied"],
            enabled=row["enabled"],
            was_paused=row["paused"],
            paused_reason=row["paused_reason"],
            was_pending=row["manual_at"] is not None,
            next_run=row["next_run"],
        )


def _notice(actor: str, action: str, by: Operator | None, reason: str | None = None) -> str:
    """The notification of an operator's action: JSON that running servers log."""
    notice: dict[str, Any] = {"actor": actor, "action": action}
    if by is not None:
        notice |= {"who": by.who, "where": by.where}
    if reason:
        notice["reason"] = reason[:NOTICE_REASON_CHARS]
    return json.dumps(notice)


def describe_notice(payload: str) -> str | None:
    """A log line for an operator's action from its notification; None for other ones."""
    try:
        notice = json.loads(payload)
        actor, action = notice["actor"], notice["action"]
    except (ValueError, TypeError, KeyError):
        return None  # reconcile's empty payload, or an older version's plain actor name
    who = f"{notice['who']} via {notice['where']}" if "who" in notice else "an operator"
    reason = f": {notice['reason']}" if notice.get("reason") else ""
    return f"{who} {action} {actor}{reason}"


_CLAIM_SQL = """
WITH want AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $5::int[],
                         $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[],
                         $10::timestamptz[], $11::text[])
        AS w(task_id, kind, expected, attempt, scheduled_for, trigger, status,
             new_next_run, new_due_at, note)
), picked AS (
    SELECT t.id, t.actor, t.state, w.*
    FROM {tasks} t JOIN want w ON w.task_id = t.id
    WHERE t.enabled AND NOT t.paused AND t.removed_at IS NULL
      AND CASE w.kind
            WHEN 'schedule' THEN t.next_run = w.expected AND t.due_at <= $12
            WHEN 'retry' THEN EXISTS (
                SELECT 1 FROM {retries} q
                WHERE q.task_id = t.id AND q.scheduled_for = w.expected
                  AND q.attempt = w.attempt AND q.retry_at <= $12)
            ELSE t.manual_at = w.expected
          END
      AND (w.status = 'skipped' OR t.running < t.max_instances)
    FOR UPDATE OF t SKIP LOCKED
), consumed AS (
    DELETE FROM {retries} q USING picked p
    WHERE p.kind = 'retry' AND q.task_id = p.id AND q.scheduled_for = p.expected
      AND q.attempt = p.attempt
), started AS (
    INSERT INTO {runs} (task_id, scheduled_for, trigger, attempt, status, instance_id,
                        finished_at, duration_ms, error_message)
    SELECT p.id, p.scheduled_for, p.trigger, p.attempt, p.status, $1,
           CASE WHEN p.status = 'skipped' THEN now() END,
           CASE WHEN p.status = 'skipped' THEN 0 END,
           p.note
    FROM picked p
    ON CONFLICT (task_id, scheduled_for, attempt) DO NOTHING
    RETURNING id, task_id, scheduled_for, attempt, trigger, status
), advanced AS (
    UPDATE {tasks} t SET
        next_run = CASE WHEN p.kind = 'schedule' THEN p.new_next_run ELSE t.next_run END,
        due_at = CASE WHEN p.kind = 'schedule' THEN p.new_due_at ELSE t.due_at END,
        manual_at = CASE WHEN p.kind = 'manual' THEN NULL ELSE t.manual_at END,
        running = t.running + CASE WHEN s.status = 'running' THEN 1 ELSE 0 END,
        last_status = CASE WHEN s.status = 'skipped' THEN 'skipped' ELSE t.last_status END,
        updated_at = now()
    FROM picked p LEFT JOIN started s ON s.task_id = p.id
    WHERE t.id = p.id
)
SELECT s.*, t.actor, t.state FROM started s JOIN {tasks} t ON t.id = s.task_id
"""


def _posted_json(posted: Sequence[dict[str, Any]]) -> str:
    return storable_json(list(posted)) if posted else "[]"


def _finished(row: asyncpg.Record, outcome: Outcome) -> Finished:
    task = TaskView.from_record(row)
    if outcome.retry_at is not None and (
        task.retry_at is None or outcome.retry_at < task.retry_at
    ):
        # The retry this statement queued is not in its own snapshot.
        task.retry_slot, task.retry_attempt = row["scheduled_for"], row["attempt"] + 1
        task.retry_at = outcome.retry_at
    return Finished(
        task=task,
        consecutive_failures=row["consecutive_failures"],
        paused_reason=row["paused_reason"],
        breaker_tripped=row["paused"] and not row["was_paused"],
    )


# Each outcome goes through the schema's finish_run function (migration 0003), in order.
_FINISH_MANY_SQL = """
SELECT i.n, f.*
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
            $7::jsonb[], $8::timestamptz[], $9::bool[], $10::int[]) WITH ORDINALITY
     AS i(run_id, status, error_type, error_message, error_traceback, posted, state, retry_at,
          counts_as_failure, max_failures, n)
CROSS JOIN LATERAL {schema}.finish_run(i.run_id, i.status, i.error_type, i.error_message,
    i.error_traceback, i.posted, i.state, i.retry_at, i.counts_as_failure, i.max_failures) f
ORDER BY i.n
"""
