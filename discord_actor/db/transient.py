"""What counts as "the database is unreachable right now", and how long to wait before retrying.

One list and one backoff for every loop that talks to PostgreSQL (the pool's first connection,
the scheduler, recording outcomes, the heartbeat, the listener), so that they all agree on what
is worth retrying and none of them spins.
"""

from __future__ import annotations

import asyncio
import logging
import time

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


class Outage:
    """An outage of the database as one loop sees it, told in two lines: one warning when it
    starts and one when it is over. The retries in between are logged at debug level, so that
    a 15 s outage does not bury the log in repeated warnings."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.since: float | None = None  # time.monotonic() of the first failure
        self.failures = 0

    def failed(self, error: BaseException, retry_in: float) -> None:
        """A statement failed with a transient error; the caller retries in ``retry_in`` s."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "database unavailable (%s: %s); retrying until it is back (runs are not lost)",
                type(error).__name__,
                error,
            )
        else:
            self.log.debug(
                "database still unavailable (%s: %s); retrying in %.1f s",
                type(error).__name__,
                error,
                retry_in,
            )

    def ok(self) -> None:
        """A statement succeeded: if an outage was going on, say that it is over."""
        if self.since is None:
            return
        self.log.warning(
            "database available again after %.1f s (%d failed attempt(s))",
            time.monotonic() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = 0


_FLOOR_MESSAGE = "Failed to restore the pool connection floor"


class QuietPoolFilter(logging.Filter):
    """asyncpg's pool logs a warning with a traceback each time it fails to reconnect its
    minimum connections during an outage. The runtime reports outages itself (``Outage``), so a
    transient failure there is turned into a one-line debug record; others pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if str(record.msg).startswith(_FLOOR_MESSAGE) and isinstance(error, TRANSIENT_DB_ERRORS):
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


QUIET_POOL_FILTER = QuietPoolFilter()


def quiet_pool_logs() -> None:
    """Install ``QuietPoolFilter`` on asyncpg's pool logger (once)."""
    logging.getLogger("asyncpg.pool").addFilter(QUIET_POOL_FILTER)
