"""The one asyncpg pool a process shares, built from ``[database]``.

At start-up the database may not be up yet (a container starting beside us, a server restarting),
so connecting is retried with exponential backoff until ``connect_timeout_seconds`` have passed,
then ``DatabaseUnavailable`` says which database (password redacted) and why.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

import asyncpg

from discord_actor.config.model import DatabaseConfig
from discord_actor.config.redaction import REDACTED, redact_text, redact_url
from discord_actor.db.transient import TRANSIENT_DB_ERRORS, Backoff, quiet_pool_logs
from discord_actor.errors import DiscordActorError

APPLICATION_NAME = "discord-actor"

_FIRST_DELAY = 0.1  # seconds before the second attempt; doubles each time
_MAX_DELAY = 2.0
_MIN_ATTEMPT = 0.25  # the last attempt gets at least this long even if the budget is spent

# Errors that retrying will not fix at connect time: a malformed URL, a client-side refusal
# (e.g. SSL not supported), pg_hba.conf rejecting us. Checked before TRANSIENT_DB_ERRORS; any
# other PostgresError (wrong password, unknown database or role) is permanent too.
_PERMANENT: tuple[type[BaseException], ...] = (
    ValueError,
    asyncpg.InterfaceError,
    asyncpg.ConnectionRejectionError,
    asyncpg.ProtocolViolationError,
)


#: What asyncpg meets when its named prepared statements pass a transaction-mode pooler: a
#: statement prepared on one server connection is missing, or already there, on the next.
POOLER_SYMPTOMS: tuple[type[BaseException], ...] = (
    asyncpg.DuplicatePreparedStatementError,
    asyncpg.InvalidSQLStatementNameError,
)
POOLER_HINT = (
    "database.url looks like a transaction-mode pooler (PgBouncer, Supabase's port 6543, "
    "Neon's -pooler host), which keeps no prepared statements: set database.pooler = "
    '"transaction" (and database.direct_url, the direct address, for notifications)'
)


def pooler_symptom(exc: BaseException) -> str | None:
    """For an error that says ``url`` is a transaction-mode pooler, the error's first line and
    what to set; None for any other error."""
    if not isinstance(exc, POOLER_SYMPTOMS):
        return None
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}: {POOLER_HINT}"


class DatabaseUnavailable(DiscordActorError):
    """The database cannot be reached or the embedded server cannot start.

    The message names the database (URL with the password redacted) and the last error; it is
    meant to be shown to the operator as is, without a traceback.
    """


def _secrets(url: str) -> list[str]:
    """Passwords that appear in ``url`` (as written and percent-decoded, longest first), to scrub
    them from error messages: the user-info password and every ``*password*`` parameter."""
    found: set[str] = set()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found.add(password)
    found.update(re.findall(r"(?i)pass(?:word|wd)[\w.-]*\s*=\s*([^&\s]+)", url))
    found |= {unquote(secret) for secret in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def describe_error(exc: BaseException, url: str) -> str:
    """``exc`` as one line (type and text) with the passwords of ``url`` and any other
    credential shown as ``***``."""
    text = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else "")
    for secret in _secrets(url):
        text = text.replace(secret, REDACTED)
    text = redact_text(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's session reset (one more round trip) when a connection returns to the pool.

    The runtime's own statements leave no session state behind, and an open transaction is still
    rolled back by asyncpg. Connections lent to actors, which may change anything, are fully reset
    by ``reset_session`` before they come back (see runtime.Runtime._connection).
    """


async def reset_session(conn: asyncpg.Connection) -> None:
    """What asyncpg does by default on release: roll back, unlisten, unlock, RESET ALL."""
    await conn.reset()


# Called with each new connection the pool makes (``Servers.note``: which node it leads to).
ConnectHook = Callable[[asyncpg.Connection], Awaitable[None]]


async def _open(cfg: DatabaseConfig, url: str, init: ConnectHook | None = None) -> asyncpg.Pool:
    quiet_pool_logs()  # outages are reported by the runtime, in one line each
    pool = asyncpg.create_pool(
        url,
        min_size=cfg.min_pool_size,
        max_size=cfg.max_pool_size,
        max_inactive_connection_lifetime=cfg.idle_timeout_seconds,
        command_timeout=cfg.command_timeout_seconds,
        statement_cache_size=cfg.statement_cache_size,
        timeout=cfg.connect_timeout_seconds,
        server_settings={"application_name": APPLICATION_NAME},
        reset=keep_session,
        init=init,
    )
    await pool
    if cfg.min_pool_size == 0:
        # Nothing connected yet: prove the database is reachable before handing the pool out.
        try:
            await pool.execute("SELECT 1")
        except BaseException:
            pool.terminate()
            raise
    return pool


async def create_pool(
    cfg: DatabaseConfig, url: str, *, init: ConnectHook | None = None
) -> asyncpg.Pool:
    """Create the shared pool, retrying an unreachable database for connect_timeout_seconds.

    Raises ``DatabaseUnavailable`` when the budget is spent, or at once for errors that retrying
    cannot fix (authentication, unknown database, malformed URL).
    """
    budget = cfg.connect_timeout_seconds
    started = time.monotonic()
    deadline = started + budget
    backoff = Backoff(_FIRST_DELAY, _MAX_DELAY)
    attempts = 0
    while True:
        attempts += 1
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), _MIN_ATTEMPT)):
                return await _open(cfg, url, init)
        except _PERMANENT as exc:
            raise _permanent(exc, url) from None
        except TRANSIENT_DB_ERRORS as exc:
            last: BaseException = exc
        except asyncpg.PostgresError as exc:
            raise _permanent(exc, url) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            elapsed = time.monotonic() - started
            raise DatabaseUnavailable(
                f"database {redact_url(url)} is unavailable: gave up after {attempts} attempts "
                f"in {elapsed:.1f} s (connect_timeout_seconds = {budget:g}); "
                f"last error: {describe_error(last, url)}"
            ) from None
        await asyncio.sleep(min(backoff.next(), remaining))


def _permanent(exc: BaseException, url: str) -> DatabaseUnavailable:
    hint = ""
    if "unsupported startup parameter" in str(exc):
        # PgBouncer refuses startup parameters it does not track (search_path, options, ...).
        hint = (" (a pooler such as PgBouncer refuses connection settings it does not know:"
                " remove them from the URL, or list them in its ignore_startup_parameters)")
    return DatabaseUnavailable(
        f"cannot connect to database {redact_url(url)}: {describe_error(exc, url)}{hint}"
    )
