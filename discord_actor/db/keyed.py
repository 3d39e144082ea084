"""Keyed schedules, created at run time (``sql/keyed.sql``): adding them under the actor's
limits, removing and listing them.

An actor's configured schedule is its own row (key NULL); a keyed schedule is a row of its own
with its key, which obeys the actor's switches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import asyncpg

from ..errors import DiscordActorError
from .queries import Aggregate, arrays
from .records import KeyedRow, KeyedWrite


class KeyConflict(DiscordActorError):
    """Keys that are pending with another definition (and ``replace`` was not given)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys)
        self.keys = keys


class LimitExceeded(DiscordActorError):
    """Adding would take the pending schedules of an actor (or of one owner) over a limit."""

    def __init__(self, setting: str, limit: int, pending: int, adding: int, owner: str | None):
        super().__init__(setting)
        self.setting, self.limit, self.pending, self.adding, self.owner = (
            setting, limit, pending, adding, owner
        )



class KeyedSchedules(Aggregate):
    """The rows with a key: each actor's schedules created at run time."""

    SQL_FILE = "keyed"

    async def add(
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
            actor_row = await conn.fetchrow(self.sql["lock_actor_row"], actor)
            if actor_row is None:
                raise LookupError(actor)
            keys = [r.key for r in rows]
            existing = {
                r["key"]: r for r in await conn.fetch(self.sql["keyed_existing"], actor, keys)
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
                await conn.execute(self.sql["delete_retries_of_tasks"], rewritten)
            values = list(write.values())
            await conn.execute(
                self.sql["write_keyed"],
                actor,
                actor_row["max_instances"],
                actor_row["max_attempts"],
                *arrays(values, *KeyedRow.COLUMNS),
            )
            if notify:  # something is due before the running servers' next look
                await conn.execute(self.sql["notify"], self.channel, "")
        await self.refresh_statistics(len(write))
        replaced = [k for k in write if k in existing and existing[k]["pending"]]
        return KeyedWrite(list(write), replaced)

    async def _check_limits(
        self,
        conn: asyncpg.Connection,
        actor: str,
        arming: Sequence[KeyedRow],
        max_pending: int,
        max_per_owner: int | None,
    ) -> None:
        pending = await conn.fetchval(self.sql["count_pending"], actor)
        if pending + len(arming) > max_pending:
            raise LimitExceeded("max_schedules", max_pending, pending, len(arming), None)
        if max_per_owner is None:
            return
        adding = Counter(r.owner for r in arming if r.owner is not None)
        if not adding:
            return
        rows = await conn.fetch(self.sql["count_pending_by_owner"], actor, list(adding))
        held = {r["owner"]: r["n"] for r in rows}
        for owner, n in adding.items():
            if held.get(owner, 0) + n > max_per_owner:
                raise LimitExceeded(
                    "max_schedules_per_owner", max_per_owner, held.get(owner, 0), n, owner
                )

    async def remove(self, actor: str, key: str) -> bool:
        """Remove a keyed schedule: nothing more of it runs (a run in flight finishes) and its
        history stays. True if it was pending."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self.sql["lock_keyed"], actor, key)
            if row is None:
                return False
            await conn.execute(self.sql["delete_retries_of_task"], row["id"])
            await conn.execute(self.sql["remove_keyed"], row["id"])
        return bool(row["pending"])

    async def pending(
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
            self.sql["list_keyed"], actor, prefix, owner, key, limit
        )
        return rows
