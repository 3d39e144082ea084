"""Running one claimed run: the actor's code within its timeout, then recording the outcome, the
actor's new state, a retry and the circuit breaker together.

The actor's code runs in a task of its own, so that a shutdown (or a lost lease) can cancel it
without cancelling the recording of its outcome. Outcomes are recorded by one writer: what
finishes while a write is in flight goes into the next one, so that under load many outcomes
share one statement and one commit, and an idle process writes each at once. A run is not over
until its outcome is stored, and writing is retried while the database is unreachable: a run
this process started always gets a final status while the process lives (and if it dies, the
lease recovery marks the run ``abandoned``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from .actor import Posted, RunContext
from .alerts import Alert, AlertSender
from .budget import ConnectionBudget
from .clock import Clock
from .config import ActorConfig
from .db.records import ClaimedRun, Finished, Outcome, TaskView
from .db.store import Store
from .db.transient import TRANSIENT_DB_ERRORS, Backoff
from .keyed import Schedules
from .logs import current_run
from .metrics import RuntimeMetrics
from .platforms import Platform
from .plugins import LoadedActor
from .schedules import Schedule, format_slot, schedule_of
from .storable import MAX_ERROR_MESSAGE, MAX_TRACEBACK, Unstorable, clean_text, jsonb_json

log = logging.getLogger("discord_actor.runtime")

# Errors meaning the database will never store this outcome as it is.
REFUSED_OUTCOME_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, TypeError, ValueError)


class RunNoLongerOwned(RuntimeError):
    """The run was declared abandoned by another process while it ran here."""


class StateNotSerializable(TypeError):
    """An actor left something in ``ctx.state`` that JSON cannot hold."""


def state_json(state: object) -> str:
    """The state as stored; fails the run (not the bookkeeping) when PostgreSQL cannot hold it,
    naming the key, rather than have the database refuse the outcome of a run that succeeded."""
    try:
        return jsonb_json(state, "ctx.state")
    except Unstorable as e:
        raise StateNotSerializable(
            "ctx.state must hold only JSON values (dict, list, str, int, finite float, bool,"
            f" None; no NUL character): {e}"
        ) from None


def retry_delay(attempt: int, backoff: float, max_backoff: float) -> float:
    """Exponential backoff before attempt ``attempt + 1``."""
    return float(min(backoff * 2 ** (attempt - 1), max_backoff))


ActorCodeResult = tuple[str, BaseException | None, str | None]
# What writing an outcome gives: the task's row (None: the run was declared abandoned) and the
# outcome stored, which is a plain failure when the database refused the run's own.
Written = tuple[Finished | None, Outcome]
MAX_OUTCOMES_PER_WRITE = 256
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
        self.stopping_as: str | None = None  # "timed_out" | "cancelled" once stopped
        self.timer: asyncio.TimerHandle | None = None

    def stopped(self, error: BaseException | None) -> ActorCodeResult:
        """What a stopped run records, whether its code ended by the cancellation or not."""
        if self.stopping_as == "timed_out":
            return "timed_out", TimeoutError(), None
        return "cancelled", error or asyncio.CancelledError(), None

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
        self._actor_code: dict[int, _LiveRun] = {}
        self._runaway: set[asyncio.Task[ActorCodeResult]] = set()  # did not stop, left alone
        self._loggers: dict[str, logging.Logger] = {}  # made at an actor's first run
        self._cancel_reason = "cancelled"
        self._unwritten: list[tuple[ClaimedRun, Outcome, asyncio.Future[Written]]] = []
        self._writer: asyncio.Task[None] | None = None
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
        # The run's task (and its actor code's, which copies it) knows which run it is: every
        # log line from it names the actor and run (``logs.current_run``).
        context = contextvars.copy_context()
        context.run(current_run.set, (run.actor, run.run_id))
        task = asyncio.create_task(
            self._execute(run), name=f"run {run.run_id} of {run.actor}", context=context
        )
        self.running[run.run_id] = task

    def cancel_runs(self, reason: str) -> None:
        """Cancel the actor code of every run in flight; each is recorded ``cancelled``."""
        self._cancel_reason = reason
        for live in list(self._actor_code.values()):
            self._stop_code(live, "cancelled")

    def _stop_code(self, live: _LiveRun, status: str) -> None:
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
        if self._writer is not None:
            self._writer.cancel()
            with suppress(asyncio.CancelledError):
                await self._writer

    # -- one run ------------------------------------------------------------------------------

    async def _execute(self, run: ClaimedRun) -> None:
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

        async def post(content: str | None, **kwargs: Any) -> Posted:
            self._still_running(live)
            return await platform.post(cfg, content, **kwargs)

        def connect() -> AbstractAsyncContextManager[asyncpg.Connection]:
            self._still_running(live)
            return self.budget.connection(cfg, run.run_id)

        async def checkpoint(state: dict[str, Any]) -> None:
            self._still_running(live)
            await self._checkpoint(run, state)

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
        live.timer = loop.call_later(cfg.timeout_seconds, self._stop_code, live, "timed_out")
        self._actor_code[run.run_id] = live
        finished: Finished | None = None
        try:
            status, error, new_state = await live.ended
            if run.run_id in self.budget.leases:
                self._reclaim(run)
            outcome = self._outcome(cfg, run, ctx, status, error, new_state)
            finished, outcome = await self._record(run, outcome)
        finally:
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
                return "succeeded", None, state_json(ctx.state)
        except asyncio.CancelledError as e:
            return live.stopped(e)
        except Exception as e:
            if live.stopping_as is None:
                return "failed", e, None
        return live.stopped(None)

    async def _checkpoint(self, run: ClaimedRun, state: dict[str, Any]) -> None:
        if not await self.store.runs.checkpoint(run.task_id, run.run_id, state_json(state)):
            raise RunNoLongerOwned(
                f"run {run.run_id} of {run.actor} is no longer running here (another process"
                " declared it abandoned); its state was not saved"
            )

    def _outcome(
        self,
        cfg: ActorConfig,
        run: ClaimedRun,
        ctx: RunContext,
        status: str,
        error: BaseException | None,
        new_state: str | None,
    ) -> Outcome:
        if status == "succeeded":  # the common case, kept cheap
            return Outcome(
                status=status,
                posted=ctx.posted,
                state_json=new_state,
                max_consecutive_failures=cfg.max_consecutive_failures,
            )
        retry_at: datetime | None = None
        if status in ("failed", "timed_out") and run.attempt < cfg.retry.attempts:
            delay = retry_delay(
                run.attempt, cfg.retry.backoff_seconds, cfg.retry.max_backoff_seconds
            )
            retry_at = self.clock.now() + timedelta(seconds=delay)
        elif (
            status == "cancelled"
            and run.attempt < cfg.retry.attempts
            and cfg.schedule.type != "immediate"  # the next start brings its own run
        ):
            retry_at = self.clock.now()  # interrupted by a shutdown: run it again at next start
        message = None
        if status == "timed_out":
            message = f"run exceeded timeout_seconds = {cfg.timeout_seconds:g}"
        elif status == "cancelled":
            message = self._cancel_reason
        elif error is not None:
            message = str(error) or type(error).__name__
        return Outcome(
            status=status,
            error_type=None if error is None else clean_text(type(error).__name__, 200),
            error_message=None if message is None else clean_text(message, MAX_ERROR_MESSAGE),
            error_traceback=None
            if status != "failed" or error is None
            else clean_text("".join(traceback.format_exception(error)), MAX_TRACEBACK),
            posted=list(ctx.posted),
            state_json=new_state,
            retry_at=retry_at,
            counts_as_failure=status in ("failed", "timed_out") and retry_at is None,
            max_consecutive_failures=cfg.max_consecutive_failures,
        )

    async def _record(self, run: ClaimedRun, outcome: Outcome) -> Written:
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
        ``running`` while this process is alive.
        """
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                finished = await self.store.runs.finish_many([(r.run_id, o) for r, o in batch])
                return [(f, o) for f, (_, o) in zip(finished, batch, strict=True)]
            except REFUSED_OUTCOME_ERRORS as e:
                if len(batch) == 1:
                    return [await self._write_refused(*batch[0], e)]
                return [(await self._write_batch([item]))[0] for item in batch]
            except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as e:
                # An outage, a lock timeout, a read-only failover: wait and write it again.
                delay = backoff.next()
                first = batch[0][0]
                log.warning(
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
                await asyncio.sleep(delay)

    async def _write_refused(self, run: ClaimedRun, outcome: Outcome, e: BaseException) -> Written:
        """Record a plain failure in place of an outcome that the database refused."""
        if outcome.error_type == "RecordError":
            raise e
        log.error(
            "run %d of %s: the database refused its outcome (%s: %s)",
            run.run_id,
            run.actor,
            type(e).__name__,
            e,
        )
        plain = Outcome(
            status="failed",
            error_type="RecordError",
            error_message=clean_text(
                f"the outcome could not be recorded: {type(e).__name__}: {e}", MAX_ERROR_MESSAGE
            ),
            max_consecutive_failures=outcome.max_consecutive_failures,
            counts_as_failure=True,
        )
        return (await self._write_batch([(run, plain)]))[0]

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
        if outcome.status == "succeeded":
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
        if finished.breaker_tripped:
            alert = Alert(
                run.actor, run.run_id, outcome, finished.consecutive_failures, True, key=run.key
            )
            log.error("%s", alert.text())
            self.alerts.send(alert)
        elif outcome.counts_as_failure and finished.consecutive_failures >= 2:
            self.alerts.send(
                Alert(
                    run.actor,
                    run.run_id,
                    outcome,
                    finished.consecutive_failures,
                    False,
                    key=run.key,
                )
            )
