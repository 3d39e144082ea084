"""The metrics of one runtime, counted as things happen. ``/metrics`` renders them with
``prometheus_client`` in ``exposition.py``, which reads this module (never the other way) and is
imported only when someone scrapes.

What happens (runs, their lateness, waits for a pooled connection) is counted where it happens,
by the executor and the connection budget, in plain numbers: a run pays well under a microsecond
and no lock. What *is* (the pool's connections, the gateway, the event loop's lag) is read only
when someone scrapes. A registry of its own per runtime: several runtimes in one process, as in
tests, do not collide.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .enums import RunStatus, Trigger

PREFIX = "discord_actor"
RUN_DURATION_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0)
RUN_LATENESS_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0)
ACQUIRE_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
POST_LATENESS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
#: how a post ended: answered by the platform, refused (not retried), failed (the retry policy)
POST_OUTCOMES = ("delivered", "refused", "failed")
SLOW_ACQUIRE = 0.1  # seconds: a wait this long means the actor's share or the pool is full
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Read once: a member read from its enum class costs a descriptor call on Python 3.11 (60 ns),
# and these are read at every run.
_SUCCEEDED, _RETRY = RunStatus.SUCCEEDED, Trigger.RETRY


@dataclass(frozen=True)
class LiveReadings:
    """What the runtime is right now, read at scrape time."""

    pool_in_use: int
    pool_idle: int
    pool_max: int
    actor_connections: Mapping[str, int]  # connections held, by actor
    discord_connected: bool | None  # None: this runtime has no Discord client
    discord_latency: float  # seconds; NaN when unknown
    loop_lag: float  # seconds, the event loop's latest measured lag
    posts_waiting: int = 0  # posts waiting for Discord's limits (the queue), this process
    rate_limited: Mapping[str, int] | None = None  # Discord's 429s so far, by scope


@dataclass
class AcquireWaits:
    """Waits for a pooled connection so far, for the dashboard."""

    count: int = 0
    total: float = 0.0  # seconds
    longest: float = 0.0
    slow: int = 0  # longer than SLOW_ACQUIRE


class Buckets:
    """A histogram's counts: one per bound and one above them all, how many, their sum."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = array("q", (0,) * (len(bounds) + 1))
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """The count at or below each bound, then the count of all (``+Inf``)."""
        out, seen = [], 0
        for n in self.counts:
            seen += n
            out.append(seen)
        return out


class ActorSeries:
    """One actor's run counts and durations, and what ``exposition`` made of them (kept until
    the actor runs again). Small: 10,000 actors hold 10,000 of these for the whole process, so
    succeeded runs are a plain count and other statuses a dict made at the first one."""

    __slots__ = ("durations", "lines", "other", "succeeded", "template")

    def __init__(self) -> None:
        self.succeeded = 0
        self.other: dict[str, int] | None = None
        self.durations = Buckets(RUN_DURATION_BUCKETS)
        self.lines: tuple[int, str, str] = (-1, "", "")  # (at count, runs text, durations text)
        self.template: Any = None  # exposition's, made at the first scrape

    @property
    def statuses(self) -> dict[str, int]:
        """Runs by recorded status (a new dict)."""
        counts: dict[str, int] = {_SUCCEEDED: self.succeeded} if self.succeeded else {}
        return counts | self.other if self.other else counts

    def finished(self, status: str, seconds: float) -> None:
        if status == _SUCCEEDED:
            self.succeeded += 1
        else:
            other = self.other if self.other is not None else {}
            other[status] = other.get(status, 0) + 1
            self.other = other
        self.durations.observe(seconds)


class RuntimeMetrics:
    """The metrics of one runtime; ``exposition.render`` makes of them what ``GET /metrics``
    serves."""

    def __init__(self) -> None:
        self.lateness = Buckets(RUN_LATENESS_BUCKETS)
        self.acquire = Buckets(ACQUIRE_BUCKETS)
        self.longest_acquire = 0.0
        #: posts by outcome (``POST_OUTCOMES``), and how late the delivered ones were
        self.posts: dict[str, int] = dict.fromkeys(POST_OUTCOMES, 0)
        self.post_lateness = Buckets(POST_LATENESS_BUCKETS)
        self.actors: dict[str, ActorSeries] = {}
        self.read_live: Callable[[], LiveReadings] | None = None

    def read_live_from(self, read: Callable[[], LiveReadings]) -> None:
        self.read_live = read

    # -- counted as it happens ----------------------------------------------------------------

    def run_started(self, trigger: str, lateness: float) -> None:
        if trigger != _RETRY:  # a retry is late by its backoff, on purpose
            self.lateness.observe(max(0.0, lateness))

    def run_finished(self, actor: str, status: str, seconds: float) -> None:
        series = self.actors.get(actor)
        if series is None:
            series = self.actors[actor] = ActorSeries()
        series.finished(status, seconds)

    def post_ended(self, outcome: str, lateness: float | None = None) -> None:
        """A post ended: ``delivered`` (``lateness``: its answer minus the run's slot),
        ``refused`` or ``failed``."""
        self.posts[outcome] += 1
        if lateness is not None:
            self.post_lateness.observe(max(0.0, lateness))

    def acquired(self, seconds: float) -> None:
        self.acquire.observe(seconds)
        if seconds > self.longest_acquire:
            self.longest_acquire = seconds

    # -- read -----------------------------------------------------------------------------------

    @property
    def acquire_waits(self) -> AcquireWaits:
        """The waits for a pooled connection, from the histogram's own counts."""
        fast = self.acquire.cumulative()[ACQUIRE_BUCKETS.index(SLOW_ACQUIRE)]
        return AcquireWaits(
            count=self.acquire.count,
            total=self.acquire.sum,
            longest=self.longest_acquire,
            slow=self.acquire.count - fast,
        )

    def runs(self, actor: str, status: str) -> int:
        """Runs of ``actor`` counted with ``status`` (for tests and the bench)."""
        series = self.actors.get(actor)
        return 0 if series is None else series.statuses.get(status, 0)


def discord_readings(client: Any) -> tuple[bool | None, float]:
    """(connected, latency) of a discord.py client; (None, NaN) without one."""
    if client is None:
        return None, math.nan
    connected = bool(client.is_ready() and not client.is_closed())
    latency = float(client.latency) if connected else math.nan
    return connected, latency if math.isfinite(latency) else math.nan
