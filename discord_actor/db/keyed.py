"""Keyed schedules, created at run time (``sql/keyed.sql``): adding them under the actor's
limits, removing and listing them.

An actor's configured schedule is its own row (key NULL); a keyed schedule is a row of its own
with its key, which obeys the actor's switches.
"""

from __future__ import annotations

import json
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


# keyed_add's errors (functions.sql): a limit (as JSON in the detail), keys pending with
# another definition (a JSON array in the detail).
LIMIT_MESSAGE = "discord_actor.keyed_limit"
CONFLICT_MESSAGE = "discord_actor.keyed_conflict"
AGAIN_MESSAGE = "discord_actor.keyed_again"  # add_new_keyed's: keyed_add has to look
# Calls of keyed_add when it has to look again (40001, 40P01).
RACE_ATTEMPTS = 3


def _limit_exceeded(detail: str) -> LimitExceeded:
    d = json.loads(detail)
    return LimitExceeded(d["setting"], int(d["limit"]), int(d["pending"]), int(d["adding"]),
                         d["owner"])


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
        """Write keyed schedules of ``actor`` in one statement, all or none: a single new key
        through ``add_new_keyed`` (keyed.sql), anything else through the schema's
        ``keyed_add`` (functions.sql).

        A key that is pending with the same definition is left alone; with another one it is a
        conflict unless ``replace``. A key that is no longer pending (its ``once`` ran, or it
        was removed) is armed again, keeping its history. The limits are checked against the
        actor's and the owners' counters, kept in the same transaction as every write of a
        keyed row, so that concurrent adds cannot pass them together and no add counts the
        pending rows; adds of one actor from several connections do not wait on each other
        (nor those of distinct owners) until the actor nears its limit.
        """
        channel = self.channel if notify else None
        if len(rows) == 1 and await self._add_new(actor, rows[0], max_pending, max_per_owner,
                                                  channel):
            return KeyedWrite([rows[0].key], [])
        args = (
            actor,
            *arrays(rows, *KeyedRow.COLUMNS),
            replace,
            max_pending,
            max_per_owner,
            channel,
        )
        for attempt in range(RACE_ATTEMPTS):
            try:
                result = await self.pool.fetch(self.sql["add_keyed"], *args)
                break
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                # A key of these deleted by retention between two looks of this add, or two
                # add_many of overlapping keys in the same instant: this one looks again.
                if attempt == RACE_ATTEMPTS - 1:
                    raise
            except asyncpg.RaiseError as e:
                if e.message == LIMIT_MESSAGE:
                    raise _limit_exceeded(e.detail or "{}") from None
                if e.message == CONFLICT_MESSAGE:
                    raise KeyConflict(json.loads(e.detail or "[]")) from None
                raise
            except asyncpg.NoDataFoundError:
                raise LookupError(actor) from None
        written = [r["key"] for r in result if r["change"] in ("added", "replaced")]
        await self.refresh_statistics(len(written))
        return KeyedWrite(written, [r["key"] for r in result if r["change"] == "replaced"])

    async def _add_new(
        self,
        actor: str,
        row: KeyedRow,
        max_pending: int,
        max_per_owner: int | None,
        channel: str | None,
    ) -> bool:
        """One new key written in one plain statement (``add_new_keyed``), with room taken in
        the counters as they stand; False, with nothing written, when the key is there or a
        counter has no room as counted (``keyed_add`` then looks further)."""
        try:
            change = await self.pool.fetchval(
                self.sql["add_new_keyed"], actor, row.key, row.definition_json,
                row.definition_hash, row.next_run, row.due_at, row.payload_json,
                row.channel_id, row.owner, max_pending, max_per_owner, channel,
            )
        except asyncpg.RaiseError as e:
            if e.message == AGAIN_MESSAGE:
                return False
            raise
        return bool(change == "added")

    async def remove(self, actor: str, key: str) -> bool:
        """Remove a keyed schedule: nothing more of it runs (a run in flight finishes) and its
        history stays. True if it was pending. One statement."""
        pending = await self.pool.fetchval(self.sql["remove_keyed"], actor, key)
        return bool(pending)

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
