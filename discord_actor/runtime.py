"""One process's runtime: wires the scheduler, the executor, the connection budget, liveness
and alerts together, and owns their lifecycle (start, serve, graceful stop).

- ``scheduler.Scheduler``: what is due (read from the database's due window) and claiming it;
- ``executor.Executor``: running one run within its timeout and recording its outcome;
- ``budget.ConnectionBudget``: the shared pool's per-actor quotas;
- ``liveness.Liveness``: heartbeat, lease recovery;
- ``listener.Listener``: notifications that wake the scheduler, and a check that they arrive;
- ``alerts.AlertSender``: failure alerts to wherever the host sends them;
- ``retention.loop``: deleting finished runs older than ``server.run_retention_days``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from . import retention
from .alerts import Alert, AlertSender, AlertSink
from .budget import ConnectionBudget, PoolExhausted
from .clock import Clock
from .config.model import Config
from .db import Database
from .db.operator import describe_notice
from .db.records import ClaimedRun, TaskView
from .db.store import Store
from .db.transient import READ_ONLY_ERRORS, TRANSIENT_DB_ERRORS, Reconnect
from .executor import Executor
from .keyed import Schedules, actor_row_spec
from .listener import Listener
from .liveness import Liveness
from .loop_lag import LoopLagWatcher
from .metrics import LiveReadings, RuntimeMetrics, discord_readings
from .outcome import StateNotSerializable, retry_delay
from .outcome_writer import RunNoLongerOwned
from .platforms import PacedPlatform, Platform, build_platforms
from .plugins import LoadedActor
from .scheduler import Scheduler
from .schedules.base import MISFIRE_GRACE_SECONDS, Schedule, ScheduleConfig
from .schedules.registry import build_schedule

__all__ = [
    "MISFIRE_GRACE_SECONDS",
    "TRANSIENT_DB_ERRORS",
    "Alert",
    "AlertSink",
    "PoolExhausted",
    "RunNoLongerOwned",
    "Runtime",
    "StateNotSerializable",
    "default_platforms",
    "retry_delay",
]

log = logging.getLogger("discord_actor.runtime")

RECORD_TIMEOUT_AT_SHUTDOWN = 10.0  # seconds to record cancelled runs before giving up
TEARDOWN_SECONDS = 5.0  # all teardown() hooks together, at shutdown
# Runs whose posts wait for Discord's limits, beside max_concurrent_runs: about 20 s of posts
# at Discord's default limit, enough to keep it busy, few enough to hold in memory.
MAX_PARKED_POSTS = 1000


def default_platforms() -> dict[str, Platform]:
    """The registered platforms without a bot: console for console and (dry-run) discord
    actors; nothing for ``none``."""
    return build_platforms(None)


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
        unique = {id(p): p for p in self.platforms.values()}.values()
        # Platforms whose posts wait for Discord's limits, shared across processes, with their
        # runs parked meanwhile.
        self._paced = [p for p in unique if isinstance(p, PacedPlatform)]
        for platform in self._paced:
            platform.share_budget(self.store.rate_budgets, config.discord.requests_per_second)
        self.client = client
        self.alerts = alerts  # where failure alerts go (Discord's alert channel), if anywhere
        self.instance_id = (
            instance_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.actors = dict(actors)
        # Actors with equal schedules (an actor per guild, say) share one Schedule object, so
        # that its canonical form and hash are computed once.
        built: dict[ScheduleConfig, Schedule] = {}
        self.actor_schedules: dict[str, Schedule] = {}
        for name, a in self.actors.items():
            schedule = built.get(a.config.schedule)
            if schedule is None:
                schedule = built[a.config.schedule] = build_schedule(a.config.schedule)
            self.actor_schedules[name] = schedule
        self._broken: set[str] = set()  # actors whose setup() failed
        self.metrics = RuntimeMetrics()
        self.budget = ConnectionBudget(
            database.pool,
            config.database.max_pool_size,
            config.database.acquire_timeout_seconds,
            self.metrics,
        )
        self._alert_sender = AlertSender(alerts)
        # Keyed schedules created at run time, by bot code or by actors (ctx.schedules).
        self.schedules = Schedules(self.store, config, self.clock)
        self.executor = Executor(
            self.store,
            self.clock,
            self.actors,
            self.actor_schedules,
            self.budget,
            self.platforms,
            self._alert_sender,
            client=client,
            on_finished=self._run_finished,
            keyed=self.schedules,
            metrics=self.metrics,
        )
        # A failover: new connections, to whichever node is the primary now (see _database_error).
        self.reconnect = Reconnect(database.pool)
        self.executor.writer.on_error = self._database_error
        self.scheduler = Scheduler(
            config,
            self.store,
            self.clock,
            self.actors,
            self.actor_schedules,
            self.instance_id,
            free_slots=self._free_slots,
            runnable=self._runnable,
            start_run=self.executor.start,
            known_runs=self.executor.known_runs,
            on_error=self._database_error,
            servers=database.servers,
        )
        self.liveness = Liveness(
            database,
            self.store,
            self.clock,
            self.instance_id,
            config.server.lease_seconds,
            on_share=self.scheduler.set_share,
            on_change=self.scheduler.changed,
            on_declared_dead=self.cancel_runs,
            runs_in_flight=lambda: self.executor.runs_in_actor_code,
            on_error=self._database_error,
        )
        self.executor.lease_in_doubt = self.liveness.lease_in_doubt
        self.executor.on_code_ended = self.scheduler.wake.set  # a place is free: claim on
        for platform in self._paced:  # a post that starts waiting frees a place: claim on
            platform.on_parked = self.scheduler.wake.set
        self.executor.log_successes = config.server.log_runs == "all"
        self.loop_lag = LoopLagWatcher(self.executor.in_progress)
        self.metrics.read_live_from(self._live_readings)
        self.listener = Listener(
            database,
            self.store,
            self.instance_id,
            config.server.poll_interval_seconds,
            on_change=self.scheduler.changed,
            on_instances_changed=self.liveness.share_changed,
        )
        self.listener.on_notice = self._operator_notice
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._stopping = False
        self.clock.on_change(self.scheduler.wake.set)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, loops: bool = True) -> None:
        """Register, reconcile the config, run setup hooks and start the background loops.

        With ``loops=False`` nothing runs in the background: tests drive ``run_due``. The HTTP
        server of ``[http]`` is not part of it: ``discord_actor.assembly`` starts it first.
        """
        await self.liveness.register()
        await self.store.instances.recover_abandoned(self.clock.now())
        await self.reconcile()
        failed: dict[str, str] = {}
        succeeded: list[str] = []
        for name, loaded in self.actors.items():
            if not loaded.config.enabled:
                continue
            try:
                await loaded.instance.setup()
            except Exception as e:
                self._broken.add(name)
                failed[name] = f"{type(e).__name__}: {e}"
                log.error(
                    "actor %s: setup() failed, it will not run in this process: %s: %s",
                    name,
                    type(e).__name__,
                    e,
                )
                self._alert_sender.send(Alert.setup_failed(name, e))
            else:
                succeeded.append(name)
        # Kept on the task rows: status and /actors list show these actors as broken.
        await self.store.configuration.record_setup(failed, succeeded)
        await self.sync()
        self._started = True
        # What exists now (configuration, actors, modules) lives as long as the process: keep
        # it out of the cyclic collector's full passes, which would otherwise walk it all and
        # stall every run for tens of milliseconds with 10,000 actors.
        gc.freeze()
        if loops:
            self.loop_lag.start()
            config = self.config
            self.liveness.start_watchdog()
            self._background = [
                asyncio.create_task(self.scheduler.loop(), name="discord-actor scheduler"),
                asyncio.create_task(
                    self.liveness.heartbeat_loop(), name="discord-actor heartbeat"
                ),
                asyncio.create_task(self.listener.loop(), name="discord-actor listener"),
                asyncio.create_task(
                    retention.loop(self.store, config.server.run_retention_days),
                    name="discord-actor retention",
                ),
            ]
        log.info("runtime %s started with %d actor(s)", self.instance_id, len(self.actors))

    @property
    def started(self) -> bool:
        """Started and not stopping: the actors are set up and scheduling (``/readyz``)."""
        return self._started and not self._stopping

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
        self.scheduler.stopping = True
        self.scheduler.wake.set()
        # The scheduler finishes its current pass (a claim in flight is not cut off) and stops.
        scheduler = [t for t in self._background if "scheduler" in t.get_name()]
        await asyncio.gather(*scheduler, return_exceptions=True)
        running = list(self.executor.running.values())
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
        await self._teardown()
        await self._alert_sender.drain()
        self.liveness.stop_watchdog()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.executor.close()
        self.loop_lag.stop()
        await self.liveness.unregister()
        log.info("runtime %s stopped", self.instance_id)

    async def _teardown(self) -> None:
        """Run the actors' teardown hooks, within ``TEARDOWN_SECONDS`` together: a hook that
        hangs (or ignores its cancellation) must not keep the process from stopping."""
        deadline = time.monotonic() + TEARDOWN_SECONDS
        for name, loaded in self.actors.items():
            if not (loaded.config.enabled and name not in self._broken and self._started):
                continue
            hook = asyncio.create_task(loaded.instance.teardown(), name=f"teardown {name}")
            await asyncio.wait({hook}, timeout=max(0.0, deadline - time.monotonic()))
            if not hook.done():
                hook.cancel()
                log.error("actor %s: teardown() did not finish in time; left behind", name)
            elif not hook.cancelled() and (e := hook.exception()) is not None:
                log.error("actor %s: teardown() failed: %s: %s", name, type(e).__name__, e)

    def _live_readings(self) -> LiveReadings:
        pool = self.database.pool
        idle = pool.get_idle_size()
        connected, latency = discord_readings(self.client)
        limited: Counter[str] = Counter()
        for platform in self._paced:
            limited.update(platform.rate_limited)
        return LiveReadings(
            pool_in_use=pool.get_size() - idle,
            pool_idle=idle,
            pool_max=pool.get_max_size(),
            actor_connections=self.budget.in_use,
            discord_connected=connected,
            discord_latency=latency,
            loop_lag=self.loop_lag.lag,
            posts_waiting=self.posts_waiting,
            rate_limited=dict(limited),
        )

    @property
    def posts_waiting(self) -> int:
        """Posts of this process waiting for Discord's limits: the queue the dashboard shows."""
        return sum(platform.parked for platform in self._paced)

    def cancel_runs(self, reason: str) -> None:
        """Cancel the actor code of every run in flight; each is recorded ``cancelled``.

        Only the actor's own code is cancelled: recording the outcome goes on.
        """
        self.executor.cancel_runs(reason)

    # -- scheduling --------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the tasks table match the configuration (new actors, changed schedules)."""
        now = self.clock.now()
        specs = [
            actor_row_spec(loaded.config, self.actor_schedules[name], now)
            for name, loaded in self.actors.items()
        ]
        await self.store.configuration.reconcile(specs, now)

    async def sync(self) -> None:
        """Read what is due soon from the database now (changes by others included)."""
        await self.scheduler.read_window()

    async def run_due(self) -> list[ClaimedRun]:
        """Claim and start everything due now; returns what this process claimed."""
        return await self.scheduler.run_due()

    async def wait_idle(self) -> None:
        """Wait until every run this process started has finished and been recorded."""
        await self.executor.wait_idle()

    def _free_slots(self) -> int:
        """Places for runs: ``max_concurrent_runs`` less the runs in flight (whose actor code has
        not ended: ``Executor.places_held``), not counting those whose post waits for Discord's
        limits (at most ``MAX_PARKED_POSTS``), so that a burst of posts does not keep the other
        actors from their slots."""
        return (
            self.config.server.max_concurrent_runs
            - self.executor.places_held
            + min(self.posts_waiting, MAX_PARKED_POSTS)
        )

    def _runnable(self, view: TaskView) -> bool:
        return (
            view.enabled
            and not view.paused
            and view.actor not in self._broken
            and self.executor.local_runs[view.id] < view.max_instances
        )

    def _operator_notice(self, payload: str) -> None:
        """An operator paused, resumed or triggered an actor (by the CLI, /actors, another
        process): every running server logs who, from where."""
        line = describe_notice(payload)
        if line is not None:
            log.info("operator: %s", line)

    def _database_error(self, error: BaseException) -> None:
        """A statement of the runtime's failed (a claim, an outcome, a heartbeat).

        If the error says the pooled connections lead nowhere useful (a read-only node, a lost
        connection), they are replaced at their next use, through the URL's hosts, by ones to
        the primary; after a read-only error the listener moves there too (on a node that takes
        no writes it hears nothing). A claim may have committed unseen: the scheduler looks for
        runs of this process it does not know of."""
        if self.reconnect.after(error) and isinstance(error, READ_ONLY_ERRORS):
            self.listener.relisten()
        self.scheduler.suspect_lost_claims()

    def _run_finished(self, view: TaskView | None) -> None:
        """A run ended (``view``: its task's row as recorded): capacity is free again."""
        if view is not None:
            self.scheduler.note(view)
        self.scheduler.wake.set()
