"""The shared pool's per-actor quotas: who may hold how many pooled connections.

Every actor of a process borrows from one asyncpg pool. Each actor may hold at most its
``max_connections``, and all actors together one less than the pool's size: the last connection
stays free for the runtime's own statements, so that actors holding every connection can never
block the statements that record their runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg

from .config.model import ActorConfig
from .db.pool import reset_session
from .db.transient import TRANSIENT_DB_ERRORS
from .errors import DiscordActorError
from .metrics import RuntimeMetrics


class PoolExhausted(DiscordActorError):
    """An actor waited longer than ``acquire_timeout_seconds`` for a pooled connection."""


class _Lease:
    """One connection lent to one run, and the permits it holds."""

    __slots__ = ("conn", "held", "reclaimed")

    def __init__(self, conn: asyncpg.Connection, held: list[asyncio.Semaphore]) -> None:
        self.conn = conn
        self.held = held
        self.reclaimed = False


class ConnectionBudget:
    """Lends pooled connections to actors within their shares."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        pool_size: int,
        acquire_timeout: float,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics or RuntimeMetrics()
        self.pool_size = pool_size
        self.acquire_timeout = acquire_timeout
        self._shared = asyncio.Semaphore(max(1, pool_size - 1))
        self._limits: dict[str, asyncio.Semaphore] = {}  # made at an actor's first request
        self.in_use: Counter[str] = Counter()  # connections held, by actor
        self.leases: dict[int, list[_Lease]] = {}  # run id -> connections it holds

    @asynccontextmanager
    async def connection(
        self, cfg: ActorConfig, run_id: int = 0
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection within the actor's share; waits at most ``acquire_timeout``.

        It is lent to run ``run_id``: what the run still holds when it ends is ``reclaim``-ed.
        """
        limit = self._limits.get(cfg.name)
        if limit is None:
            limit = self._limits[cfg.name] = asyncio.Semaphore(cfg.max_connections)
        held: list[asyncio.Semaphore] = []
        conn: asyncpg.Connection | None = None
        asked = time.monotonic()
        try:
            async with asyncio.timeout(self.acquire_timeout):
                await limit.acquire()
                held.append(limit)
                await self._shared.acquire()
                held.append(self._shared)
                conn = await self.pool.acquire()
        except TimeoutError:
            for semaphore in held:
                semaphore.release()
            self.metrics.acquired(time.monotonic() - asked)
            raise PoolExhausted(self._exhausted_message(cfg)) from None
        except BaseException:
            for semaphore in held:
                semaphore.release()
            raise
        self.metrics.acquired(time.monotonic() - asked)
        self.in_use[cfg.name] += 1
        lease = _Lease(conn, held)
        self.leases.setdefault(run_id, []).append(lease)
        try:
            yield conn
        finally:
            if not lease.reclaimed:  # else the run's end has closed it and freed its permits
                await self._give_back(cfg.name, run_id, lease)

    async def _give_back(self, actor: str, run_id: int, lease: _Lease) -> None:
        """Return a connection the actor is done with: its session reset, its permits freed."""
        leases = self.leases.get(run_id)
        if leases is not None:
            leases.remove(lease)
            if not leases:
                del self.leases[run_id]
        conn, held = lease.conn, lease.held
        self.in_use[actor] -= 1
        try:
            try:
                await reset_session(conn)  # the actor may have changed anything
            except BaseException as e:
                with suppress(asyncpg.InterfaceError):  # already closed by its loss
                    conn.terminate()  # e.g. cancelled mid-query: the pool replaces it
                # A cancellation (the run's timeout) must go on; a connection lost after the
                # actor was done with it is the pool's to replace, not the run's failure.
                if not isinstance(e, TRANSIENT_DB_ERRORS):
                    raise
            finally:
                await asyncio.shield(self.pool.release(conn))
        finally:
            for semaphore in held:
                semaphore.release()

    def reclaim(self, run_id: int, actor: str) -> int:
        """Close the connections run ``run_id`` still holds after it ended (kept past its
        ``async with``, or held by code that did not stop when cancelled); returns how many.

        A closed connection goes back to the pool as a free slot, so neither the actor's share
        nor the pool's closing at shutdown waits for code that will never give it back.
        """
        leases = self.leases.pop(run_id, None)
        if not leases:
            return 0
        for lease in leases:
            lease.reclaimed = True
            self.in_use[actor] -= 1
            with suppress(asyncpg.InterfaceError):  # already given back by a failover
                lease.conn.terminate()  # its holder returns to the pool; any later use fails
            for semaphore in lease.held:
                semaphore.release()
        return len(leases)

    def _exhausted_message(self, cfg: ActorConfig) -> str:
        in_use = self.pool.get_size() - self.pool.get_idle_size()
        return (
            f"actor {cfg.name!r} waited {self.acquire_timeout:g} s (acquire_timeout_seconds) for"
            f" a database connection: it holds {self.in_use[cfg.name]} of its max_connections ="
            f" {cfg.max_connections}; the shared pool has {in_use} of {self.pool_size}"
            f" connections in use ({sum(self.in_use.values())} by actors, one kept for the"
            " runtime)"
        )
