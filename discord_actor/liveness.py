"""Being alive among the processes that share a database: heartbeat and leases.

Each process renews its lease every third of ``lease_seconds``. Any process may declare another
dead once its lease has run out: its running runs are marked ``abandoned`` and retried. The
heartbeat also learns how many processes are alive, which is how the schedulers spread the work;
a process that joins or leaves notifies the others, so that they spread it anew at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import suppress

from .clock import Clock
from .db import Database
from .db.store import Store
from .db.transient import TRANSIENT_DB_ERRORS

log = logging.getLogger("discord_actor.runtime")


class Liveness:
    """This process's lease, the recovery of dead processes' runs, and notifications."""

    def __init__(
        self,
        database: Database,
        store: Store,
        clock: Clock,
        instance_id: str,
        lease_seconds: float,
        *,
        on_share: Callable[[int, int], None],
        on_change: Callable[[], None],
        on_declared_dead: Callable[[str], None],
        runs_in_flight: Callable[[], int],
        on_error: Callable[[BaseException], None] = lambda _e: None,
    ) -> None:
        self.database = database
        self.store = store
        self.clock = clock
        self.instance_id = instance_id
        self.lease = lease_seconds
        self._on_share = on_share  # (rank, count) among the live processes
        self._on_change = on_change  # something changed: look at what is due again
        self._on_declared_dead = on_declared_dead
        self._runs_in_flight = runs_in_flight
        self._on_error = on_error  # a database error: the runtime reconnects if it calls for it
        self._healthy_since = time.monotonic()  # since the last failed heartbeat
        self._renewed_at = time.monotonic()  # when the last renewal that succeeded was sent
        self._last_tick = time.monotonic()  # the watchdog's last turn
        self._watch: asyncio.TimerHandle | None = None
        self._refresh: asyncio.Future[None] | None = None  # a share refresh a notice asked for

    async def register(self) -> None:
        sent = time.monotonic()
        await self.store.instances.register(
            self.instance_id, socket.gethostname(), os.getpid(), self.lease
        )
        self._renewed_at = sent
        await self.refresh_share()

    # -- stalls ---------------------------------------------------------------------------------
    #
    # A process whose event loop was blocked (a synchronous call in actor code, a swap storm, a
    # suspended VM) renews nothing meanwhile, and another process may have declared it dead and
    # retried its runs. When the loop runs again, the actor code that was interrupted would carry
    # on first, before any heartbeat could notice. So a watchdog ticks every sixth of a lease,
    # and whatever actor code asks of the runtime (a post, a connection, a checkpoint) first
    # checks the time: if the watchdog is late by more than a third of a lease and nothing was
    # renewed for a whole lease, the lease may be gone and every run in flight is cancelled
    # before it goes on.

    def start_watchdog(self) -> None:
        self._last_tick = time.monotonic()
        self._watch = asyncio.get_running_loop().call_later(self.lease / 6, self._tick)

    def stop_watchdog(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _tick(self) -> None:
        self.lease_in_doubt()
        self._last_tick = time.monotonic()
        self._watch = asyncio.get_running_loop().call_later(self.lease / 6, self._tick)

    def lease_in_doubt(self) -> bool:
        """True (once, having cancelled the runs in flight) when this process was stalled for
        so long that its lease may have expired and its runs be running elsewhere."""
        if self._watch is None:  # no background loops (tests that step time): no lease kept
            return False
        now = time.monotonic()
        stalled = now - self._last_tick
        if stalled <= self.lease / 3 or now - self._renewed_at < self.lease:
            return False
        self._last_tick = now
        log.error(
            "this process was stalled for %.1f s (its event loop was blocked), past its lease"
            " (lease_seconds = %g): cancelling its %d run(s) before they go on, as another"
            " process may be running them again",
            stalled,
            self.lease,
            self._runs_in_flight(),
        )
        self._on_declared_dead("cancelled: this process was stalled for longer than its lease")
        return True

    async def unregister(self) -> None:
        with suppress(*TRANSIENT_DB_ERRORS):
            await self.store.instances.unregister(self.instance_id)

    async def refresh_share(self) -> None:
        self._share(await self.store.instances.live())

    def share_changed(self) -> None:
        """A process joined or left (a notification said so): learn the share anew soon."""
        self._refresh = asyncio.ensure_future(self._refresh_share_quietly())

    async def _refresh_share_quietly(self) -> None:
        """refresh_share on a notification; the next heartbeat corrects a failed one."""
        try:
            await self.refresh_share()
        except Exception as e:
            log.debug("reading the live processes failed (%s: %s)", type(e).__name__, e)

    def _share(self, live: list[str]) -> None:
        """Pass on this process's rank among the live ones (how the schedulers spread work)."""
        if self.instance_id in live:
            self._on_share(live.index(self.instance_id), len(live))

    async def recover_abandoned(self) -> None:
        lost = await self.store.instances.recover_abandoned(self.clock.now())
        for row in lost:
            log.warning(
                "run %d of %s abandoned: process %s stopped renewing its lease",
                row["run_id"],
                row["actor"],
                row["instance_id"],
            )
        if lost:
            self._on_change()

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                sent = time.monotonic()
                live = await self.store.instances.heartbeat(self.instance_id)
                if live is not None:
                    self._renewed_at = sent
                    self._share(live)
                else:
                    # Our runs were marked abandoned and are retried elsewhere: stop them here.
                    log.error(
                        "this process was declared dead by another (missed heartbeats for"
                        " lease_seconds = %g); cancelling its %d run(s) and registering again",
                        self.lease,
                        self._runs_in_flight(),
                    )
                    self._on_declared_dead("this process was declared dead by another")
                    await self.register()  # which learns the live processes again
                    self._healthy_since = time.monotonic()
                if time.monotonic() - self._healthy_since < self.lease:
                    # Just back from an outage: others may be too. Give them a whole lease to
                    # renew theirs before declaring anyone dead.
                    continue
                await self.recover_abandoned()
            except Exception as e:
                self._healthy_since = time.monotonic()
                self._on_error(e)
                # An outage is reported by the scheduler, once; anything else is worth a warning.
                level = logging.DEBUG if isinstance(e, TRANSIENT_DB_ERRORS) else logging.WARNING
                log.log(level, "heartbeat failed (%s: %s)", type(e).__name__, e)
