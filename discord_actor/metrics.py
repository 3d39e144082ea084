"""Prometheus metrics of one runtime, in a registry of its own (several runtimes in one process,
as in tests, do not collide), rendered by ``prometheus_client``.

What happens (runs, their lateness, waits for a pooled connection) is counted where it happens,
by the executor and the connection budget; what *is* (the pool's connections, the gateway, the
event loop's lag) is read only when someone scrapes, so an unscraped runtime pays nothing for it.

The per-actor series (``runs_total``, ``run_duration_seconds``) are what grows with the number
of actors: 10,000 actors make about 100,000 samples, and rendering one sample costs
``prometheus_client`` several microseconds. So each actor's lines are rendered once and kept
until that actor runs again: a scrape renders only the actors that ran since the previous one.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString as _float_to_go_string

PREFIX = "discord_actor"
RUN_DURATION_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0)
RUN_LATENESS_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0)
ACQUIRE_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


@dataclass
class AcquireWaits:
    """Waits for a pooled connection so far, for the dashboard."""

    count: int = 0
    total: float = 0.0  # seconds
    longest: float = 0.0
    slow: int = 0  # longer than SLOW_ACQUIRE


SLOW_ACQUIRE = 0.1  # seconds: a wait this long means the actor's share or the pool is full


class _Families:
    """A collection of metric families, in the shape ``generate_latest`` renders."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _render(families: Iterable[Metric]) -> str:
    return generate_latest(_Families(families)).decode()


def _samples_only(text: str) -> str:
    """A rendered family without its ``# HELP`` and ``# TYPE`` lines."""
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


_Template = tuple[tuple[str, ...], list[tuple[str, str]], list[tuple[str, int]]]
_NO_TEMPLATE: _Template = ((), [], [])  # shared until an actor's first render
_NO_RUNS = (0,) * (len(RUN_DURATION_BUCKETS) + 1)
_RUNS = (f"{PREFIX}_runs", "Runs finished, by actor and recorded status.")
_DURATION = (
    f"{PREFIX}_run_duration_seconds",
    "How long runs took, from start to recorded outcome, by actor.",
)


class _ActorSeries:
    """One actor's run counts and durations, and their rendered lines with the ``count`` they
    were rendered at (rendering runs in a thread: a run recorded meanwhile makes them stale).

    ``prometheus_client`` renders each line's name, labels and escaping once per actor (and
    again when a new status appears): the *template*, each line up to its value. A scrape then
    only formats the values, with ``prometheus_client``'s own ``floatToGoString``. Rendering
    whole families at each scrape costs several microseconds a sample, over a second for
    10,000 actors; filling the templates costs a tenth of that.
    """

    __slots__ = ("buckets", "count", "lines", "other", "succeeded", "sum", "template")

    def __init__(self) -> None:
        # Kept small (10,000 actors hold 10,000 of these for the whole process): succeeded runs
        # as a plain count, other statuses in a dict made at the first one, the buckets as an
        # array of machine integers (the last one: above every bound).
        self.succeeded = 0
        self.other: dict[str, int] | None = None
        self.buckets = array("q", _NO_RUNS)
        self.count = 0
        self.sum = 0.0
        self.lines: tuple[int, str, str] = (-1, "", "")
        # (statuses it was made for, runs lines' (prefix, status), duration lines' (prefix,
        # value index: 0..n-1 the cumulative buckets, n the sum))
        self.template: _Template = _NO_TEMPLATE

    @property
    def statuses(self) -> dict[str, int]:
        """Runs by recorded status (a new dict)."""
        counts = {"succeeded": self.succeeded} if self.succeeded else {}
        return counts | self.other if self.other else counts

    def finished(self, status: str, seconds: float) -> None:
        if status == "succeeded":
            self.succeeded += 1
        else:
            other = self.other if self.other is not None else {}
            other[status] = other.get(status, 0) + 1
            self.other = other
        self.buckets[bisect.bisect_left(RUN_DURATION_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def render(self, actor: str) -> tuple[str, str]:
        count = self.count
        if self.lines[0] != count:
            # A copy: this runs in a thread while the event loop may count a new status.
            counts = self.statuses
            statuses = tuple(sorted(counts))
            if self.template[0] != statuses:
                self.template = _template(actor, statuses)
            _, runs_lines, duration_lines = self.template
            values, seen = [], 0
            for n in self.buckets:
                seen += n
                values.append(_count_text(seen))
            values.append(_go_float(self.sum))
            statuses_text = {k: _count_text(v) for k, v in counts.items()}
            self.lines = (
                count,
                "".join(f"{prefix}{statuses_text[status]}\n" for prefix, status in runs_lines),
                "".join(f"{prefix}{values[index]}\n" for prefix, index in duration_lines),
            )
        return self.lines[1], self.lines[2]


def _go_float(value: float) -> str:
    """A value as ``prometheus_client`` writes it in the text format."""
    text: str = _float_to_go_string(value)  # type: ignore[no-untyped-call]
    return text


@lru_cache(maxsize=100_000)
def _count_text(n: int) -> str:
    """A count as ``prometheus_client`` writes it; counts repeat across actors, so cached."""
    return _go_float(float(n))


# Stands for the actor's name in the shared templates: actor names are letters, digits, '_'
# and '-' (config.py), which a label value never escapes, so putting the name in its place
# gives exactly what prometheus_client would have rendered for that actor.
_ACTOR = "@actor@"


def _template(actor: str, statuses: tuple[str, ...]) -> _Template:
    """An actor's lines as ``prometheus_client`` renders them, each cut before its value, and
    where each value comes from."""
    runs_lines, duration_lines = _shared_template(statuses)
    return (
        statuses,
        [(prefix.replace(_ACTOR, actor), status) for prefix, status in runs_lines],
        [(prefix.replace(_ACTOR, actor), index) for prefix, index in duration_lines],
    )


@lru_cache(maxsize=64)
def _shared_template(
    statuses: tuple[str, ...],
) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """The lines of an actor with these statuses, rendered once by ``prometheus_client`` with
    distinct stand-in values to tell where each value goes."""
    runs = CounterMetricFamily(*_RUNS, labels=["actor", "status"])
    for i, status in enumerate(statuses):
        runs.add_metric([_ACTOR, status], i + 1)
    bounds = [*(repr(b) for b in RUN_DURATION_BUCKETS), "+Inf"]
    duration = HistogramMetricFamily(*_DURATION, labels=["actor"])
    duration.add_metric([_ACTOR], [(b, i + 1) for i, b in enumerate(bounds)], 0.5)
    runs_lines = []
    for line in _samples_only(_render([runs])).splitlines():
        prefix, value = line.rsplit(" ", 1)
        runs_lines.append((prefix + " ", statuses[int(float(value)) - 1]))
    duration_lines = []
    for line in _samples_only(_render([duration])).splitlines():
        prefix, value = line.rsplit(" ", 1)
        stand_in = float(value)
        index = len(bounds) if stand_in == 0.5 else int(stand_in) - 1
        duration_lines.append((prefix + " ", index))
    return runs_lines, duration_lines


class RuntimeMetrics:
    """The metrics of one runtime; ``render()`` is what ``GET /metrics`` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.run_lateness = Histogram(
            f"{PREFIX}_run_lateness_seconds",
            "How late runs started: start minus their slot (retries not counted).",
            buckets=RUN_LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.pool_acquire = Histogram(
            f"{PREFIX}_pool_acquire_seconds",
            "How long actors waited for a pooled connection (within their share).",
            buckets=ACQUIRE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)  # the live gauges: see collect()
        self._actors: dict[str, _ActorSeries] = {}
        self.acquire_waits = AcquireWaits()
        self._read_live: Callable[[], LiveReadings] | None = None
        self._headers = (
            _render([CounterMetricFamily(*_RUNS, labels=["actor", "status"])]),
            _render([HistogramMetricFamily(*_DURATION, labels=["actor"])]),
        )

    def read_live_from(self, read: Callable[[], LiveReadings]) -> None:
        self._read_live = read

    # -- counted as it happens ----------------------------------------------------------------

    def run_started(self, trigger: str, lateness: float) -> None:
        if trigger != "retry":  # a retry is late by its backoff, on purpose
            self.run_lateness.observe(max(0.0, lateness))

    def run_finished(self, actor: str, status: str, seconds: float) -> None:
        series = self._actors.get(actor)
        if series is None:
            series = self._actors[actor] = _ActorSeries()
        series.finished(status, seconds)

    def acquired(self, seconds: float) -> None:
        self.pool_acquire.observe(seconds)
        waits = self.acquire_waits
        waits.count += 1
        waits.total += seconds
        waits.longest = max(waits.longest, seconds)
        if seconds > SLOW_ACQUIRE:
            waits.slow += 1

    # -- read at scrape time -------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The gauges, read from the runtime now (a ``prometheus_client`` custom collector)."""
        if self._read_live is None:
            return
        live = self._read_live()
        pool = GaugeMetricFamily(
            f"{PREFIX}_pool_connections",
            "Connections of the shared pool, by state.",
            labels=["state"],
        )
        pool.add_metric(["in_use"], live.pool_in_use)
        pool.add_metric(["idle"], live.pool_idle)
        yield pool
        yield GaugeMetricFamily(
            f"{PREFIX}_pool_max_connections",
            "The shared pool's size (database.max_pool_size).",
            value=live.pool_max,
        )
        by_actor = GaugeMetricFamily(
            f"{PREFIX}_actor_connections_in_use",
            "Pooled connections held by each actor that has asked for one.",
            labels=["actor"],
        )
        for actor, n in sorted(live.actor_connections.items()):
            by_actor.add_metric([actor], n)
        yield by_actor
        yield GaugeMetricFamily(
            f"{PREFIX}_discord_connected",
            "1 while the Discord gateway connection is ready, else 0 (0 without Discord).",
            value=1 if live.discord_connected else 0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_discord_latency_seconds",
            "The gateway heartbeat's round trip (NaN when not connected).",
            value=live.discord_latency,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_lag_seconds",
            "How late the event loop ran a timer, at its latest check (every 0.25 s).",
            value=live.loop_lag,
        )

    def render(self) -> bytes:
        """Every metric in Prometheus's text format.

        Safe to call from another thread (``/metrics`` does, so that rendering 10,000 actors
        does not stall the event loop): it only reads, and copies what it iterates."""
        parts = [generate_latest(self.registry).decode(), self._headers[0]]
        actors = sorted(list(self._actors.items()))
        rendered = [(series.render(actor)) for actor, series in actors]
        parts += [runs for runs, _ in rendered]
        parts.append(self._headers[1])
        parts += [duration for _, duration in rendered]
        return "".join(parts).encode()

    def runs(self, actor: str, status: str) -> int:
        """Runs of ``actor`` counted with ``status`` (for tests and the dashboard)."""
        series = self._actors.get(actor)
        return 0 if series is None else series.statuses.get(status, 0)


def discord_readings(client: Any) -> tuple[bool | None, float]:
    """(connected, latency) of a discord.py client; (None, NaN) without one."""
    if client is None:
        return None, math.nan
    connected = bool(client.is_ready() and not client.is_closed())
    latency = float(client.latency) if connected else math.nan
    return connected, latency if math.isfinite(latency) else math.nan
