"""Claiming and executing runs.

One ``Runtime`` per process. Its scheduler loop keeps a copy of every task's pending work (the
next slot, a retry, a manual trigger), decides what is due with the process's clock, and claims
it through the database, which makes sure that each slot runs once however many processes share
it. Runs execute as asyncio tasks; each ends with one ``finish`` statement that records the
outcome, the actor's new state, a retry and the circuit breaker together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from .actor import Posted, RunContext
from .clock import Clock
from .config import ActorConfig, Config
from .db import Database
from .db.pool import reset_session
from .db.store import ClaimedRun, ClaimRequest, Finished, Outcome, Store, TaskSpec, TaskView
from .platforms import Platform
from .platforms.console import ConsolePlatform
from .platforms.none import NoPlatform
from .plugins import LoadedActor
from .schedules import Schedule, build_schedule, decide, format_slot, jittered

log = logging.getLogger("discord_actor.runtime")

# Errors that mean "the database is unreachable right now", worth retrying.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    TimeoutError,
)
# Errors meaning the database will never store this outcome as it is.
REFUSED_OUTCOME_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, TypeError, ValueError)


@dataclass(frozen=True)
class Alert:
    """A failure worth telling an operator about: a run of failures, or the breaker tripping."""

    actor: str
    run_id: int
    outcome: Outcome
    consecutive_failures: int
    paused: bool  # the circuit breaker paused the actor

    def text(self) -> str:
        error = f"{self.outcome.error_type}: {self.outcome.error_message}"
        if self.paused:
            return (
                f"actor {self.actor} paused after {self.consecutive_failures} consecutive"
                f" failures (last: run {self.run_id}, {error}); resume it with:"
                f" discord-actor resume {self.actor}"
            )
        return (
            f"actor {self.actor} failed {self.consecutive_failures} times in a row"
            f" (last: run {self.run_id}, {error})"
        )


AlertSink = Callable[[Alert], Awaitable[None]]


MISFIRE_GRACE_SECONDS = 60.0  # a slot later than this (plus its jitter) counts as missed
RECORD_TIMEOUT_AT_SHUTDOWN = 10.0  # seconds to record cancelled runs before giving up


class PoolExhausted(Exception):
    """An actor waited longer than ``acquire_timeout_seconds`` for a pooled connection."""


class RunNoLongerOwned(RuntimeError):
    """The run was declared abandoned by another process while it ran here."""


class StateNotSerializable(TypeError):
    """An actor left something in ``ctx.state`` that JSON cannot hold."""


def _state_json(state: object) -> str:
    """The state as stored; fails the run (not the bookkeeping) when JSON cannot hold it."""
    try:
        return json.dumps(state)
    except (TypeError, ValueError) as e:
        raise StateNotSerializable(
            f"ctx.state must hold only JSON values (dict, list, str, int, float, bool, None): {e}"
        ) from None


def _utc(when: datetime | None) -> datetime | None:
    return None if when is None else when.astimezone(UTC)


def default_platforms() -> dict[str, Platform]:
    """Console for console and (dry-run) discord actors; nothing for ``none``."""
    console = ConsolePlatform()
    return {"console": console, "discord": console, "none": NoPlatform()}


def retry_delay(attempt: int, backoff: float, max_backoff: float) -> float:
    """Exponential backoff before attempt ``attempt + 1``."""
    return float(min(backoff * 2 ** (attempt - 1), max_backoff))


class Runtime:
    """Runs the configured actors of one process until stopped."""

    def __init__(
        self,
        config: Config,
        database: Database,
        actors: Mapping[str, LoadedActor],
        *,
        clock: Clock | None = None,
        platforms: Mapping[str, Platform] | None = None,
        client: Any = None,
        alerts: AlertSink | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.config = config
        self.database = database
        self.store = Store(database.pool, database.schema)
        self.clock = clock or Clock()
        self.platforms = dict(platforms or default_platforms())
        self.client = client
        self.alerts = alerts  # where failure alerts go (Discord's alert channel), if anywhere
        self._alert_tasks: set[asyncio.Task[None]] = set()
        self.instance_id = (
            instance_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.actors = dict(actors)
        self.schedules: dict[str, Schedule] = {
            name: build_schedule(a.config.schedule) for name, a in self.actors.items()
        }
        pool_max = config.database.max_pool_size
        # One pooled connection stays free for the runtime's own bookkeeping, so that actors
        # holding every connection can never block the statements that finish their runs.
        self._actors_share = asyncio.Semaphore(max(1, pool_max - 1))
        self._actor_limits = {
            name: asyncio.Semaphore(a.config.max_connections) for name, a in self.actors.items()
        }
        self._actor_in_use: Counter[str] = Counter()
        self._views: dict[int, TaskView] = {}
        self._blocked: set[int] = set()  # claimed by others or at capacity; until the next sync
        self._broken: set[str] = set()  # actors whose setup() failed
        self._local_runs: Counter[int] = Counter()
        self._running: dict[int, asyncio.Task[None]] = {}  # run id -> its whole execution
        self._actor_code: dict[int, asyncio.Task[tuple[str, BaseException | None, str | None]]] = {}
        self._wake = asyncio.Event()
        self._needs_sync = True
        self._last_sync = 0.0
        self._stopping = False
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._cancel_reason = "cancelled"
        self._healthy_since = time.monotonic()  # since the last failed heartbeat
        self._next_due: datetime | None = None  # earliest future work seen by the last pass
        self.clock.on_change(self._wake.set)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, loops: bool = True) -> None:
        """Register, reconcile the config, run setup hooks and start the scheduler loop.

        With ``loops=False`` nothing runs in the background: tests drive ``run_due``.
        """
        lease = self.config.server.lease_seconds
        await self.store.register_instance(
            self.instance_id, socket.gethostname(), os.getpid(), lease
        )
        await self.store.recover_abandoned(self.clock.now())
        await self.reconcile()
        for name, loaded in self.actors.items():
            if not loaded.config.enabled:
                continue
            try:
                await loaded.instance.setup()
            except Exception as e:
                self._broken.add(name)
                log.error(
                    "actor %s: setup() failed, it will not run in this process: %s: %s",
                    name,
                    type(e).__name__,
                    e,
                )
        await self.sync()
        self._started = True
        if loops:
            self._background = [
                asyncio.create_task(self._scheduler_loop(), name="discord-actor scheduler"),
                asyncio.create_task(self._heartbeat_loop(), name="discord-actor heartbeat"),
                asyncio.create_task(self._listen_loop(), name="discord-actor listener"),
            ]
        log.info("runtime %s started with %d actor(s)", self.instance_id, len(self.actors))

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down gracefully."""
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop claiming, let runs finish within the grace period, cancel the rest."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        # The scheduler finishes its current pass (a claim in flight is not cut off) and stops.
        scheduler = [t for t in self._background if "scheduler" in t.get_name()]
        await asyncio.gather(*scheduler, return_exceptions=True)
        running = list(self._running.values())
        if running:
            grace = self.config.server.shutdown_grace_seconds
            log.info("waiting up to %.0f s for %d running run(s)", grace, len(running))
            _, pending = await asyncio.wait(running, timeout=grace)
            if pending:
                self.cancel_runs(f"cancelled by shutdown after shutdown_grace_seconds = {grace:g}")
                _, pending = await asyncio.wait(pending, timeout=RECORD_TIMEOUT_AT_SHUTDOWN)
            for task in pending:  # the database is gone: the lease will mark these abandoned
                task.cancel()
            if pending:
                log.warning(
                    "%d run(s) could not be recorded before shutdown; another process"
                    " (or the next start) marks them abandoned",
                    len(pending),
                )
                await asyncio.wait(pending)
        for name, loaded in self.actors.items():
            if loaded.config.enabled and name not in self._broken and self._started:
                try:
                    await loaded.instance.teardown()
                except Exception as e:
                    log.error("actor %s: teardown() failed: %s: %s", name, type(e).__name__, e)
        if self._alert_tasks:
            await asyncio.wait(list(self._alert_tasks), timeout=5)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with suppress(*TRANSIENT_DB_ERRORS):
            await self.store.unregister_instance(self.instance_id)
        log.info("runtime %s stopped", self.instance_id)

    def cancel_runs(self, reason: str) -> None:
        """Cancel the actor code of every run in flight; each is recorded ``cancelled``.

        Only the actor's own code is cancelled: recording the outcome goes on.
        """
        self._cancel_reason = reason
        for task in list(self._actor_code.values()):
            task.cancel()

    # -- scheduling --------------------------------------------------------------------------

    async def reconcile(self) -> None:
        now = self.clock.now()
        specs = []
        for name, loaded in self.actors.items():
            schedule = self.schedules[name]
            first = schedule.initial_slot(now)
            specs.append(
                TaskSpec(
                    actor=name,
                    enabled=loaded.config.enabled,
                    schedule=schedule.normalized(),
                    schedule_hash=schedule.hash(),
                    max_instances=loaded.config.max_instances,
                    max_attempts=loaded.config.retry.attempts,
                    initial_slot=first,
                    initial_due=None if first is None else self._jitter(name, first),
                    on_every_start=schedule.config.type == "immediate",
                )
            )
        await self.store.reconcile(specs, now)

    async def sync(self) -> None:
        """Refresh the local copy of every task (changes by other processes and operators)."""
        views = await self.store.sync()
        self._views = {v.id: v for v in views}
        self._blocked.clear()
        self._needs_sync = False
        self._last_sync = time.monotonic()

    async def run_due(self) -> list[ClaimedRun]:
        """Claim and start everything due now; returns what this process claimed."""
        now = self.clock.now()
        free = self.config.server.max_concurrent_runs - len(self._running)
        if free <= 0:
            return []
        # One pass over the tasks: what is due now, and when the next thing will be.
        due: list[tuple[datetime, int]] = []
        self._next_due = None
        for view in self._views.values():
            when = self._due_time(view, now)
            if when is None or not self._runnable(view):
                continue
            if when <= now:
                due.append((when, view.id))
            else:
                self._note_due(when)
        due.sort()
        if len(due) > free:
            self._note_due(now)  # more is due than this pass may start
        requests = [
            request
            for _, task_id in due[:free]
            if (request := self._due_request(self._views[task_id], now)) is not None
        ]
        if not requests:
            return []
        claimed = await self.store.claim(self.instance_id, requests, now)
        got = {c.task_id for c in claimed}
        for request in requests:
            if request.task_id not in got:
                self._blocked.add(request.task_id)
                self._needs_sync = True
                continue
            self._apply_claim(self._views[request.task_id], request)
        for run in claimed:
            if run.status == "skipped":
                log.info("actor %s: %s", run.actor, "skipped missed slot(s) (catch_up = skip)")
                continue
            self._local_runs[run.task_id] += 1
            task = asyncio.create_task(self._execute(run), name=f"run {run.run_id} of {run.actor}")
            self._running[run.run_id] = task
        return claimed

    async def wait_idle(self) -> None:
        """Wait until every run this process started has finished and been recorded."""
        while self._running:
            await asyncio.wait(list(self._running.values()))

    def _runnable(self, view: TaskView) -> bool:
        return (
            view.enabled
            and not view.paused
            and view.id not in self._blocked
            and view.actor in self.actors
            and view.actor not in self._broken
            and self._local_runs[view.id] < view.max_instances
        )

    def _due_time(self, view: TaskView, now: datetime) -> datetime | None:
        """When this task next has work, by the scheduler's clock (a manual trigger: now)."""
        if view.manual_at is not None:
            return now
        when = view.due_at
        if view.retry_at is not None and (when is None or view.retry_at < when):
            when = view.retry_at
        return when

    def _note_due(self, when: datetime | None) -> None:
        """Remember the earliest future work, for the scheduler's sleep."""
        if when is not None and (self._next_due is None or when < self._next_due):
            self._next_due = when

    def _due_request(self, view: TaskView, now: datetime) -> ClaimRequest | None:
        if view.retry_at is not None and view.retry_slot is not None and view.retry_at <= now:
            return ClaimRequest(
                task_id=view.id,
                kind="retry",
                expected=view.retry_slot,
                attempt=view.retry_attempt or 2,
                scheduled_for=view.retry_slot,
                trigger="retry",
            )
        if view.manual_at is not None:
            return ClaimRequest(
                task_id=view.id,
                kind="manual",
                expected=view.manual_at,
                attempt=1,
                scheduled_for=view.manual_at,
                trigger="manual",
            )
        if view.next_run is None or view.due_at is None or view.due_at > now:
            return None
        jitter = self.actors[view.actor].config.schedule.jitter_seconds
        decision = decide(
            self.schedules[view.actor], view.next_run, now, MISFIRE_GRACE_SECONDS + jitter
        )
        next_due = (
            None if decision.next_run is None else self._jitter(view.actor, decision.next_run)
        )
        skipped = decision.action == "skip"
        return ClaimRequest(
            task_id=view.id,
            kind="schedule",
            expected=view.next_run,
            attempt=1,
            scheduled_for=decision.scheduled_for,
            trigger=decision.trigger,
            status="skipped" if skipped else "running",
            new_next_run=decision.next_run,
            new_due_at=next_due,
            note=f'skipped {decision.skipped} missed slot(s) (catch_up = "skip")'
            if skipped
            else None,
        )

    def _apply_claim(self, view: TaskView, request: ClaimRequest) -> None:
        if request.kind == "schedule":
            # In UTC, like everything read from the database: same-zone datetimes compare by
            # wall clock, which is wrong around DST changes.
            view.next_run = _utc(request.new_next_run)
            view.due_at = _utc(request.new_due_at)
        elif request.kind == "retry":
            view.retry_slot = view.retry_at = view.retry_attempt = None
            self._needs_sync = True  # the task may have another retry pending
        else:
            view.manual_at = None
        self._note_due(self._due_time(view, self.clock.now()))

    def _jitter(self, actor: str, slot: datetime) -> datetime:
        return jittered(slot, self.actors[actor].config.schedule.jitter_seconds)

    def _next_wake_in(self) -> float:
        """Seconds until the earliest due work, capped by the poll interval."""
        poll = self.config.server.poll_interval_seconds
        until_sync = poll - (time.monotonic() - self._last_sync)
        if len(self._running) >= self.config.server.max_concurrent_runs:
            return max(0.0, until_sync)  # a finishing run wakes the loop
        if self._next_due is None:
            return max(0.0, min(until_sync, poll))
        until_due = (self._next_due - self.clock.now()).total_seconds()
        return max(0.0, min(until_sync, until_due, poll))

    async def _scheduler_loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                if self._needs_sync or time.monotonic() - self._last_sync >= (
                    self.config.server.poll_interval_seconds
                ):
                    await self.sync()
                await self.run_due()
                failures = 0
                delay = self._next_wake_in()
            except TRANSIENT_DB_ERRORS as e:
                failures += 1
                delay = min(0.25 * 2**failures, 5.0)
                self._needs_sync = True
                log.warning(
                    "database unavailable (%s: %s); retrying in %.1f s", type(e).__name__, e, delay
                )
            except Exception:
                # Anything else (a read-only failover, a lock timeout, a bug): keep scheduling.
                failures += 1
                delay = min(0.25 * 2**failures, 5.0)
                self._needs_sync = True
                log.exception("scheduler pass failed; retrying in %.1f s", delay)
            if self._stopping:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    # -- executing one run -------------------------------------------------------------------

    async def _execute(self, run: ClaimedRun) -> None:
        loaded = self.actors[run.actor]
        cfg = loaded.config
        run_log = logging.getLogger(f"discord_actor.actors.{run.actor}")
        ctx = RunContext(
            run_id=run.run_id,
            actor=run.actor,
            scheduled_for=run.scheduled_for,
            attempt=run.attempt,
            trigger=run.trigger,
            settings=cfg.settings,
            state=run.state,
            logger=run_log,
            connect=lambda: self._connection(cfg),
            post=lambda content, **kw: self._post(loaded, content, **kw),
            checkpoint=lambda state: self._checkpoint(run, state),
            client=self.client,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run %d of %s started (%s, attempt %d, slot %s)",
                run.run_id,
                run.actor,
                run.trigger,
                run.attempt,
                self._slot_text(run),
            )
        # The actor's code runs in a task of its own, so that a shutdown can cancel it without
        # cancelling the recording of its outcome.
        code = asyncio.create_task(self._run_actor_code(loaded, ctx), name=f"actor {run.actor}")
        self._actor_code[run.run_id] = code
        try:
            status, error, state_json = await code
            outcome = self._outcome(cfg, run, ctx, status, error, state_json)
            finished = await self._record(run, outcome)
        finally:
            self._actor_code.pop(run.run_id, None)
            self._local_runs[run.task_id] -= 1
            self._running.pop(run.run_id, None)
            self._wake.set()
        self._after_finish(run, outcome, finished)

    async def _run_actor_code(
        self, loaded: LoadedActor, ctx: RunContext
    ) -> tuple[str, BaseException | None, str | None]:
        """Run the actor within its timeout; returns (status, error, new state as JSON).

        Never raises."""
        timeout = asyncio.timeout(loaded.config.timeout_seconds)
        try:
            async with timeout:
                await loaded.instance.run(ctx)
            return "succeeded", None, _state_json(ctx.state)
        except asyncio.CancelledError as e:
            return "cancelled", e, None
        except TimeoutError as e:
            return ("timed_out" if timeout.expired() else "failed"), e, None
        except Exception as e:
            return "failed", e, None

    async def _checkpoint(self, run: ClaimedRun, state: dict[str, Any]) -> None:
        if not await self.store.checkpoint(run.task_id, run.run_id, _state_json(state)):
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
        state_json: str | None,
    ) -> Outcome:
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
            error_type=None if error is None else type(error).__name__,
            error_message=message,
            error_traceback=None
            if status != "failed" or error is None
            else "".join(traceback.format_exception(error)),
            posted=list(ctx.posted),
            state_json=state_json,
            retry_at=retry_at,
            counts_as_failure=status in ("failed", "timed_out") and retry_at is None,
            max_consecutive_failures=cfg.max_consecutive_failures,
        )

    async def _record(self, run: ClaimedRun, outcome: Outcome) -> Finished | None:
        """Write the outcome, retrying while the database is unreachable: nothing is lost.

        An outcome the database refuses (a bug, or a value it cannot store) is replaced by a
        plain failure, so that the run never stays ``running`` while this process is alive.
        """
        delay = 0.2
        while True:
            try:
                return await self.store.finish(run.run_id, outcome)
            except REFUSED_OUTCOME_ERRORS as e:
                if outcome.error_type == "RecordError":
                    raise
                log.error(
                    "run %d of %s: the database refused its outcome (%s: %s)",
                    run.run_id,
                    run.actor,
                    type(e).__name__,
                    e,
                )
                outcome = Outcome(
                    status="failed",
                    error_type="RecordError",
                    error_message=f"the outcome could not be recorded: {type(e).__name__}: {e}",
                    max_consecutive_failures=outcome.max_consecutive_failures,
                    counts_as_failure=True,
                )
            except (*TRANSIENT_DB_ERRORS, asyncpg.PostgresError) as e:
                # An outage, a lock timeout, a read-only failover: wait and write it again.
                log.warning(
                    "run %d of %s: cannot record %s yet (%s: %s); retrying in %.1f s",
                    run.run_id,
                    run.actor,
                    outcome.status,
                    type(e).__name__,
                    e,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _after_finish(self, run: ClaimedRun, outcome: Outcome, finished: Finished | None) -> None:
        if finished is None:
            log.warning(
                "run %d of %s was declared abandoned by another process while it ran;"
                " its outcome (%s) was not recorded",
                run.run_id,
                run.actor,
                outcome.status,
            )
            return
        self._views[finished.task.id] = finished.task
        self._note_due(self._due_time(finished.task, self.clock.now()))
        if outcome.status == "succeeded":
            if log.isEnabledFor(logging.INFO):  # formatting the slot is not free
                log.info(
                    "run %d of %s succeeded (%s, slot %s)",
                    run.run_id,
                    run.actor,
                    run.trigger,
                    self._slot_text(run),
                )
        else:
            retry = f"; retry at {outcome.retry_at.isoformat()}" if outcome.retry_at else ""
            log.warning(
                "run %d of %s %s: %s%s",
                run.run_id,
                run.actor,
                outcome.status,
                outcome.error_message,
                retry,
            )
        alert: Alert | None = None
        if finished.breaker_tripped:
            alert = Alert(run.actor, run.run_id, outcome, finished.consecutive_failures, True)
            log.error("%s", alert.text())
        elif outcome.counts_as_failure and finished.consecutive_failures >= 2:
            alert = Alert(run.actor, run.run_id, outcome, finished.consecutive_failures, False)
        if alert is not None and self.alerts is not None:
            task = asyncio.create_task(self._send_alert(alert), name=f"alert for {run.actor}")
            self._alert_tasks.add(task)
            task.add_done_callback(self._alert_tasks.discard)

    async def _send_alert(self, alert: Alert) -> None:
        assert self.alerts is not None
        try:
            await self.alerts(alert)
        except Exception as e:
            log.warning("could not send the alert for %s: %s: %s", alert.actor, type(e).__name__, e)

    def _slot_text(self, run: ClaimedRun) -> str:
        """The run's slot in its schedule's time zone, for logs."""
        return format_slot(run.scheduled_for.astimezone(self.schedules[run.actor].tz))

    async def _post(self, loaded: LoadedActor, content: str | None, **kwargs: Any) -> Posted:
        return await self.platforms[loaded.platform].post(loaded.config, content, **kwargs)

    @asynccontextmanager
    async def _connection(self, cfg: ActorConfig) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection within the actor's share; waits at most acquire_timeout."""
        limit = self._actor_limits[cfg.name]
        wait = self.config.database.acquire_timeout_seconds
        held: list[asyncio.Semaphore] = []
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(wait):
                await limit.acquire()
                held.append(limit)
                await self._actors_share.acquire()
                held.append(self._actors_share)
                conn = await self.database.pool.acquire()
        except TimeoutError:
            for semaphore in held:
                semaphore.release()
            raise PoolExhausted(self._exhausted_message(cfg, wait)) from None
        except BaseException:
            for semaphore in held:
                semaphore.release()
            raise
        self._actor_in_use[cfg.name] += 1
        try:
            yield conn
        finally:
            self._actor_in_use[cfg.name] -= 1
            try:
                try:
                    await reset_session(conn)  # the actor may have changed anything
                except BaseException:
                    conn.terminate()  # e.g. cancelled mid-query: the pool replaces it
                    raise  # a cancellation (the run's timeout) must go on
                finally:
                    await asyncio.shield(self.database.pool.release(conn))
            finally:
                for semaphore in held:
                    semaphore.release()

    def _exhausted_message(self, cfg: ActorConfig, waited: float) -> str:
        pool = self.database.pool
        in_use = pool.get_size() - pool.get_idle_size()
        return (
            f"actor {cfg.name!r} waited {waited:g} s (acquire_timeout_seconds) for a database"
            f" connection: it holds {self._actor_in_use[cfg.name]} of its max_connections ="
            f" {cfg.max_connections}; the shared pool has {in_use} of"
            f" {self.config.database.max_pool_size} connections in use"
            f" ({sum(self._actor_in_use.values())} by actors, one kept for the runtime)"
        )

    # -- liveness ----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        lease = self.config.server.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self.store.heartbeat(self.instance_id):
                    # Our runs were marked abandoned and are retried elsewhere: stop them here.
                    log.error(
                        "this process was declared dead by another (missed heartbeats for"
                        " lease_seconds = %g); cancelling its %d run(s) and registering again",
                        lease,
                        len(self._actor_code),
                    )
                    self.cancel_runs("this process was declared dead by another")
                    await self.store.register_instance(
                        self.instance_id, socket.gethostname(), os.getpid(), lease
                    )
                    self._healthy_since = time.monotonic()
                if time.monotonic() - self._healthy_since < lease:
                    # Just back from an outage: others may be too. Give them a whole lease to
                    # renew theirs before declaring anyone dead.
                    continue
                lost = await self.store.recover_abandoned(self.clock.now())
                for row in lost:
                    log.warning(
                        "run %d of %s abandoned: process %s stopped renewing its lease",
                        row["run_id"],
                        row["actor"],
                        row["instance_id"],
                    )
                if lost:
                    self._needs_sync = True
                    self._wake.set()
            except Exception as e:
                self._healthy_since = time.monotonic()
                log.warning("heartbeat failed (%s: %s)", type(e).__name__, e)

    async def _listen_loop(self) -> None:
        """Wake up at once when an operator triggers, pauses or resumes an actor."""

        def notified(*_: object) -> None:
            self._needs_sync = True
            self._wake.set()

        delay = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self.database.url, timeout=self.config.database.connect_timeout_seconds
                )
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.store.channel, notified)
                delay = 0.5
                notified()  # catch up with whatever happened while we were not listening
                await lost.wait()
            except TRANSIENT_DB_ERRORS as e:
                log.debug("listener reconnecting (%s: %s)", type(e).__name__, e)
            finally:
                if conn is not None and not conn.is_closed():
                    with suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
