"""The processes that run actors, and their leases: register, renew, list the live ones, and
recover the runs of those that stopped renewing theirs (``sql/instances.sql``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from .queries import Aggregate

# The notification's payload when a process joins or leaves: the others learn their share anew.
INSTANCES_CHANGED = "instances"


class Instances(Aggregate):
    """The instances table: one row per running process."""

    SQL_FILE = "instances"

    async def register(
        self, instance_id: str, hostname: str, pid: int, lease_seconds: float
    ) -> None:
        await self.pool.execute(
            self.sql["register_instance"], instance_id, hostname, pid, lease_seconds
        )
        await self._announce()

    async def heartbeat(self, instance_id: str) -> list[str] | None:
        """Renew this process's lease and return the live processes (``live``); None if another
        process already declared this one dead."""
        row = await self.pool.fetchrow(self.sql["heartbeat"], instance_id)
        return list(row["live"]) if row is not None and row["renewed"] else None

    async def live(self) -> list[str]:
        """The processes whose lease is current, in a stable order (their ids)."""
        rows = await self.pool.fetch(self.sql["live_instances"])
        return [r["id"] for r in rows]

    async def unregister(self, instance_id: str) -> None:
        await self.pool.execute(self.sql["unregister_instance"], instance_id)
        await self._announce()

    async def set_notifications(self, instance_id: str, problem: str | None) -> None:
        """Record why this process only polls (``problem``), or that notifications arrive."""
        await self.pool.execute(self.sql["set_notifications"], instance_id, problem)

    async def deaf(self) -> list[asyncpg.Record]:
        """The live processes that hear no notifications: id, hostname, pid, notifications."""
        rows: list[asyncpg.Record] = await self.pool.fetch(self.sql["deaf_instances"])
        return rows

    async def notify(self, payload: str) -> None:
        """Send ``payload`` on the schema's channel (the listener's self-probe)."""
        await self.pool.execute(self.sql["notify"], self.channel, payload)

    async def _announce(self) -> None:
        """Tell the running processes that the live ones changed, so that they spread the work
        anew at once rather than at their next heartbeat (a third of a lease later)."""
        await self.pool.execute(self.sql["notify"], self.channel, INSTANCES_CHANGED)

    async def recover_abandoned(self, retry_at: datetime) -> list[asyncpg.Record]:
        """Mark the running runs of dead processes ``abandoned`` and schedule their retries.

        A process is dead when its heartbeat is older than its lease. A run that still has
        attempts left gets a retry of the same slot at ``retry_at``.
        """
        rows: list[asyncpg.Record] = await self.pool.fetch(self.sql["recover_abandoned"], retry_at)
        return rows
