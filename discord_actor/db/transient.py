"""What counts as "the database is unreachable right now", and how long to wait before retrying.

One list and one backoff for every loop that talks to PostgreSQL (the pool's first connection,
the scheduler, recording outcomes, the heartbeat, the listener), so that they all agree on what
is worth retrying and none of them spins.
"""

from __future__ import annotations

import asyncio

import asyncpg

# Errors that may go away by themselves: nothing listening yet, a server starting, restarting or
# full, a connection dropped mid-statement.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError ("closed mid-operation")
)


class Backoff:
    """Exponential delays: ``first``, doubling, at most ``maximum``; ``reset`` after a success."""

    def __init__(self, first: float, maximum: float) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the one after is twice as long (up to ``maximum``)."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first

    async def sleep(self) -> float:
        delay = self.next()
        await asyncio.sleep(delay)
        return delay
