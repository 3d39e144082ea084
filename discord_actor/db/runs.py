"""The scheduler's hot path (``sql/runs.sql``): what is due, claiming it, recording outcomes,
saving a running run's state.

A run costs at most two round trips: ``claim`` (one statement that locks the tasks, advances
their next slots and inserts the runs, for every run due in a pass) and ``finish_many`` (one
statement that records outcomes, each through the ``finish_run`` function of
``sql/functions.sql``: the run, the new state, the retry and the circuit breaker together).
``due_window`` is how the scheduler learns what is due: a read through the due-time indexes,
every poll interval, not per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from .queries import Aggregate, arrays
from .records import ClaimedRun, ClaimRequest, DueWindow, Finished, Outcome, TaskView


class Runs(Aggregate):
    """Runs as the scheduler and the executor start and end them."""

    SQL_FILE = "runs"

    async def due_window(self, until: datetime, limit: int) -> DueWindow:
        """The tasks that may run and have work due up to ``until`` (at most ~``limit`` each of
        slots, triggers and retries), read through the due-time indexes."""
        rows = await self.pool.fetch(self.sql["due_window"], until, limit)
        views: dict[int, TaskView] = {}
        complete_until = until
        counts = {"s": 0, "o": 0, "r": 0}
        last: dict[str, datetime | None] = {"s": None, "o": None, "r": None}
        for r in rows:
            kind = r["kind"]
            if kind in counts:
                counts[kind] += 1
                at = last[kind]
                if at is None or r["at"] > at:
                    last[kind] = r["at"]
            if r["id"] not in views:
                views[r["id"]] = TaskView.from_record(r)
        cut = {kind: last[kind] for kind, count in counts.items() if count >= limit}
        complete_until = min([until] + [at for k, at in cut.items() if k != "o" and at])
        own_until = min([until] + [at for k, at in cut.items() if k != "s" and at])
        return DueWindow(list(views.values()), complete_until, own_until)

    async def views(self, task_ids: Sequence[int]) -> list[TaskView]:
        """The current rows of these tasks (whatever their state)."""
        rows = await self.pool.fetch(self.sql["task_views"], list(task_ids))
        return [TaskView.from_record(r) for r in rows]

    async def claim(
        self, instance_id: str, requests: Sequence[ClaimRequest], now: datetime
    ) -> list[ClaimedRun]:
        """Start the requested runs that are still due; others may have taken the rest."""
        if not requests:
            return []
        rows = await self.pool.fetch(
            self.sql["claim_runs"],
            instance_id,
            *arrays(requests, *ClaimRequest.COLUMNS),
            now,
        )
        return [ClaimedRun.from_record(r) for r in rows]

    async def finish(self, run_id: int, outcome: Outcome) -> Finished | None:
        """Record a run's outcome; None if the run was no longer ours (declared abandoned)."""
        return (await self.finish_many([(run_id, outcome)]))[0]

    async def finish_many(
        self, outcomes: Sequence[tuple[int, Outcome]]
    ) -> list[Finished | None]:
        """Record many runs' outcomes in one statement and one transaction, each applied on its
        own and in order; per run, what ``finish`` returns."""
        rows = await self.pool.fetch(
            self.sql["finish_runs"],
            [run_id for run_id, _ in outcomes],
            *arrays([o for _, o in outcomes], *Outcome.COLUMNS),
        )
        results: list[Finished | None] = [None] * len(outcomes)
        for row in rows:
            index = row["n"] - 1
            results[index] = Finished.from_record(row, outcomes[index][1])
        return results

    async def lost_claims(self, instance_id: str, known: Sequence[int]) -> list[ClaimedRun]:
        """Runs ``instance_id`` owns (``running``) other than ``known``: claimed by a statement
        that committed but whose answer was lost, so that the process never started them."""
        rows = await self.pool.fetch(self.sql["lost_claims"], instance_id, list(known))
        return [ClaimedRun.from_record(r) for r in rows]

    async def statuses(self, run_ids: Sequence[int]) -> dict[int, str]:
        """The status each of these runs is recorded with now."""
        rows = await self.pool.fetch(self.sql["run_statuses"], list(run_ids))
        return {r["id"]: r["status"] for r in rows}

    async def checkpoint(self, task_id: int, run_id: int, state_json: str) -> bool:
        """Save a running run's state (JSON text) now; False if the run is no longer running."""
        status: str = await self.pool.execute(self.sql["checkpoint"], task_id, run_id, state_json)
        return status != "UPDATE 0"
