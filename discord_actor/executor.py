"""Running one claimed run: the actor's code in a task and context of its own, within its
timeout, until it returns, raises, times out or is stopped (a shutdown, a lost lease). What the
run is then recorded as is decided by ``outcome`` and written by ``outcome_writer``; what was
stored is logged here, and alerted on.

The actor's code runs in a task of its own, so that a shutdown (or a lost lease) can cancel it
without cancelling the recording of its outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from .actor import Posted, RunContext
from .alerts import AlertSender
from .budget import ConnectionBudget
from .clock import Clock
from .db.records import ClaimedRun, Finished, Outcome, TaskView
from .db.store import Store
from .enums import RunStatus
from .errors import NotRetried
from .keyed import Schedules
from .logs import current_run
from .metrics import RuntimeMetrics
from .outcome import (
    ActorCodeResult,
    StateNotSerializable,
    alert_due,
    decide_outcome,
    retry_delay,
    state_json,
    succeeded_outcome,
)
from .outcome_writer import (
    MAX_OUTCOMES_PER_WRITE,
    MAX_UNWRITTEN,
    REFUSED_OUTCOME_ERRORS,
    OutcomeWriter,
    RunNoLongerOwned,
    Written,
)
from .platforms import Platform
from .platforms.nonces import post_nonce
from .plugins import LoadedActor
from .schedules.base import Schedule, format_slot
from .schedules.registry import schedule_of

__all__ = [  # with what moved to ``outcome`` and ``outcome_writer``, still importable here
    "MAX_OUTCOMES_PER_WRITE",
    "REFUSED_OUTCOME_ERRORS",
    "STOP_GRACE_SECONDS",
    "ActorCodeResult",
    "Executor",
    "RunNoLongerOwned",
    "StateNotSerializable",
    "Written",
    "retry_delay",
    "state_json",
]

log = logging.getLogger("discord_actor.runtime")

# Read once: a member read from its enum class costs a descriptor call on Python 3.11 (60 ns),
# and these are read at every run.
_SUCCEEDED, _FAILED = RunStatus.SUCCEEDED, RunStatus.FAILED
_TIMED_OUT, _CANCELLED = RunStatus.TIMED_OUT, RunStatus.CANCELLED
# How long actor code may take to stop once cancelled (its timeout, a shutdown, a lost lease)
# before its run is recorded anyway and the code is left to end alone.
STOP_GRACE_SECONDS = 2.0


class _LiveRun:
    """A run whose actor code has not ended yet, and how it is to end if it is stopped."""

    __slots__ = ("code", "ended", "run", "stopping_as", "timer")

    def __init__(self, run: ClaimedRun, ended: asyncio.Future[ActorCodeResult]) -> None:
        self.run = run
        self.ended = ended  # the code's result, or the stop's when the code does not stop
        self.code: asyncio.Task[ActorCodeResult] | None = None
        self.stopping_as: RunStatus | None = None  # TIMED_OUT | CANCELLED once stopped
        self.timer: asyncio.TimerHandle | None = None

    def stopped(self, error: BaseException | None) -> ActorCodeResult:
        """What a stopped run records, whether its code ended by the cancellation or not."""
        if self.stopping_as is _TIMED_OUT:
            return _TIMED_OUT, TimeoutError(), None
        return _CANCELLED, error or asyncio.CancelledError(), None

    def code_done(self, code: asyncio.Task[ActorCodeResult]) -> None:
        if self.ended.done():  # given up on earlier, or the run itself was cancelled
            return
        if code.cancelled():
            self.ended.set_result(self.stopped(None))
        elif (error := code.exception()) is not None:
            self.ended.set_exception(error)
        else:
            self.ended.set_result(code.result())


class Executor:
    """Starts claimed runs and records how they ended."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        actors: Mapping[str, LoadedActor],
        schedules: Mapping[str, Schedule],
        budget: ConnectionBudget,
        platforms: Mapping[str, Platform],
        alerts: AlertSender,
        *,
        client: Any = None,
        on_finished: Callable[[TaskView | None], None],
        keyed: Schedules | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.actors = actors
        self.schedules = schedules
        self.budget = budget
        self.platforms = platforms
        self.alerts = alerts
        self.client = client
        self._on_finished = on_finished
        self.keyed = keyed  # the runtime's keyed schedules API, as ctx.schedules
        self.metrics = metrics or RuntimeMetrics()
        self.running: dict[int, asyncio.Task[None]] = {}  # run id -> its whole execution
        self.local_runs: Counter[int] = Counter()  # task id -> runs in flight here
        # Runs whose actor code has ended and whose outcome is waiting for the writer: they no
        # longer hold a place of max_concurrent_runs (``places_held``).
        self.writing = 0
        #: told when a run's actor code has ended: its place is free for the next claim
        self.on_code_ended: Callable[[], None] = lambda: None
        self._actor_code: dict[int, _LiveRun] = {}
        # Runs started here whose outcome could not be written (a bug, a shutdown): still
        # ``running`` in the database, they are not lost claims to start (``known_runs``).
        self._unrecorded: set[int] = set()
        self._runaway: set[asyncio.Task[ActorCodeResult]] = set()  # did not stop, left alone
        self._loggers: dict[str, logging.Logger] = {}  # made at an actor's first run
        self._cancel_reason = "cancelled"
        self.writer = OutcomeWriter(store)
        #: server.log_runs = "all": a line per succeeded run too (failures are always logged)
        self.log_successes = True
        # Whether this process was stalled past its lease (cancelling the runs in flight if so).
        self.lease_in_doubt: Callable[[], bool] = lambda: False

    def _logger(self, actor: str) -> logging.Logger:
        logger = self._loggers.get(actor)
        if logger is None:
            logger = self._loggers[actor] = logging.getLogger(f"discord_actor.actors.{actor}")
        return logger

    def start(self, run: ClaimedRun) -> None:
        self.local_runs[run.task_id] += 1
        self.running[run.run_id] = asyncio.create_task(
            self._execute(run), name=f"run {run.run_id} of {run.actor}"
        )

    def cancel_runs(self, reason: str) -> None:
        """Cancel the actor code of every run in flight; each is recorded ``cancelled``."""
        self._cancel_reason = reason
        for live in list(self._actor_code.values()):
            self._stop_code(live, _CANCELLED)

    def _stop_code(self, live: _LiveRun, status: RunStatus) -> None:
        """Cancel a run's actor code, and give it ``STOP_GRACE_SECONDS`` to stop."""
        if live.stopping_as is not None or live.ended.done() or live.code is None:
            return
        live.stopping_as = status
        live.code.cancel()
        if live.timer is not None:
            live.timer.cancel()
        live.timer = asyncio.get_running_loop().call_later(
            STOP_GRACE_SECONDS, self._give_up, live
        )

    def _give_up(self, live: _LiveRun) -> None:
        """The actor code ignored its cancellation: record the run anyway and move on."""
        code = live.code
        if live.ended.done() or code is None:
            return
        log.warning(
            "run %d of %s: the actor's code did not stop within %g s of being cancelled (does"
            " it catch CancelledError?); the run is recorded %s and its code left to end alone",
            live.run.run_id,
            live.run.actor,
            STOP_GRACE_SECONDS,
            live.stopping_as,
        )
        self._runaway.add(code)
        code.add_done_callback(self._runaway.discard)
        live.ended.set_result(live.stopped(None))

    def known_runs(self) -> set[int]:
        """Every run this process started and still owns: those running, and those whose
        outcome it could not write. A ``running`` row of this process not among them is a
        claim whose answer was lost."""
        return set(self.running) | self._unrecorded

    @property
    def places_held(self) -> int:
        """The places of ``max_concurrent_runs`` taken: runs whose actor code has not ended,
        and those waiting for the writer beyond ``MAX_UNWRITTEN`` (so that a database slower
        than the runs holds the claims back, and what waits for it stays bounded).

        A run whose code has ended waits for its outcome to be stored without holding a place:
        in a burst the next claim need not wait for the last one's outcomes, and the outcomes
        gather into large writes."""
        writing = self.writing
        return len(self.running) - writing + max(0, writing - MAX_UNWRITTEN)

    @property
    def runaway(self) -> int:
        """Actor code that was given up on and has not ended yet."""
        return len(self._runaway)

    @property
    def runs_in_actor_code(self) -> int:
        return len(self._actor_code)

    def in_progress(self) -> list[ClaimedRun]:
        """The runs whose actor code has not ended yet."""
        return [live.run for live in self._actor_code.values()]

    async def wait_idle(self) -> None:
        """Wait until every run this process started has finished and been recorded."""
        while self.running:
            await asyncio.wait(list(self.running.values()))

    async def close(self) -> None:
        """Stop writing outcomes (at shutdown, after the runs were waited for)."""
        await self.writer.close()

    # -- one run ------------------------------------------------------------------------------

    async def _execute(self, run: ClaimedRun) -> None:
        # The run's task (and its actor code's, which copies it) knows which run it is: every
        # log line from it names the actor and run (``logs.current_run``). Set here, in the
        # context the task was given, not in a copy made for it: one copy a run, not two.
        current_run.set((run.actor, run.run_id))
        loaded = self.actors[run.actor]
        cfg = loaded.config
        platform = self.platforms[loaded.platform]
        if run.channel_id is not None:  # a keyed schedule's own channel, for ctx.post
            cfg = replace(cfg, channel_id=run.channel_id)
        # The slot in the schedule's zone (the database gives UTC): what ctx.scheduled_for and
        # the logs say matches status and history.
        tz = schedule_of(self.schedules, run.actor, run.keyed_schedule).tz
        slot = run.scheduled_for.astimezone(tz)

        loop = asyncio.get_running_loop()
        live = _LiveRun(run, loop.create_future())
        started = loop.time()
        lateness = (self.clock.now() - run.scheduled_for).total_seconds()
        self.metrics.run_started(run.trigger, lateness)

        takes_nonce = getattr(platform, "takes_nonce", False)
        posts = 0
        metrics = self.metrics

        async def post(content: str | None, **kwargs: Any) -> Posted:
            nonlocal posts
            self._still_running(live)
            index, posts = posts, posts + 1
            if takes_nonce and "nonce" not in kwargs:  # the same at every attempt of the slot
                kwargs["nonce"] = post_nonce(run.actor, run.key, run.scheduled_for, index)
            queued = self.clock.now()
            try:
                posted = await platform.post(cfg, content, **kwargs)
            except NotRetried:
                metrics.post_ended("refused")
                raise
            except Exception:
                metrics.post_ended("failed")
                raise
            delivered = self.clock.now()
            metrics.post_ended("delivered", (delivered - run.scheduled_for).total_seconds())
            # When it was due (the run's slot), handed over (ctx.post) and answered.
            posted["due"] = run.scheduled_for.isoformat()
            posted["queued"] = queued.isoformat()
            posted["delivered"] = delivered.isoformat()
            return posted

        def connect() -> AbstractAsyncContextManager[asyncpg.Connection]:
            self._still_running(live)
            return self.budget.connection(cfg, run.run_id)

        async def checkpoint(state: dict[str, Any]) -> None:
            self._still_running(live)
            await self.writer.checkpoint(run, state)

        ctx = RunContext(
            run_id=run.run_id,
            actor=run.actor,
            scheduled_for=slot,
            attempt=run.attempt,
            trigger=run.trigger,
            settings=cfg.settings,
            state=run.state,
            logger=self._logger(run.actor),
            connect=connect,
            post=post,
            checkpoint=checkpoint,
            client=self.client,
            key=run.key,
            payload=run.payload,
            schedules=self.keyed,
            lateness=timedelta(seconds=max(0.0, lateness)),
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run %d of %s started (%s, attempt %d, slot %s)",
                run.run_id,
                run.actor,
                run.trigger,
                run.attempt,
                format_slot(slot),
            )
        code = live.code = loop.create_task(
            self._run_actor_code(loaded, ctx, live), name=f"actor {run.actor}"
        )
        code.add_done_callback(live.code_done)
        # One timer per run: at the timeout it cancels the code, then gives it a moment to stop.
        live.timer = loop.call_later(cfg.timeout_seconds, self._stop_code, live, _TIMED_OUT)
        self._actor_code[run.run_id] = live
        finished: Finished | None = None
        recorded = False
        try:
            ended = await live.ended
            if run.run_id in self.budget.leases:
                self._reclaim(run)
            if ended[0] == _SUCCEEDED:  # the common case: no clock read
                outcome = succeeded_outcome(cfg, ended[2], ctx.posted)
            else:
                outcome = decide_outcome(
                    cfg,
                    run.attempt,
                    ended,
                    ctx.posted,
                    now=self.clock.now(),
                    cancel_reason=self._cancel_reason,
                )
            self.writing += 1
            self.on_code_ended()
            try:
                finished, outcome = await self.writer.write(run, outcome)
            finally:
                self.writing -= 1
            recorded = True
        finally:
            if not recorded:
                self._unrecorded.add(run.run_id)
            live.timer.cancel()
            if not code.done() and live.stopping_as is None:
                code.cancel()  # this run itself was cancelled: so is its actor code
            self._actor_code.pop(run.run_id, None)
            self.local_runs[run.task_id] -= 1
            if not self.local_runs[run.task_id]:
                del self.local_runs[run.task_id]
            self.running.pop(run.run_id, None)
            self._on_finished(None if finished is None else finished.task)
        self.metrics.run_finished(run.actor, outcome.status, loop.time() - started)
        self._after_finish(run, slot, outcome, finished)

    def _still_running(self, live: _LiveRun) -> None:
        """Before a side effect (a post, a connection, a checkpoint): a run that was stopped, or
        whose process was stalled past its lease, goes no further, even if its code has not
        reached an ``await`` since it was cancelled."""
        if live.stopping_as is None and not self.lease_in_doubt():
            return
        raise asyncio.CancelledError()

    def _reclaim(self, run: ClaimedRun) -> None:
        """Close the connections a run still holds after its code ended or was given up on."""
        kept = self.budget.reclaim(run.run_id, run.actor)
        if kept:
            log.warning(
                "actor %s: run %d kept %d database connection(s) past its end (use"
                " `async with ctx.db()` and let it exit); they were closed",
                run.actor,
                run.run_id,
                kept,
            )

    @staticmethod
    async def _run_actor_code(
        loaded: LoadedActor, ctx: RunContext, live: _LiveRun
    ) -> ActorCodeResult:
        """Run the actor; returns (status, error, new state as JSON). Never raises.

        Once stopped (timeout, shutdown) the run ends as stopped even if the code caught its
        cancellation and returned or failed afterwards."""
        try:
            await loaded.instance.run(ctx)
            if live.stopping_as is None:
                return _SUCCEEDED, None, state_json(ctx.state)
        except asyncio.CancelledError as e:
            return live.stopped(e)
        except Exception as e:
            if live.stopping_as is None:
                return _FAILED, e, None
        return live.stopped(None)

    def _after_finish(
        self, run: ClaimedRun, slot: datetime, outcome: Outcome, finished: Finished | None
    ) -> None:
        """Log what was stored (``outcome``) and send the alerts it calls for."""
        label = run.actor if run.key is None else f"{run.actor} [{run.key}]"
        if finished is None:
            log.warning(
                "run %d of %s was declared abandoned by another process while it ran;"
                " its outcome (%s) was not recorded",
                run.run_id,
                label,
                outcome.status,
            )
            return
        if outcome.status == _SUCCEEDED:
            if self.log_successes and log.isEnabledFor(logging.INFO):  # formatting costs
                log.info(
                    "run %d of %s succeeded (%s, slot %s)",
                    run.run_id,
                    label,
                    run.trigger,
                    format_slot(slot),
                )
            return
        retry = ""
        if outcome.retry_at is not None:  # in the schedule's zone, to the second, like slots
            retry = f"; retry at {format_slot(outcome.retry_at.astimezone(slot.tzinfo))}"
        log.warning(
            "run %d of %s %s: %s%s",
            run.run_id,
            label,
            outcome.status,
            f"{outcome.error_type}: {outcome.error_message}"
            if outcome.error_type
            else outcome.error_message,
            retry,
        )
        alert = alert_due(run, outcome, finished)
        if alert is not None:
            if alert.paused:
                log.error("%s", alert.text())
            self.alerts.send(alert)
