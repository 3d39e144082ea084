"""Noticing a blocked event loop, and naming the runs that were in progress when it happened.

Every actor, the scheduler and the Discord gateway's heartbeat share one event loop: an actor
that calls ``time.sleep`` or computes for seconds without awaiting starves all of them. A timer
that should fire every quarter second tells by how much it was late; past a second, a warning names
the runs in progress, which is where the blocking call almost always is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .db.records import ClaimedRun

log = logging.getLogger("discord_actor.runtime")
MAX_NAMED_RUNS = 10  # in one warning: the blocking one is usually the first few

CHECK_INTERVAL = 0.25  # seconds between two checks: a stall is measured this much short
WARN_AFTER = 1.0  # seconds of lag that get a warning


class LoopLagWatcher:
    """Measures the event loop's lag; ``lag`` is the latest measurement, in seconds."""

    def __init__(
        self,
        in_progress: Callable[[], Iterable[ClaimedRun]],
        *,
        interval: float = CHECK_INTERVAL,
        warn_after: float = WARN_AFTER,
    ) -> None:
        self._in_progress = in_progress
        self.interval = interval
        self.warn_after = warn_after
        self.lag = 0.0
        self._expected = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._expected = loop.time() + self.interval
        self._timer = loop.call_at(self._expected, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def running(self) -> bool:
        return self._timer is not None

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.lag = max(0.0, now - self._expected)
        if self.lag > self.warn_after:
            # The run that blocked is still among these: its end is recorded only after the
            # loop has turned again, which is after this timer.
            self._warn({run.run_id: run.actor for run in self._in_progress()})
        self._expected = now + self.interval
        self._timer = loop.call_at(self._expected, self._check)

    def _warn(self, runs: dict[int, str]) -> None:
        if runs:
            shown = sorted(runs.items())[:MAX_NAMED_RUNS]
            named = ", ".join(f"run {run_id} of {actor}" for run_id, actor in shown)
            if len(runs) > MAX_NAMED_RUNS:
                named += f" and {len(runs) - MAX_NAMED_RUNS} more"
            where = f"runs in progress: {named}"
        else:
            where = "no run was in progress"
        log.warning(
            "the event loop was blocked for %.1f s (%s): a blocking call (time.sleep, CPU-bound"
            " work, synchronous I/O) in actor code stops every actor and the Discord heartbeat;"
            " await asyncio.sleep, or move the work to asyncio.to_thread",
            self.lag,
            where,
        )
