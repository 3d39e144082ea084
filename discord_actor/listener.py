"""The listener: notifications that wake the scheduler at once, and a check that they arrive.

An operator's trigger, pause or resume (from the CLI, the dashboard or Discord) and a process
joining or leaving are announced with ``NOTIFY`` on the schema's channel. The listener holds one
connection of its own with ``LISTEN`` on it and wakes the scheduler when one comes; without it
the scheduler still finds every change, at its next poll (``poll_interval_seconds``).

A listener can be deaf without knowing it: behind a transaction-mode pooler its ``LISTEN``
lands on a server connection that is lent to others right after (PgBouncer drops what comes
back), and on a half-open socket nothing ever arrives. So at connect and every
``PROBE_EVERY_SECONDS`` it sends itself a notification through the pool, the way every other
notification travels, and expects it back within ``PROBE_TIMEOUT_SECONDS``. When it does not
come, the process says so in one line, records it for ``status`` and ``/healthz``, polls, and
reconnects with backoff until a probe comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from contextlib import suppress

import asyncpg

from .db import Database
from .db.instances import INSTANCES_CHANGED
from .db.store import Store
from .db.transient import TRANSIENT_DB_ERRORS, Backoff

log = logging.getLogger("discord_actor.runtime")

PROBE_EVERY_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 5.0
#: A probe's payload starts with this; every process ignores the others' probes.
PROBE_PREFIX = "probe:"
#: Why a process hears nothing by configuration.
POLL_ONLY = ('database.pooler = "transaction" without database.direct_url: notifications '
             "cannot pass a transaction-mode pooler")


class Listener:
    """``LISTEN`` on the schema's channel, with a self-probe; ``problem`` says why not."""

    def __init__(
        self,
        database: Database,
        store: Store,
        instance_id: str,
        poll_interval_seconds: float,
        *,
        on_change: Callable[[], None],
        on_instances_changed: Callable[[], None],
    ) -> None:
        self.database = database
        self.store = store
        self.instance_id = instance_id
        self.poll_interval = poll_interval_seconds
        self._on_change = on_change  # something changed: look at what is due again
        self._on_instances_changed = on_instances_changed  # a process joined or left
        self.on_notice: Callable[[str], None] | None = None  # a notification's payload
        #: Why notifications do not reach this process (it polls), or None: they arrive.
        self.problem: str | None = None
        self._probes = itertools.count(1)
        self._awaited: tuple[str, asyncio.Future[None]] | None = None  # the probe in flight
        self._listening: asyncio.Event | None = None  # set: the listener's connection is done
        self.probe_timeout = PROBE_TIMEOUT_SECONDS
        self.probe_every = PROBE_EVERY_SECONDS

    @property
    def polls_only(self) -> bool:
        """True when changes made elsewhere are seen at the next poll, not at once."""
        return self.problem is not None

    def relisten(self) -> None:
        """Listen on a new connection (the node of the current one took no writes: after a
        failover it hears nothing), made through the URL's hosts to the primary."""
        if self._listening is not None:
            self._listening.set()

    def _notified(self, *args: object) -> None:
        payload = str(args[3]) if len(args) == 4 else ""
        if payload.startswith(PROBE_PREFIX):
            awaited = self._awaited
            if awaited is not None and awaited[0] == payload and not awaited[1].done():
                awaited[1].set_result(None)
            return  # ours or another process's: nothing changed
        if payload == INSTANCES_CHANGED:
            self._on_instances_changed()
            return
        self._on_change()
        if payload and self.on_notice is not None:
            self.on_notice(payload)  # what an operator did

    async def loop(self) -> None:
        """Listen until cancelled; poll-only by configuration returns after saying so."""
        url = self.database.listen_url
        if url is None:
            await self._deaf(POLL_ONLY, level=logging.INFO)
            return
        backoff = Backoff(0.5, PROBE_EVERY_SECONDS)
        while True:
            conn: asyncpg.Connection | None = None
            lost = self._listening = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    url, timeout=self.database.config.connect_timeout_seconds,
                    statement_cache_size=0,
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.store.channel, self._notified)
                # Catch up with whatever happened while we were not listening, processes that
                # joined or left included.
                self._on_instances_changed()
                self._notified()
                while not lost.is_set():
                    if not await self._probe(lost):
                        break
                    backoff.reset()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self.probe_every)
            except TRANSIENT_DB_ERRORS as e:
                log.debug("listener reconnecting (%s: %s)", type(e).__name__, e)
            finally:
                if conn is not None and not conn.is_closed():
                    with suppress(Exception):
                        await asyncio.wait_for(conn.close(), self.probe_timeout)
                    if not conn.is_closed():
                        conn.terminate()
            await backoff.sleep()

    async def _probe(self, lost: asyncio.Event) -> bool:
        """Send a notification to ourselves through the pool; True if it came back in time, or
        if the connection was lost meanwhile (the loop reconnects). A database error while
        sending propagates (an outage, which the scheduler reports)."""
        payload = f"{PROBE_PREFIX}{self.instance_id}:{next(self._probes)}"
        arrived = asyncio.get_running_loop().create_future()
        self._awaited = (payload, arrived)
        try:
            await self.store.instances.notify(payload)
            waiting = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({arrived, waiting}, timeout=self.probe_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
        finally:
            self._awaited = None
        if arrived.done():
            await self._hearing()
            return True
        if lost.is_set():
            return True
        await self._deaf(
            f"notifications do not arrive: the listener's probe did not come back within "
            f"{self.probe_timeout:g} s (is database.url a transaction-mode pooler? then set "
            'database.pooler = "transaction" and database.direct_url)'
        )
        return False

    async def _deaf(self, why: str, *, level: int = logging.WARNING) -> None:
        if self.problem is None:
            log.log(
                level,
                "%s; this process polls instead: a trigger, pause or resume made elsewhere, a "
                "keyed schedule added for earlier and a process joining are seen within "
                "poll_interval_seconds (%g s), not at once%s",
                why, self.poll_interval, "" if level == logging.INFO else
                "; the listener reconnects until notifications arrive",
            )
        self.problem = why
        await self._record()

    async def _hearing(self) -> None:
        if self.problem is not None:
            log.info("notifications arrive again: changes made elsewhere are seen at once")
            self.problem = None
            await self._record()

    async def _record(self) -> None:
        """Store the finding for ``status``; the heartbeat's row may be gone (best effort)."""
        try:
            await self.store.instances.set_notifications(self.instance_id, self.problem)
        except Exception as e:
            log.debug("recording the listener's state failed (%s: %s)", type(e).__name__, e)
