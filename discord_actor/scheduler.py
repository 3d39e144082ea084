"""What is due, and claiming it.

The scheduler does not keep a copy of every task. PostgreSQL answers "what has work due before
``now + lookahead``?" through indexes on the due times (the *due window*, read every
``poll_interval_seconds`` and whenever a notification says something changed), and the
scheduler keeps only those rows, in a heap ordered by when to act. A pass pops what is due, at
most as many as this process may start, and claims them in one statement; the database makes
sure that each slot is claimed once however many processes share it. So a pass costs what is
due, and a process with 10,000 actors holds only the few hundred due in the next second or two.

A claim whose commit went through but whose answer was lost with its connection (a failover, a
network cut) leaves runs ``running`` under this process that it never started, and since it lives
its lease keeps them from being recovered. So after any database error (and every lease, should
an error have gone unseen) the scheduler asks for the runs it owns and does not know of, and
starts them: they are its own claims, so each still runs once.

Several processes spread the work: each prefers the tasks whose id falls to its rank among the
live processes (``share_of(task_id, count) == rank``, a hash of the id, so that ids of one parity
or any other stride still spread evenly) and claims the others only when they are still
unclaimed ``SHARE_GRACE_SECONDS`` after they fell due (the preferred process may be busy or gone).

An actor's own schedule (one row per actor) is claimed before keyed schedules that fell due
earlier: keyed schedules come in bursts (10,000 reminders at 09:00, each waiting for Discord's
limits), and a burst must not hold back the 1 s actor beside it. Two heaps keep the two apart;
within each, what fell due first is claimed first.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from .clock import Clock
from .config.model import Config
from .db.records import ClaimedRun, ClaimRequest, PendingItem, TaskView
from .db.store import Store
from .db.transient import TRANSIENT_DB_ERRORS, Backoff, Outage, Servers
from .enums import RunStatus, Trigger
from .plugins import LoadedActor
from .schedules.base import MISFIRE_GRACE_SECONDS as MISFIRE_GRACE_SECONDS  # still here too
from .schedules.base import Schedule, decide_due, jittered
from .schedules.registry import schedule_of

log = logging.getLogger("discord_actor.runtime")

SHARE_GRACE_SECONDS = 0.05  # how long a due task waits for the process it falls to
WINDOW_ROWS = 2000  # at most this many rows of each kind per read of the due window
# Passes are at least this far apart while work keeps falling due: what falls due meanwhile is
# claimed together (one statement for many runs) at the cost of a few milliseconds' lateness.
# Not after a pass that filled every free place with more still due (a burst): the next pass
# comes as soon as a run's code ends, since waiting gathers nothing more to claim.
PASS_SECONDS = 0.005
# Claims the loop keeps on their way at once: the next asks for the places that freed while the
# last was in flight, instead of their waiting for its answer and the pass after it.
MAX_CLAIMS_IN_FLIGHT = 2

# Read once: a member read from its enum class costs a descriptor call on Python 3.11 (60 ns),
# and these are read at every claim.
_SLOT_ITEM, _RETRY_ITEM, _MANUAL_ITEM = PendingItem.SCHEDULE, PendingItem.RETRY, PendingItem.MANUAL
_RETRY, _MANUAL = Trigger.RETRY, Trigger.MANUAL
_RUNNING, _SKIPPED = RunStatus.RUNNING, RunStatus.SKIPPED


def share_of(task_id: int, count: int) -> int:
    """The rank (0 to ``count - 1``) of the process a task falls to among ``count`` live ones.

    Fibonacci hashing: the id times 2**32 / golden ratio, its low 32 bits scaled to ``count``.
    A plain ``task_id % count`` gave one process nearly every keyed schedule, because ids handed
    out by one kind of insert can all share one parity; a hash spreads any stride evenly.
    """
    return (((task_id * 0x9E3779B1) & 0xFFFFFFFF) * count) >> 32


def _utc(when: datetime | None) -> datetime | None:
    return None if when is None else when.astimezone(UTC)


class Scheduler:
    """Finds due work in the database and claims it for this process."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        actors: Mapping[str, LoadedActor],
        schedules: Mapping[str, Schedule],
        instance_id: str,
        *,
        free_slots: Callable[[], int],
        runnable: Callable[[TaskView], bool],
        start_run: Callable[[ClaimedRun], None],
        known_runs: Callable[[], set[int]] = set,
        on_error: Callable[[BaseException], None] = lambda _e: None,
        servers: Servers | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.actors = actors
        self.schedules = schedules
        self.instance_id = instance_id
        self._free_slots = free_slots
        self._runnable = runnable
        self._start_run = start_run
        self._known_runs = known_runs
        self._on_error = on_error  # a database error: the runtime reconnects if it calls for it
        poll = config.server.poll_interval_seconds
        self.poll = poll
        self.lookahead = timedelta(seconds=1.5 * poll)
        self.wake = asyncio.Event()
        self.stopping = False
        # This process's one report of a database outage: a line when it starts, one at its end.
        self.outage = Outage(log, servers)
        # Whether to look for claims whose answer was lost: after an error, and every lease.
        self._lost_check = True
        self._lost_checked_at = time.monotonic()
        self._lost_every = config.server.lease_seconds
        # The due window: views of tasks with work due soon, and heaps of (act at, due, id):
        # actors' own rows in one, keyed schedules in the other (claimed after the first).
        self._views: dict[int, TaskView] = {}
        self._own: list[tuple[float, float, int]] = []
        self._heap: list[tuple[float, float, int]] = []
        self._complete_until = 0.0  # POSIX time up to which the heaps hold everything due
        self._own_complete_until = 0.0  # the same for the actors' own rows
        self._read_at = -1e18  # time.monotonic() of the last read of the window
        self._must_read = True
        self._recheck: set[int] = set()  # tasks whose row must be read again (a retry claimed)
        self._backlog = False  # the last pass left due work for want of places
        # Claims in flight (the loop's, at most MAX_CLAIMS_IN_FLIGHT), the places they asked
        # for and their tasks.
        self._claims: set[asyncio.Task[list[ClaimedRun]]] = set()
        self._reserved = 0
        self._claiming: set[int] = set()
        # This process's share of the work: (rank, count) among the live processes.
        self.rank, self.count = 0, 1

    # -- the window ---------------------------------------------------------------------------

    def changed(self) -> None:
        """Something changed in the database (a notification): read the window again now."""
        self._must_read = True
        self.wake.set()

    @property
    def held(self) -> int:
        """How many tasks this process holds: those with work due soon, not all of them."""
        return len(self._views)

    def set_share(self, rank: int, count: int) -> None:
        self.rank, self.count = rank, max(1, count)

    async def read_window(self) -> None:
        """Replace what this process holds with the database's current due window."""
        now = self.clock.now()
        window = await self.store.runs.due_window(now + self.lookahead, WINDOW_ROWS)
        self._views = {v.id: v for v in window.views if v.actor in self.actors}
        self._own, self._heap = [], []
        for view in self._views.values():
            self._push(view)
        heapq.heapify(self._own)
        heapq.heapify(self._heap)
        self._complete_until = window.complete_until.timestamp()
        own = window.own_complete_until or window.complete_until
        self._own_complete_until = own.timestamp()
        self._read_at = time.monotonic()
        self._must_read = False

    def note(self, view: TaskView) -> None:
        """A task's row as a statement of ours returned it (after a finish or a claim)."""
        due = view.due_time()
        complete = self._own_complete_until if view.key is None else self._complete_until
        if due is None or due > complete:
            self._views.pop(view.id, None)  # a later read of the window brings it back
            return
        self._views[view.id] = view
        heapq.heappush(self._heap_of(view), self._entry(view.id, due))
        self.wake.set()

    def _heap_of(self, view: TaskView) -> list[tuple[float, float, int]]:
        return self._own if view.key is None else self._heap

    def _push(self, view: TaskView) -> None:
        due = view.due_time()
        if due is not None:
            self._heap_of(view).append(self._entry(view.id, due))

    def _entry(self, task_id: int, due: float) -> tuple[float, float, int]:
        if self.count > 1 and share_of(task_id, self.count) != self.rank:
            return due + SHARE_GRACE_SECONDS, due, task_id
        return due, due, task_id

    async def _read_rechecks(self) -> None:
        ids, self._recheck = list(self._recheck), set()
        for view in await self.store.runs.views(ids):
            if view.enabled and not view.paused and view.actor in self.actors:
                self.note(view)

    # -- claims whose answer was lost -------------------------------------------------------

    def suspect_lost_claims(self) -> None:
        """A statement failed: a claim may have committed without our knowing; look at the next
        pass (which runs between claims, so that no answer is on its way meanwhile). No wake:
        the pass comes after the scheduler's own backoff."""
        self._lost_check = True

    async def start_lost_claims(self) -> list[ClaimedRun]:
        """Start the runs this process owns and does not know of (claimed by a statement whose
        answer was lost): they were never started, and nothing else would ever end them."""
        known = self._known_runs()
        lost = await self.store.runs.lost_claims(self.instance_id, sorted(known))
        self._lost_check = False
        self._lost_checked_at = time.monotonic()
        for run in lost:
            if run.actor not in self.actors:
                continue  # not configured here (any more): the lease recovery ends it
            log.warning(
                "run %d of %s was claimed by a statement whose answer was lost with its"
                " connection; starting it now (slot %s)",
                run.run_id,
                run.actor,
                run.scheduled_for.isoformat(),
            )
            self._start_run(run)
        if lost:
            self._must_read = True  # their tasks' next slots moved on without us
        return lost

    # -- claiming -----------------------------------------------------------------------------

    async def run_due(self) -> list[ClaimedRun]:
        """Claim and start everything due now, within capacity; returns what was claimed."""
        wanted, now = self._take_due()
        if not wanted:
            return []
        return await self._claim(wanted, now)

    def _take_due(self) -> tuple[list[tuple[TaskView, ClaimRequest]], datetime]:
        """Pop what is due now from the heaps (the actors' own rows first), at most as many as
        there are free places (less those asked for by claims in flight), each as its claim
        request."""
        self._backlog = False
        free = self._free_slots() - self._reserved
        now = self.clock.now()
        if free <= 0 or not (self._own or self._heap):
            return [], now
        now_ts = now.timestamp()
        views, claiming = self._views, self._claiming
        wanted: list[tuple[TaskView, ClaimRequest]] = []
        taken: set[int] = set()  # a task may have several entries: one request each pass
        for heap in (self._own, self._heap):  # actors' own rows first, then keyed schedules
            while heap and heap[0][0] <= now_ts and len(wanted) < free:
                _, due, task_id = heapq.heappop(heap)
                view = views.get(task_id)
                if (
                    view is None
                    or task_id in taken
                    or task_id in claiming
                    or view.due_time() != due
                    or not self._runnable(view)
                ):
                    continue  # stale, being claimed, or busy here: what ends it brings it back
                request = self._request(view, now)
                if request is not None:
                    wanted.append((view, request))
                    taken.add(task_id)
        self._backlog = any(heap and heap[0][0] <= now_ts for heap in (self._own, self._heap))
        return wanted, now

    async def _claim(
        self, wanted: list[tuple[TaskView, ClaimRequest]], now: datetime
    ) -> list[ClaimedRun]:
        """Claim the requests in one statement and start what was claimed. The places asked
        for are held (``_reserved``) while the statement is in flight."""
        ids = [r.task_id for _, r in wanted]
        self._reserved += len(wanted)
        self._claiming.update(ids)
        try:
            claimed = await self.store.runs.claim(self.instance_id, [r for _, r in wanted], now)
        finally:
            self._reserved -= len(wanted)
            self._claiming.difference_update(ids)
        views = self._views
        got = {c.task_id for c in claimed}
        for view, request in wanted:
            if request.task_id in got:
                self._apply_claim(view, request)
            else:
                # Another process has it (or it was paused): the next read says what is next.
                views.pop(view.id, None)
        for run in claimed:
            if run.status == _SKIPPED:
                log.info("actor %s: %s", run.actor, "skipped missed slot(s) (catch_up = skip)")
                continue
            self._start_run(run)
        return claimed

    def _request(self, view: TaskView, now: datetime) -> ClaimRequest | None:
        if view.retry_at is not None and view.retry_slot is not None and view.retry_at <= now:
            return ClaimRequest(
                task_id=view.id,
                kind=_RETRY_ITEM,
                expected=view.retry_slot,
                attempt=view.retry_attempt or 2,
                scheduled_for=view.retry_slot,
                trigger=_RETRY,
            )
        if view.manual_at is not None:
            return ClaimRequest(
                task_id=view.id,
                kind=_MANUAL_ITEM,
                expected=view.manual_at,
                attempt=1,
                scheduled_for=view.manual_at,
                trigger=_MANUAL,
            )
        if view.next_run is None or view.due_at is None or view.due_at > now:
            return None
        schedule = schedule_of(self.schedules, view.actor, view.keyed_schedule)
        jitter = schedule.config.jitter_seconds
        decision = decide_due(schedule, view.next_run, now)
        next_due = None if decision.next_run is None else jittered(decision.next_run, jitter)
        skipped = decision.action == "skip"
        return ClaimRequest(
            task_id=view.id,
            kind=_SLOT_ITEM,
            expected=view.next_run,
            attempt=1,
            scheduled_for=decision.scheduled_for,
            trigger=decision.trigger,
            status=_SKIPPED if skipped else _RUNNING,
            new_next_run=decision.next_run,
            new_due_at=next_due,
            note=f'skipped {decision.skipped} missed slot(s) (catch_up = "skip")'
            if skipped
            else None,
        )

    def _apply_claim(self, view: TaskView, request: ClaimRequest) -> None:
        if request.kind == _SLOT_ITEM:
            # In UTC, like everything read from the database: same-zone datetimes compare by
            # wall clock, which is wrong around DST changes.
            view.next_run = _utc(request.new_next_run)
            view.due_at = _utc(request.new_due_at)
        elif request.kind == _RETRY_ITEM:
            view.retry_slot = view.retry_at = view.retry_attempt = None
            self._recheck.add(view.id)  # the task may have another retry pending
        else:
            view.manual_at = None
        self.note(view)

    # -- the loop -----------------------------------------------------------------------------

    def _next_wake_in(self) -> float:
        """Seconds until there is something to do: due work, or the next read of the window."""
        until = self.poll - (time.monotonic() - self._read_at)
        now_ts = self.clock.now().timestamp()
        for complete in (self._complete_until, self._own_complete_until):
            if complete > now_ts:
                until = min(until, complete - now_ts)
        if (
            (self._own or self._heap)
            and self._free_slots() > self._reserved
            and len(self._claims) < MAX_CLAIMS_IN_FLIGHT
        ):  # at capacity, a run whose code ends (or a claim that returns) wakes us
            first = min(h[0][0] for h in (self._own, self._heap) if h)
            until = min(until, first - now_ts)
        return max(0.0, until)

    def _window_stale(self) -> bool:
        if self._must_read or time.monotonic() - self._read_at >= self.poll:
            return True
        # Past what the last read covered: read on, unless a backlog larger than one read is
        # still being worked through (then the heaps are not yet drained); the actors' own rows
        # are read on past their part whatever the backlog of keyed schedules.
        now_ts = self.clock.now().timestamp()
        quarter = WINDOW_ROWS // 4
        if now_ts >= min(self._complete_until, self._own_complete_until):
            if len(self._own) + len(self._heap) < quarter:
                return True
        return now_ts >= self._own_complete_until and len(self._own) < quarter

    async def pass_once(self) -> list[ClaimedRun]:
        """One pass: read the window if it is due, then claim what is due."""
        await self._bookkeeping()
        return await self.run_due()

    def _lost_check_due(self) -> bool:
        """After a failed statement, and every lease: look for claims whose answer was lost."""
        return self._lost_check or time.monotonic() - self._lost_checked_at >= self._lost_every

    def _bookkeeping_due(self) -> bool:
        return self._lost_check_due() or bool(self._recheck) or self._window_stale()

    async def _bookkeeping(self) -> None:
        """Look for lost claims, read the window and the rows to recheck, as they are due."""
        if self._lost_check_due():
            await self.start_lost_claims()
        if self._window_stale():
            await self.read_window()
        if self._recheck:
            await self._read_rechecks()

    async def _settle(self) -> None:
        """Wait for the claims in flight; the first one that failed raises its error here."""
        while self._claims:
            await asyncio.wait(self._claims)
            self._reap()

    def _reap(self) -> None:
        for claim in [c for c in self._claims if c.done()]:
            self._claims.discard(claim)
            claim.result()

    async def _loop_pass(self) -> None:
        """The loop's pass: like ``pass_once``, but a claim goes on in the background while
        places free up, so that the next can be on its way before its answer is back (up to
        ``MAX_CLAIMS_IN_FLIGHT``). What reads the window or looks for lost claims waits until
        no claim is in flight: a lost claim is one no answer is on its way for."""
        self._reap()
        if self._bookkeeping_due():
            await self._settle()
            await self._bookkeeping()
        if len(self._claims) >= MAX_CLAIMS_IN_FLIGHT:
            return
        wanted, now = self._take_due()
        if not wanted:
            return
        if not self._backlog:  # all that is due fits: nothing for a second claim to take
            await self._claim(wanted, now)
            return
        claim = asyncio.create_task(self._claim(wanted, now), name="discord-actor claim")
        self._claims.add(claim)
        claim.add_done_callback(lambda _c: self.wake.set())

    async def loop(self) -> None:
        backoff = Backoff(0.5, 5.0)
        try:
            await self._run_loop(backoff)
        finally:
            with suppress(Exception):  # a claim in flight is not cut off: its runs start
                await self._settle()

    async def _run_loop(self, backoff: Backoff) -> None:
        while not self.stopping:
            try:
                await self._loop_pass()
                backoff.reset()
                self.outage.ok()
                delay = self._next_wake_in()
            except TRANSIENT_DB_ERRORS as e:
                delay = backoff.next()
                self._must_read = self._lost_check = True
                self._on_error(e)
                self.outage.failed(e, delay)
            except Exception as e:
                # Anything else (a lock timeout, a bug): keep scheduling.
                delay = backoff.next()
                self._must_read = self._lost_check = True
                self._on_error(e)
                log.exception("scheduler pass failed; retrying in %.1f s", delay)
            if self.stopping:
                break
            gather = 0.0 if self._backlog else PASS_SECONDS
            await asyncio.sleep(gather)  # let finished runs and what falls due gather
            if delay > gather:
                # A timer that sets the event, not wait_for: no task and no timeout context
                # per pass (a pass every 5 ms under load).
                timer = asyncio.get_running_loop().call_later(delay - gather, self.wake.set)
                await self.wake.wait()
                timer.cancel()
            self.wake.clear()
