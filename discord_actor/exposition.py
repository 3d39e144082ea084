"""``/metrics``: a runtime's metrics (``metrics.py``) in Prometheus's text format, rendered by
``prometheus_client`` (imported here only, when someone scrapes).

The per-actor series (``runs_total``, ``run_duration_seconds``) are what grows with the number
of actors: 10,000 actors make about 100,000 samples, and ``prometheus_client`` renders a sample
in several microseconds, over a second in all. So ``prometheus_client`` renders each actor's
lines once, as a *template* (names, labels, escaping; each line up to its value), and a scrape
only writes the values, with ``prometheus_client``'s own ``floatToGoString``; an actor's text is
kept until it runs again. The output is the same, sample for sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString as _float_to_go_string

from .metrics import PREFIX, RUN_DURATION_BUCKETS, ActorSeries, Buckets, RuntimeMetrics

_Template = tuple[tuple[str, ...], list[tuple[str, str]], list[tuple[str, int]]]
_RUNS = (f"{PREFIX}_runs", "Runs finished, by actor and recorded status.")
_DURATION = (
    f"{PREFIX}_run_duration_seconds",
    "How long runs took, from start to recorded outcome, by actor.",
)


def render(metrics: RuntimeMetrics) -> bytes:
    """Every metric of ``metrics`` in Prometheus's text format.

    Safe to call from another thread (``/metrics`` does, so that rendering 10,000 actors does
    not stall the event loop): it only reads, and copies what it iterates."""
    parts = [_render(_families(metrics)), _HEADERS[0]]
    rendered = [actor_lines(series, actor) for actor, series in sorted(metrics.actors.items())]
    parts += [runs for runs, _ in rendered]
    parts.append(_HEADERS[1])
    parts += [duration for _, duration in rendered]
    return "".join(parts).encode()


def _families(metrics: RuntimeMetrics) -> Iterator[Metric]:
    """Everything but the per-actor series: the two histograms and the live gauges."""
    yield _histogram(
        f"{PREFIX}_run_lateness_seconds",
        "How late runs started: start minus their slot (retries not counted).",
        metrics.lateness,
    )
    yield _histogram(
        f"{PREFIX}_post_lateness_seconds",
        "How late posts were delivered: the platform's answer minus the run's slot.",
        metrics.post_lateness,
    )
    posts = CounterMetricFamily(
        f"{PREFIX}_posts",
        "Posts ended, by outcome (delivered, refused, failed).",
        labels=["outcome"],
    )
    for outcome, n in metrics.posts.items():
        posts.add_metric([outcome], n)
    yield posts
    yield _histogram(
        f"{PREFIX}_pool_acquire_seconds",
        "How long actors waited for a pooled connection (within their share).",
        metrics.acquire,
    )
    if metrics.read_live is None:
        return
    live = metrics.read_live()
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
        f"{PREFIX}_post_queue_depth",
        "Posts of this process waiting for Discord's limits (its channel's turn or a slot).",
        value=live.posts_waiting,
    )
    limited = CounterMetricFamily(
        f"{PREFIX}_discord_rate_limited",
        "429s Discord answered, by X-RateLimit-Scope (global, user, shared).",
        labels=["scope"],
    )
    for scope in ("global", "user", "shared"):
        limited.add_metric([scope], (live.rate_limited or {}).get(scope, 0))
    yield limited
    yield GaugeMetricFamily(
        f"{PREFIX}_event_loop_lag_seconds",
        "How late the event loop ran a timer, at its latest check (every 0.25 s).",
        value=live.loop_lag,
    )


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    bounds = [*(_go_float(b) for b in buckets.bounds), "+Inf"]
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], list(zip(bounds, buckets.cumulative(), strict=True)), buckets.sum)
    return family


def actor_lines(series: ActorSeries, actor: str) -> tuple[str, str]:
    """An actor's ``runs_total`` and ``run_duration_seconds`` lines (kept on the series until
    it runs again; this runs in a thread while the event loop may count more)."""
    durations = series.durations
    count = durations.count
    if series.lines[0] != count:
        counts = series.statuses  # a copy
        statuses = tuple(sorted(counts))
        template: _Template | None = series.template
        if template is None or template[0] != statuses:
            template = series.template = _template(actor, statuses)
        _, runs_lines, duration_lines = template
        values = [_count_text(n) for n in durations.cumulative()]
        values.append(_go_float(durations.sum))
        statuses_text = {k: _count_text(v) for k, v in counts.items()}
        series.lines = (
            count,
            "".join(f"{prefix}{statuses_text[status]}\n" for prefix, status in runs_lines),
            "".join(f"{prefix}{values[index]}\n" for prefix, index in duration_lines),
        )
    return series.lines[1], series.lines[2]


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



_HEADERS = (
    _render([CounterMetricFamily(*_RUNS, labels=["actor", "status"])]),
    _render([HistogramMetricFamily(*_DURATION, labels=["actor"])]),
)
