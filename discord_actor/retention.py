"""Retention: finished runs older than ``server.run_retention_days`` are deleted.

Every running server does it, at start and then hourly, so that the runs table does not grow
forever. It deletes in batches (``BATCH_ROWS`` a statement, each its own short transaction,
with a pause between) so that no statement holds locks or a pooled connection for long and
the runs go on meanwhile. One process deletes at a time: a batch runs only under an advisory
try-lock (``Store.retention.prune_batch``), and a process that finds it taken leaves that pass
to the holder. ``discord-actor prune`` uses the same pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from .db.store import Store

log = logging.getLogger("discord_actor.retention")

BATCH_ROWS = 1000
BATCH_PAUSE_SECONDS = 0.05  # between batches: the runs' own statements get their turn
INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class PruneResult:
    cutoff: datetime  # runs that finished before this were deleted
    deleted: int
    busy: bool  # another process held the retention lock: this pass stopped early


async def prune(
    store: Store,
    older_than_days: float,
    *,
    batch: int = BATCH_ROWS,
    pause: float = BATCH_PAUSE_SECONDS,
) -> PruneResult:
    """Delete the finished runs older than ``older_than_days``, batch by batch."""
    cutoff = await store.retention.cutoff(older_than_days)
    deleted, busy = await _drain(store.retention.prune_batch, cutoff, batch, pause)
    if not busy:
        # Then the keyed schedules that are over and whose runs are all gone (a reminder that
        # fired a month ago), so that the tasks table does not grow forever either.
        _, busy = await _drain(store.retention.prune_keyed_batch, cutoff, batch, pause)
        # And what runs and removals freed since the last pass, folded into the keyed
        # schedules' counters (an add folds it too, when it needs the room).
        await store.retention.fold_keyed_counts()
    return PruneResult(cutoff, deleted, busy=busy)


async def _drain(
    delete: Callable[[datetime, int], Awaitable[int | None]],
    cutoff: datetime,
    batch: int,
    pause: float,
) -> tuple[int, bool]:
    """Delete batch after batch until one is short: (how many, whether it stopped because
    another process held the retention lock)."""
    deleted = 0
    while True:
        n = await delete(cutoff, batch)
        if n is None:
            return deleted, True
        deleted += n
        if n < batch:
            return deleted, False
        await asyncio.sleep(pause)


async def loop(store: Store, older_than_days: float, interval: float = INTERVAL_SECONDS) -> None:
    """A running server's retention: a pass at start, then one every ``interval`` seconds.

    A failed pass (the database away) is logged and tried again at the next interval."""
    while True:
        try:
            result = await prune(store, older_than_days)
        except Exception as e:  # the database away, a statement timeout: the next pass retries
            log.warning("retention: could not delete old runs (%s: %s); trying again in %g s",
                        type(e).__name__, e, interval)
        else:
            if result.busy:
                log.info("retention: another process is deleting old runs; left to it")
            if result.deleted:
                log.info("retention: deleted %d run(s) finished before %s (run_retention_days"
                         " = %g)", result.deleted, result.cutoff.isoformat(timespec="seconds"),
                         older_than_days)
        await asyncio.sleep(interval)
