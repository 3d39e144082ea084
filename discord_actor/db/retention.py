"""Deleting what is old (``sql/retention.sql``): finished runs past the retention period, and
keyed schedules that are over, in batches, one deleting process at a time per schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .queries import Aggregate


class Retention(Aggregate):
    """Old runs and finished keyed schedules, deleted in batches under the retention lock."""

    SQL_FILE = "retention"

    async def cutoff(self, older_than_days: float) -> datetime:
        """The database's now minus the retention period: runs that finished before it go."""
        cutoff: datetime = await self.pool.fetchval(
            self.sql["retention_cutoff"], older_than_days * 86400.0
        )
        return cutoff

    async def prunable(self, cutoff: datetime) -> list[tuple[str, int]]:
        """(actor, how many of its finished runs finished before ``cutoff``), by actor."""
        rows = await self.pool.fetch(self.sql["prunable"], cutoff)
        return [(r["actor"], r["n"]) for r in rows]

    async def prune_batch(self, cutoff: datetime, limit: int) -> int | None:
        """Delete at most ``limit`` finished runs that finished before ``cutoff``, oldest first;
        how many. None, deleting nothing, while another process holds the retention lock (one
        deleter at a time: concurrent deletes of the same rows would only wait on each other)."""
        return await self._delete_under_lock(self.sql["prune_runs"], cutoff, limit)

    async def prune_keyed_batch(self, cutoff: datetime, limit: int) -> int | None:
        """Delete at most ``limit`` keyed schedules that are over (removed, or a ``once`` that
        ran), unchanged since ``cutoff`` and without runs left; how many. None while another
        process holds the retention lock."""
        return await self._delete_under_lock(self.sql["prune_keyed"], cutoff, limit)

    async def fold_keyed_counts(self) -> int:
        """Fold what runs and removals freed into the keyed schedules' counters, so that their
        change rows stay few; how many there were. One transaction."""
        folded: int = await self.pool.fetchval(self.sql["fold_keyed_counts"])
        return folded

    async def _delete_under_lock(self, sql: str, *args: Any) -> int | None:
        """One batch of retention, in its own transaction; None if another process holds the
        lock (then nothing is deleted)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(self.sql["retention_try_lock"], self.lock):
                return None
            status: str = await conn.execute(sql, *args)
        return int(status.split()[-1])

    @property
    def lock(self) -> str:
        """The advisory lock's name (hashed by ``hashtext``) a process holds while it deletes
        old runs of this schema."""
        return f"discord_actor.retention.{self.schema}"
