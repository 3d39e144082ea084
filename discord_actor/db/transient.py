"""What counts as "the database is unreachable right now", and how long to wait before retrying.

One list and one backoff for every loop that talks to PostgreSQL (the pool's first connection,
the scheduler, recording outcomes, the heartbeat, the listener), so that they all agree on what
is worth retrying and none of them spins.

A failover is one of these outages: the primary goes, a standby is promoted, and a connection
may still lead to a node that is now read-only. ``Reconnect`` drops the pooled connections when
an error says they lead nowhere useful, so that the next ones are made afresh, to whichever node
of the URL's hosts is the primary then (``target_session_attrs=read-write``), and ``Servers``
remembers which node that was, so that the log names the node that was lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

# A node that takes no writes: a standby, or a primary being failed over (SQLSTATE 25006,
# "cannot execute INSERT in a read-only transaction", "cannot execute LISTEN during recovery").
READ_ONLY_ERRORS: tuple[type[BaseException], ...] = (asyncpg.ReadOnlySQLTransactionError,)

# Errors that a new connection cures: the one in use was lost (its server killed, restarted or
# failed over, the network cut), or asyncpg's client side of it was left unusable by that loss
# ("cannot switch to state 12; another operation is in progress", "connection has been released
# back to the pool"), or it leads to a node that takes no writes.
RECONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError ("closed mid-operation")
    asyncpg.InternalClientError,  # includes TargetServerAttributeNotMatched (no primary yet)
    *READ_ONLY_ERRORS,
)

# Errors that may go away by themselves: nothing listening yet, a server starting, restarting or
# full, a connection dropped mid-statement, no primary among the hosts during a failover.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    *RECONNECT_ERRORS,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def describe_address(addr: Any) -> str | None:
    """``host:port`` of an address asyncpg connected to (a Unix socket: its path)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    if isinstance(addr, str) and addr:
        return addr
    return None


class Servers:
    """Which node this process's pooled connections lead to: the one the newest was made to.

    A URL may list several hosts (a primary and its standbys); the pool calls ``note`` for each
    connection it makes, so after a failover this names the new primary, and until then the one
    whose loss the outage line reports.
    """

    def __init__(self) -> None:
        self.current: str | None = None

    async def note(self, conn: asyncpg.Connection) -> None:
        """The pool's ``init`` hook: a new connection was made (its address is asyncpg's)."""
        where = describe_address(getattr(conn, "_addr", None))
        if where is not None:
            self.current = where


class Reconnect:
    """Drops the pool's connections when an error says they lead nowhere useful.

    After a read-only error (a standby, a primary switched to read-only) or a lost connection,
    the other pooled connections most likely lead to the same node: ``pool.expire_connections``
    has each replaced at its next use, by a connection made anew through the URL's hosts (with
    ``target_session_attrs=read-write``, to whichever is the primary now). Connections in use
    finish what they do first. At most once a second, so that an outage does not churn.
    """

    EVERY_SECONDS = 1.0

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._at = -1e18
        self._expiring: set[asyncio.Future[None]] = set()

    def after(self, error: BaseException) -> bool:
        """An operation failed with ``error``; True if it called for new connections."""
        if not isinstance(error, RECONNECT_ERRORS):
            return False
        now = time.monotonic()
        if now - self._at >= self.EVERY_SECONDS:
            self._at = now
            # A coroutine that only marks the connections: done at once, nothing to wait for.
            task = asyncio.ensure_future(self.pool.expire_connections())
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)
        return True


def outage_line(error: BaseException, server: str | None) -> str:
    """The line that starts an outage: what went wrong, naming the node when it is known. One
    line: asyncpg's multi-line hints (a pooler's prepared statements) are folded into it."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    if isinstance(error, READ_ONLY_ERRORS):
        where = f"database {server}" if server else "the database"
        return (f"{where} is read-only, a standby or a primary being failed over ({text});"
                " reconnecting until a primary answers (runs are not lost)")
    cause = f"lost {server}: {text}" if server is not None else text
    return f"database unavailable ({cause}); retrying until it is back (runs are not lost)"


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

    def __init__(self, logger: logging.Logger, servers: Servers | None = None) -> None:
        self.log = logger
        self.servers = servers  # which node was in use: the one lost when an outage starts
        self.since: float | None = None  # time.monotonic() of the first failure
        self.failures = 0

    def _server(self) -> str | None:
        return None if self.servers is None else self.servers.current

    def failed(self, error: BaseException, retry_in: float) -> None:
        """A statement failed with a transient error; the caller retries in ``retry_in`` s."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s", outage_line(error, self._server()))
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
        server = self._server()
        self.log.warning(
            "database available again after %.1f s (%d failed attempt(s))%s",
            time.monotonic() - self.since,
            self.failures,
            f", on {server}" if server else "",
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
