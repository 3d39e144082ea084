"""What operators read and change (``sql/operator.sql``): status, history, runs, an actor's
stored state, and pause, resume and trigger, each told to the running servers as a notice.

A change's precondition is checked by the statement that makes it, on the locked row: nothing
is read first and written later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from .queries import Aggregate
from .records import Operator, TaskChange

NOTICE_REASON_CHARS = 1000  # of a reason, in a notification (NOTIFY payloads are < 8000 bytes)


class OperatorActions(Aggregate):
    """The actors' rows and runs as operators see them, and the changes they make."""

    SQL_FILE = "operator"

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        super().__init__(pool, schema)
        always = self.sql["always"]
        self._pause_sql = self.sql.compose(
            "change_task", assignments=self.sql["pause_assignments"], allowed=always
        )
        self._resume_sql = self.sql.compose(
            "change_task", assignments=self.sql["resume_assignments"], allowed=always
        )
        self._trigger_sql = self.sql.compose(
            "change_task",
            assignments=self.sql["trigger_assignments"],
            allowed=self.sql["trigger_allowed"],
        )

    async def set_state(self, actor: str, state: dict[str, Any]) -> None:
        """Replace an actor's stored state (tests and operators; not while it runs)."""
        await self.pool.execute(self.sql["set_state"], actor, json.dumps(state))

    async def retries(self, actor: str) -> list[asyncpg.Record]:
        """The actor's pending retries, earliest first."""
        rows: list[asyncpg.Record] = await self.pool.fetch(self.sql["actor_retries"], actor)
        return rows

    async def status(self, actor: str | None = None) -> list[asyncpg.Record]:
        """Every actor's row (or one actor's), with its earliest retry and how many keyed
        schedules it has pending (counted for the actors asked about only)."""
        rows: list[asyncpg.Record] = await self.pool.fetch(self.sql["status"], actor)
        return rows

    async def task(self, actor: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(self.sql["actor_task"], actor)

    async def task_row(self, task_id: int) -> asyncpg.Record | None:
        """A task row by id: an actor's own, or one of its keyed schedules."""
        return await self.pool.fetchrow(self.sql["task_row"], task_id)

    async def history(
        self, actor: str | None = None, limit: int = 20, status: str | None = None
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            self.sql["history"], actor, status, limit
        )
        return rows

    async def recent_runs(self, actors: Sequence[str], limit: int) -> list[asyncpg.Record]:
        """The newest ``limit`` runs of each of ``actors``, in one statement (the dashboard's
        timelines), without their tracebacks."""
        rows: list[asyncpg.Record] = await self.pool.fetch(
            self.sql["recent_runs"], list(actors), limit
        )
        return rows

    async def run(self, run_id: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(self.sql["run"], run_id)

    async def pause(
        self, actor: str, reason: str | None, by: Operator | None = None
    ) -> TaskChange | None:
        """Pause; ``reason`` is stored as given (``Operator.reason`` adds who paused). None when
        the actor has no task (or it was removed from the configuration)."""
        reason = reason or "paused by an operator"
        return await self._change(
            self._pause_sql, actor, reason, notice=_notice(actor, "paused", by, reason)
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
            self._resume_sql,
            actor,
            passed,
            next_run,
            due_at,
            notice=_notice(actor, "resumed", by),
            then=self.sql["resume_keyed"],
        )

    async def trigger(self, actor: str, by: Operator | None = None) -> TaskChange | None:
        """Ask a running server to run the actor now (coalesced with a pending trigger).

        Refused (``applied`` False) when the actor is paused or disabled: checked on the locked
        row by the same statement that sets the trigger."""
        return await self._change(
            self._trigger_sql, actor, notice=_notice(actor, "triggered", by)
        )

    async def _change(
        self, sql: str, actor: str, *args: Any, notice: str, then: str | None = None
    ) -> TaskChange | None:
        """An operator's change to an actor's own row (``sql``: ``change_task`` composed), its
        precondition checked in the same statement, on the row locked; the running servers are
        told (``notice``: what happened, as JSON, which they log) when it was applied. ``then``:
        a statement (its only argument the actor) run in the same transaction when applied."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql, actor, *args)
            if row is None:
                return None
            if row["applied"]:
                if then is not None:
                    await conn.execute(then, actor)
                await conn.execute(self.sql["notify"], self.channel, notice)
        return TaskChange.from_record(row)


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
