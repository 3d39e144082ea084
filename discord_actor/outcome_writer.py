"""Writing runs' outcomes and checkpoints to the database, so that none is lost.

Outcomes are written by one writer task: what finishes while a write is in flight goes into the
next one, so that under load many outcomes share one statement and one commit, and an idle
process writes each at once. A run is not over until its outcome is stored, and writing is
retried while the database is unreachable: a run this process started always gets a final status
while the process lives (and if it dies, the lease recovery marks the run ``abandoned``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import asyncpg

from .db.records import ClaimedRun, Finished, Outcome
from .db.store import Store
from .db.transient import TRANSIENT_DB_ERRORS, Backoff
from .enums import RunStatus
from .errors import DiscordActorError
from .outcome import RECORD_ERROR, refused_outcome, state_json

log = logging.getLogger("discord_actor.runtime")

# Errors meaning the database will never store this outcome as it is.
REFUSED_OUTCOME_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, TypeError, ValueError)
# What writing an outcome gives: the task's row (None: the run was declared abandoned) and the
# outcome stored, which is a plain failure when the database refused the run's own.
Written = tuple[Finished | None, Outcome]
MAX_OUTCOMES_PER_WRITE = 1000
# Outcomes that may wait for the writer before the runs waiting hold their places of
# max_concurrent_runs again (``Executor.places_held``): enough that a burst of thousands starts
# at the pace of the claims while its outcomes are written behind it, few enough to hold in
# memory (a few kB each) and to bound what a kill -9 leaves to the lease recovery.
MAX_UNWRITTEN = 10_000


class RunNoLongerOwned(DiscordActorError, RuntimeError):
    """The run was declared abandoned by another process while it ran here."""


class OutcomeWriter:
    """Stores outcomes in batches, and checkpoints of running runs' state."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._unwritten: list[tuple[ClaimedRun, Outcome, asyncio.Future[Written]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: told of every database error while writing (the runtime reconnects and looks for
        #: runs it owns and does not know of)
        self.on_error: Callable[[BaseException], None] = lambda _e: None
        self._failing = False  # a write is being retried: its later failures are debug lines

    async def write(self, run: ClaimedRun, outcome: Outcome) -> Written:
        """Hand the outcome to the writer and wait until it is stored."""
        done: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._unwritten.append((run, outcome, done))
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write_outcomes(),
                name="outcome writer",
                context=contextvars.Context(),  # not the run's that happened to start it
            )
        return await done  # cancelled at shutdown: the writer still writes the outcome

    async def checkpoint(self, run: ClaimedRun, state: dict[str, Any]) -> None:
        """Save a running run's state now (``ctx.checkpoint``)."""
        if not await self.store.runs.checkpoint(run.task_id, run.run_id, state_json(state)):
            raise RunNoLongerOwned(
                f"run {run.run_id} of {run.actor} is no longer running here (another process"
                " declared it abandoned); its state was not saved"
            )

    async def close(self) -> None:
        """Stop writing outcomes (at shutdown, after the runs were waited for)."""
        if self._writer is not None:
            self._writer.cancel()
            with suppress(asyncio.CancelledError):
                await self._writer

    async def _write_outcomes(self) -> None:
        """Write what has finished, in batches, until nothing is left."""
        batch: list[tuple[ClaimedRun, Outcome, asyncio.Future[Written]]] = []
        try:
            while self._unwritten:
                batch = self._unwritten[:MAX_OUTCOMES_PER_WRITE]
                del self._unwritten[:MAX_OUTCOMES_PER_WRITE]
                try:
                    results = await self._write_batch([(r, o) for r, o, _ in batch])
                except Exception as e:  # a bug: the runs waiting for this write see it
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(e)
                    continue
                for (_, _, done), written in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(written)
        finally:
            self._writer = None
            for _, _, done in batch + self._unwritten:  # closed while writing
                if not done.done():
                    done.cancel()

    async def _write_batch(self, batch: list[tuple[ClaimedRun, Outcome]]) -> list[Written]:
        """Write outcomes, retrying while the database is unreachable: nothing is lost.

        When the database refuses the batch (a value it cannot store), each outcome is written
        on its own, and a refused one is replaced by a plain failure, so that no run stays
        ``running`` while this process is alive. After a failed attempt, a run the next one
        finds no longer running may have been recorded by the failed one (its commit went
        through, its answer was lost): its stored status says which.
        """
        backoff = Backoff(0.2, 5.0)
        failed = False
        while True:
            try:
                finished = await self.store.runs.finish_many([(r.run_id, o) for r, o in batch])
                if failed:
                    finished = await self._recorded_before(batch, finished)
                    self._failing = False
                    log.info("recorded the outcome of %d run(s) held back", len(batch))
                return [(f, o) for f, (_, o) in zip(finished, batch, strict=True)]
            except REFUSED_OUTCOME_ERRORS as e:
                if len(batch) == 1:
                    return [await self._write_refused(*batch[0], e)]
                return [(await self._write_batch([item]))[0] for item in batch]
            except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as e:
                # An outage, a lock timeout, a read-only failover: wait and write it again.
                failed = True
                self.on_error(e)
                delay = backoff.next()
                first = batch[0][0]
                log.log(
                    logging.DEBUG if self._failing else logging.WARNING,
                    "cannot record the outcome of %d run(s) yet (run %d of %s: %s; %s: %s);"
                    " retrying in %.1f s",
                    len(batch),
                    first.run_id,
                    first.actor,
                    batch[0][1].status,
                    type(e).__name__,
                    e,
                    delay,
                )
                self._failing = True
                await asyncio.sleep(delay)

    async def _recorded_before(
        self, batch: list[tuple[ClaimedRun, Outcome]], finished: list[Finished | None]
    ) -> list[Finished | None]:
        """``finished`` with the runs that an earlier, failed attempt did record (it committed;
        its answer was lost) as recorded, with their task's row as it is now; the others
        (``None``: declared abandoned by another process) stay ``None``."""
        missing = [r.run_id for (r, _), f in zip(batch, finished, strict=True) if f is None]
        if not missing:
            return finished
        statuses = await self.store.runs.statuses(missing)
        ours = {
            run_id
            for run_id, status in statuses.items()
            if status not in (RunStatus.ABANDONED, RunStatus.RUNNING)
        }
        if not ours:
            return finished
        views = {
            v.id: v
            for v in await self.store.runs.views(
                [r.task_id for r, _ in batch if r.run_id in ours]
            )
        }
        result = list(finished)
        for i, (run, _) in enumerate(batch):
            view = views.get(run.task_id)
            if result[i] is None and run.run_id in ours and view is not None:
                result[i] = Finished(
                    task=view, consecutive_failures=0, paused_reason=None, breaker_tripped=False
                )
        return result

    async def _write_refused(self, run: ClaimedRun, outcome: Outcome, e: BaseException) -> Written:
        """Record a plain failure in place of an outcome that the database refused."""
        if outcome.error_type == RECORD_ERROR:
            raise e
        log.error(
            "run %d of %s: the database refused its outcome (%s: %s)",
            run.run_id,
            run.actor,
            type(e).__name__,
            e,
        )
        return (await self._write_batch([(run, refused_outcome(outcome, e))]))[0]
