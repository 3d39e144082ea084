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
from collections import Counter
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
q.scheduled_for AS retry_slot, q.attempt AS retry_attempt, q.retry_at, t.manual_at,
t.key, CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule::text END AS keyed_schedule
"""
# The zone a keyed schedule's runs are shown in (its own; NULL: its actor's).
KEYED_ZONE_SQL = "CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule->>'timezone' END AS key_zone"
# A keyed schedule obeys its actor's switches, which live on the actor's row (key NULL).
ACTOR_LIVE_SQL = """(t.key IS NULL OR EXISTS (
    SELECT 1 FROM {tasks} a WHERE a.actor = t.actor AND a.key IS NULL
      AND a.enabled AND NOT a.paused AND a.removed_at IS NULL))"""
# A keyed schedule is pending while it has anything left to run: a slot, a trigger, a run in
# flight or a retry. A ``once`` that has run, or used up its retries, is not.
PENDING_SQL = """(t.removed_at IS NULL AND (t.next_run IS NOT NULL OR t.running > 0
    OR t.manual_at IS NOT NULL OR EXISTS (SELECT 1 FROM {retries} p WHERE p.task_id = t.id)))"""
EARLIEST_RETRY_SQL = """
LEFT JOIN LATERAL (
    SELECT scheduled_for, attempt, retry_at FROM {retries}
    WHERE task_id = t.id ORDER BY retry_at, scheduled_for, attempt LIMIT 1
) q ON true
"""

# What is due up to $1, earliest first, at most $2 of each kind: scheduled slots, manual
# triggers and retries, each through its own index. ``kind`` says which part found the row, so
# that the caller can tell whether a part was cut off by the limit. MATERIALIZED: the due rows
# are found once; inlined, a plan made on stale statistics (a table just filled) ran the whole
# union again for every task row it joined (3 s for 2,000 rows instead of 10 ms).
DUE_WINDOW_SQL = """
WITH due AS MATERIALIZED (
    (SELECT t.id, 's' AS kind, t.due_at AS at FROM {tasks} t
     WHERE t.due_at <= $1 AND t.enabled AND NOT t.paused AND t.removed_at IS NULL
       AND t.running < t.max_instances AND {actor_live}
     ORDER BY t.due_at LIMIT $2)
    UNION ALL
    (SELECT t.id, 'm', t.manual_at FROM {tasks} t
     WHERE t.manual_at IS NOT NULL AND t.enabled AND NOT t.paused AND t.removed_at IS NULL
       AND t.running < t.max_instances AND {actor_live}
     LIMIT $2)
    UNION ALL
    (SELECT task_id, 'r', retry_at FROM {retries} WHERE retry_at <= $1 ORDER BY retry_at LIMIT $2)
)
SELECT due.kind, due.at, {columns}
FROM due JOIN {tasks} t ON t.id = due.id
{earliest_retry}
WHERE t.enabled AND NOT t.paused AND t.removed_at IS NULL AND {actor_live}
"""


class TaskView:
    """The scheduler's copy of one task row with work due soon."""

    __slots__ = (
        "actor",
        "due_at",
        "enabled",
        "id",
        "key",
        "keyed_schedule",
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
        key: str | None = None,
        keyed_schedule: str | None = None,
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
        self.key = key  # None: the actor's configured schedule
        self.keyed_schedule = keyed_schedule  # a keyed schedule's definition (JSON text)

    def __repr__(self) -> str:
        return (
            f"TaskView(id={self.id}, actor={self.actor!r}, key={self.key!r}, due_at={self.due_at},"
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
            r["key"],
            r["keyed_schedule"],
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
    key: str | None = None  # a keyed schedule's run; None for the configured schedule
    payload: dict[str, Any] | None = None
    channel_id: int | None = None  # a keyed schedule's channel, over the actor's
    keyed_schedule: str | None = None  # a keyed schedule's stored definition (JSON text)


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


@dataclass(frozen=True)
class KeyedWrite:
    """What ``add_keyed`` did: the keys it wrote (new, re-armed or replaced), and of those the
    ones that were pending with another definition (replaced)."""

    written: list[str]
    replaced: list[str]


class KeyConflict(Exception):
    """Keys that are pending with another definition (and ``replace`` was not given)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys)
        self.keys = keys


class LimitExceeded(Exception):
    """Adding would take the pending schedules of an actor (or of one owner) over a limit."""

    def __init__(self, setting: str, limit: int, pending: int, adding: int, owner: str | None):
        super().__init__(setting)
        self.setting, self.limit, self.pending, self.adding, self.owner = (
            setting, limit, pending, adding, owner
        )


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


# A write of at least this many task rows, and at least as many as the planner's statistics
# know of, refreshes those statistics at once: until autovacuum's next look (up to a minute)
# plans made for a table that looked nearly empty read every row where an index would find the
# few wanted (the due window, claims). Smaller writes leave it to autovacuum (ANALYZE of 100,000
# rows takes 0.2 s).
ANALYZE_AFTER_ROWS = 1000

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
        actor_live = ACTOR_LIVE_SQL.format(**tables)
        self._pending = PENDING_SQL.format(**tables)
        self._window_sql = DUE_WINDOW_SQL.format(
            columns=TASK_VIEW_COLUMNS,
            earliest_retry=earliest_retry,
            actor_live=actor_live,
            **tables,
        )
        self._claim_sql = _CLAIM_SQL.format(actor_live=actor_live, **tables)
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
            written = await conn.execute(
                f"""
                INSERT INTO {self._tasks} AS t (actor, enabled, schedule, schedule_hash,
                    max_instances, max_attempts, next_run, due_at)
                SELECT * FROM unnest($1::text[], $2::bool[], $3::jsonb[], $4::text[],
                    $5::int[], $6::int[], $7::timestamptz[], $8::timestamptz[])
                ON CONFLICT (actor) WHERE key IS NULL DO UPDATE SET
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
                " WHERE key IS NULL AND removed_at IS NULL"
                " AND actor NOT IN (SELECT unnest($1::text[]))",
                [s.actor for s in specs],
            )
            # Keyed schedules follow their actor's max_instances and retry.attempts.
            await conn.execute(
                f"UPDATE {self._tasks} k SET max_instances = a.max_instances,"
                " max_attempts = a.max_attempts, updated_at = now()"
                f" FROM {self._tasks} a WHERE a.key IS NULL AND a.actor = k.actor"
                " AND k.key IS NOT NULL AND k.actor = ANY($1::text[])"
                " AND (k.max_instances <> a.max_instances OR k.max_attempts <> a.max_attempts)",
                [s.actor for s in specs],
            )
            # Other running servers look at what is due again (a schedule may have changed).
            await conn.execute("SELECT pg_notify($1, '')", self.channel)
        await self.refresh_statistics(int(written.split()[-1]))

    async def record_setup(self, failed: dict[str, str], succeeded: Sequence[str]) -> None:
        """Keep each actor's setup() failure on its task (``failed``: actor -> error), and
        clear it for the actors whose setup() succeeded at this start."""
        await self.pool.execute(
            f"UPDATE {self._tasks} t SET setup_error = s.error,"
            " setup_error_at = CASE WHEN s.error IS NULL THEN NULL ELSE now() END,"
            " updated_at = now()"
            " FROM unnest($1::text[], $2::text[]) AS s(actor, error)"
            " WHERE t.actor = s.actor AND t.key IS NULL"
            " AND t.setup_error IS DISTINCT FROM s.error",
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
                key=r["key"],
                payload=None if r["payload"] is None else json.loads(r["payload"]),
                channel_id=r["channel_id"],
                keyed_schedule=r["keyed_schedule"],
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
            f"UPDATE {self._tasks} SET state = $2::jsonb, updated_at = now()"
            " WHERE actor = $1 AND key IS NULL",
            actor,
            json.dumps(state),
        )

    async def retries(self, actor: str) -> list[asyncpg.Record]:
        """The actor's pending retries, earliest first."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"SELECT q.* FROM {self._retries} q JOIN {self._tasks} t ON t.id = q.task_id"
            " WHERE t.actor = $1 AND t.key IS NULL ORDER BY q.retry_at, q.scheduled_for, q.attempt",
            actor,
        )
        return rows

    # -- operator commands -------------------------------------------------------------------

    async def status(self, actor: str | None = None) -> list[asyncpg.Record]:
        """Every actor's row (or one actor's), with its earliest retry and how many keyed
        schedules it has pending (counted for the actors asked about only)."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            SELECT t.*, q.retry_at, coalesce(k.keyed, 0) AS keyed
            FROM {self._tasks} t
            LEFT JOIN LATERAL (SELECT min(retry_at) AS retry_at FROM {self._retries}
                               WHERE task_id = t.id) q ON true
            LEFT JOIN (SELECT t.actor, count(*) AS keyed FROM {self._tasks} t
                       WHERE t.key IS NOT NULL AND ($1::text IS NULL OR t.actor = $1)
                         AND {self._pending} GROUP BY t.actor) k
                   ON k.actor = t.actor
            WHERE t.removed_at IS NULL AND t.key IS NULL AND ($1::text IS NULL OR t.actor = $1)
            ORDER BY t.actor
            """,
            actor,
        )
        return rows

    async def task(self, actor: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT * FROM {self._tasks} WHERE actor = $1 AND key IS NULL", actor
        )

    async def task_row(self, task_id: int) -> asyncpg.Record | None:
        """A task row by id: an actor's own, or one of its keyed schedules."""
        return await self.pool.fetchrow(f"SELECT * FROM {self._tasks} WHERE id = $1", task_id)

    async def history(
        self, actor: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            SELECT r.*, t.actor, t.key, {KEYED_ZONE_SQL}
            FROM {self._runs} r JOIN {self._tasks} t ON t.id = r.task_id
            WHERE ($1::text IS NULL OR t.actor = $1) AND ($2::text IS NULL OR r.status = $2)
            ORDER BY r.started_at DESC, r.id DESC LIMIT $3
            """,
            actor,
            status,
            limit,
        )
        return rows

    async def recent_runs(self, actors: Sequence[str], limit: int) -> list[asyncpg.Record]:
        """The newest ``limit`` runs of each of ``actors``, in one statement (the dashboard's
        timelines), without their tracebacks."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            SELECT x.* FROM unnest($1::text[]) AS a(actor), LATERAL (
                SELECT r.id, r.task_id, r.scheduled_for, r.trigger, r.attempt, r.status,
                       r.instance_id, r.started_at, r.finished_at, r.duration_ms, r.error_type,
                       r.error_message, NULL::text AS error_traceback, r.posted, t.actor, t.key,
                       {KEYED_ZONE_SQL}
                FROM {self._runs} r JOIN {self._tasks} t ON t.id = r.task_id
                WHERE t.actor = a.actor
                ORDER BY r.started_at DESC, r.id DESC LIMIT $2
            ) x
            """,
            list(actors),
            limit,
        )
        return rows

    async def run(self, run_id: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT r.*, t.actor, t.key, {KEYED_ZONE_SQL} FROM {self._runs} r"
            f" JOIN {self._tasks} t ON t.id = r.task_id WHERE r.id = $1",
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
            # Those of its keyed schedules whose own circuit breaker tripped start afresh too.
            then=f"UPDATE {self._tasks} SET paused = false, paused_reason = NULL,"
            " paused_at = NULL, consecutive_failures = 0, updated_at = now()"
            " WHERE actor = $1 AND key IS NOT NULL AND removed_at IS NULL AND paused",
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

    # -- keyed schedules (created at run time) ------------------------------------------------

    async def ensure_actor(self, spec: TaskSpec) -> None:
        """Give a configured actor its row if no server has yet (keyed schedules hang on it)."""
        await self.pool.execute(
            f"INSERT INTO {self._tasks} (actor, enabled, schedule, schedule_hash, max_instances,"
            " max_attempts, next_run, due_at) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8)"
            " ON CONFLICT (actor) WHERE key IS NULL DO NOTHING",
            spec.actor,
            spec.enabled,
            spec.schedule_json,
            spec.schedule_hash,
            spec.max_instances,
            spec.max_attempts,
            spec.initial_slot,
            spec.initial_due,
        )

    async def add_keyed(
        self,
        actor: str,
        rows: Sequence[KeyedRow],
        *,
        replace: bool,
        max_pending: int,
        max_per_owner: int | None,
        notify: bool,
    ) -> KeyedWrite:
        """Write keyed schedules of ``actor`` in one transaction, all or none.

        A key that is pending with the same definition is left alone; with another one it is a
        conflict unless ``replace``. A key that is no longer pending (its ``once`` ran, or it
        was removed) is armed again, keeping its history. The limits count pending schedules
        and are checked under a lock on the actor's row, so that concurrent adds cannot pass
        them together.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            actor_row = await conn.fetchrow(
                f"SELECT max_instances, max_attempts FROM {self._tasks}"
                " WHERE actor = $1 AND key IS NULL FOR UPDATE",
                actor,
            )
            if actor_row is None:
                raise LookupError(actor)
            keys = [r.key for r in rows]
            existing = {
                r["key"]: r
                for r in await conn.fetch(
                    f"SELECT t.id, t.key, t.schedule_hash, {self._pending} AS pending"
                    f" FROM {self._tasks} t WHERE t.actor = $1 AND t.key = ANY($2::text[])",
                    actor,
                    keys,
                )
            }
            write: dict[str, KeyedRow] = {}
            conflicts: list[str] = []
            for row in rows:
                old = existing.get(row.key)
                if old is None or not old["pending"] or (replace and old["schedule_hash"]
                                                         != row.definition_hash):
                    write[row.key] = row  # the last of one key given twice wins
                elif old["schedule_hash"] != row.definition_hash:
                    conflicts.append(row.key)
            if conflicts:
                raise KeyConflict(conflicts)
            arming = [
                r for r in write.values() if r.key not in existing or not existing[r.key]["pending"]
            ]
            if arming:
                await self._check_limits(conn, actor, arming, max_pending, max_per_owner)
            if not write:
                return KeyedWrite([], [])
            rewritten = [existing[k]["id"] for k in write if k in existing]
            if rewritten:  # a retry of the old definition has nothing left to retry
                await conn.execute(
                    f"DELETE FROM {self._retries} WHERE task_id = ANY($1::bigint[])", rewritten
                )
            values = list(write.values())
            await conn.execute(
                f"""
                INSERT INTO {self._tasks} AS t (actor, key, schedule, schedule_hash,
                    max_instances, max_attempts, next_run, due_at, payload, channel_id, owner)
                SELECT $1, v.key, v.schedule, v.hash, $2, $3, v.next_run, v.due_at,
                       v.payload, v.channel_id, v.owner
                FROM unnest($4::text[], $5::jsonb[], $6::text[], $7::timestamptz[],
                            $8::timestamptz[], $9::jsonb[], $10::bigint[], $11::text[])
                     AS v(key, schedule, hash, next_run, due_at, payload, channel_id, owner)
                ON CONFLICT (actor, key) WHERE key IS NOT NULL DO UPDATE SET
                    schedule = EXCLUDED.schedule, schedule_hash = EXCLUDED.schedule_hash,
                    next_run = EXCLUDED.next_run, due_at = EXCLUDED.due_at,
                    payload = EXCLUDED.payload, channel_id = EXCLUDED.channel_id,
                    owner = EXCLUDED.owner, removed_at = NULL, manual_at = NULL,
                    paused = false, paused_reason = NULL, paused_at = NULL,
                    consecutive_failures = 0, updated_at = now()
                """,
                actor,
                actor_row["max_instances"],
                actor_row["max_attempts"],
                [r.key for r in values],
                [r.definition_json for r in values],
                [r.definition_hash for r in values],
                [r.next_run for r in values],
                [r.due_at for r in values],
                [r.payload_json for r in values],
                [r.channel_id for r in values],
                [r.owner for r in values],
            )
            if notify:  # something is due before the running servers' next look
                await conn.execute("SELECT pg_notify($1, '')", self.channel)
        await self.refresh_statistics(len(write))
        replaced = [k for k in write if k in existing and existing[k]["pending"]]
        return KeyedWrite(list(write), replaced)

    async def refresh_statistics(self, written: int) -> bool:
        """ANALYZE the tasks table if ``written`` rows are many and at least as many as its
        statistics count (``ANALYZE_AFTER_ROWS``); True if it did."""
        if written < ANALYZE_AFTER_ROWS:
            return False
        known = await self.pool.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", self._tasks
        )
        if known is not None and written < known:
            return False
        await self.pool.execute(f"ANALYZE {self._tasks}")
        return True

    async def _check_limits(
        self,
        conn: asyncpg.Connection,
        actor: str,
        arming: Sequence[KeyedRow],
        max_pending: int,
        max_per_owner: int | None,
    ) -> None:
        pending = await conn.fetchval(
            f"SELECT count(*) FROM {self._tasks} t"
            f" WHERE t.actor = $1 AND t.key IS NOT NULL AND {self._pending}",
            actor,
        )
        if pending + len(arming) > max_pending:
            raise LimitExceeded("max_schedules", max_pending, pending, len(arming), None)
        if max_per_owner is None:
            return
        adding = Counter(r.owner for r in arming if r.owner is not None)
        if not adding:
            return
        rows = await conn.fetch(
            f"SELECT t.owner, count(*) AS n FROM {self._tasks} t WHERE t.actor = $1"
            f" AND t.key IS NOT NULL AND t.owner = ANY($2::text[]) AND {self._pending}"
            " GROUP BY t.owner",
            actor,
            list(adding),
        )
        held = {r["owner"]: r["n"] for r in rows}
        for owner, n in adding.items():
            if held.get(owner, 0) + n > max_per_owner:
                raise LimitExceeded(
                    "max_schedules_per_owner", max_per_owner, held.get(owner, 0), n, owner
                )

    async def remove_keyed(self, actor: str, key: str) -> bool:
        """Remove a keyed schedule: nothing more of it runs (a run in flight finishes) and its
        history stays. True if it was pending."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT t.id, {self._pending} AS pending FROM {self._tasks} t"
                " WHERE t.actor = $1 AND t.key = $2 AND t.removed_at IS NULL FOR UPDATE",
                actor,
                key,
            )
            if row is None:
                return False
            await conn.execute(f"DELETE FROM {self._retries} WHERE task_id = $1", row["id"])
            await conn.execute(
                f"UPDATE {self._tasks} SET removed_at = now(), next_run = NULL, due_at = NULL,"
                " manual_at = NULL, updated_at = now() WHERE id = $1",
                row["id"],
            )
        return bool(row["pending"])

    async def list_keyed(
        self,
        actor: str,
        *,
        prefix: str | None = None,
        owner: str | None = None,
        key: str | None = None,
        limit: int | None = None,
    ) -> list[asyncpg.Record]:
        """The actor's pending keyed schedules, soonest first (``next_at``: their next slot,
        retry or trigger)."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"""
            SELECT t.id, t.key, t.schedule::text AS schedule, t.payload::text AS payload,
                   t.channel_id, t.owner, t.next_run, t.paused, t.paused_reason,
                   t.consecutive_failures, t.last_status, t.last_run_at, t.running,
                   t.created_at, q.retry_at,
                   CASE WHEN t.manual_at IS NOT NULL THEN t.manual_at
                        ELSE least(t.next_run, q.retry_at) END AS next_at
            FROM {self._tasks} t
            LEFT JOIN LATERAL (SELECT min(retry_at) AS retry_at FROM {self._retries}
                               WHERE task_id = t.id) q ON true
            WHERE t.actor = $1 AND t.key IS NOT NULL AND {self._pending}
              AND ($2::text IS NULL OR starts_with(t.key, $2))
              AND ($3::text IS NULL OR t.owner = $3)
              AND ($4::text IS NULL OR t.key = $4)
            ORDER BY next_at NULLS LAST, t.key
            LIMIT $5
            """,
            actor,
            prefix,
            owner,
            key,
            limit,
        )
        return rows

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
        return await self._delete_under_retention_lock(
            f"DELETE FROM {self._runs} WHERE id IN ("
            f" SELECT id FROM {self._runs} WHERE status <> 'running' AND finished_at < $1"
            " ORDER BY finished_at LIMIT $2)",
            cutoff,
            limit,
        )

    async def prune_keyed_batch(self, cutoff: datetime, limit: int) -> int | None:
        """Delete at most ``limit`` keyed schedules that are over (removed, or a ``once`` that
        ran), unchanged since ``cutoff`` and without runs left; how many. None while another
        process holds the retention lock."""
        return await self._delete_under_retention_lock(
            f"DELETE FROM {self._tasks} WHERE id IN ("
            f" SELECT t.id FROM {self._tasks} t WHERE t.key IS NOT NULL"
            f" AND t.updated_at < $1 AND NOT {self._pending}"
            f" AND NOT EXISTS (SELECT 1 FROM {self._runs} r WHERE r.task_id = t.id)"
            " LIMIT $2)",
            cutoff,
            limit,
        )

    async def _delete_under_retention_lock(self, sql: str, *args: Any) -> int | None:
        """One batch of retention, in its own transaction; None if another process holds the
        lock (then nothing is deleted)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", self.retention_lock
            ):
                return None
            status: str = await conn.execute(sql, *args)
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
                      notice: str, then: str | None = None) -> TaskChange | None:
        """An operator's change to an actor's own row, its precondition (``allowed``, on the
        row as it was) checked in the same statement, on the row locked; the running servers are
        told (``notice``: what happened, as JSON, which they log) when it was applied. ``then``:
        a statement (its only argument the actor) run in the same transaction when applied."""
        sql = f"""
            WITH old AS (
                SELECT id, enabled, paused, paused_reason, manual_at FROM {self._tasks}
                WHERE actor = $1 AND key IS NULL AND removed_at IS NULL FOR UPDATE
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
                if then is not None:
                    await conn.execute(then, actor)
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
    WHERE t.enabled AND NOT t.paused AND t.removed_at IS NULL AND {actor_live}
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
SELECT s.*, t.actor, t.state, t.key, t.payload, t.channel_id,
       CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule::text END AS keyed_schedule
FROM started s JOIN {tasks} t ON t.id = s.task_id
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
