"""An actor's runs on one axis, as the dashboard draws them (an SVG of ``WIDTH`` user units):
one mark per run where it started, coloured by its status, a line back to its slot when it
started late, and the next slot when it is close.

The axis is scaled to what there is: from the earliest run drawn (at most 24 hours back; the
last hour when there is none) to now, or to the next slot when that is near. A fresh install's
first runs so fill the bar instead of making a sliver at its right end. What lies outside the
axis is clamped: a run whose slot is before it (a ``once`` of 2020 run today) gets a short
dashed stub towards its slot, not a "late" line across the whole bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from ..enums import RunStatus
from ..operations import RunInfo, format_duration
from .moments import amount, exact, relative

TIMELINE_RUNS = 300  # at most this many runs drawn per timeline (the newest)
WIDTH = 600  # SVG user units
WINDOW = timedelta(hours=24)  # the furthest back a timeline reaches
EMPTY = timedelta(hours=1)  # the span of a timeline without runs
SHORTEST = timedelta(seconds=10)  # a span never shorter: one run a second ago is no full bar
MARGIN = 0.02  # of the span, left of the earliest run, so that its mark is not cut by the edge
AHEAD = 0.25  # the next slot is drawn when it is at most this share of the span ahead
STUB = 12.0  # the length of the line towards a slot that lies before the axis


@dataclass(frozen=True)
class Mark:
    """One run: where it started, where its slot was, how it ended."""

    x: float
    slot_x: float  # left of ``x`` by the run's lateness, or a stub's end when ``cut``
    status: RunStatus
    title: str
    cut: bool = False  # its slot lies before the axis


@dataclass(frozen=True)
class NextSlot:
    x: float
    title: str


@dataclass(frozen=True)
class Timeline:
    marks: list[Mark]
    span: str  # what the axis covers: "last 24 h", "last 40 s"
    note: str  # "" or what else to know: "no runs yet", "its 300 newest runs"
    now_x: float  # where now is: the right end, unless the next slot is drawn beyond it
    next: NextSlot | None = None
    width: int = WIDTH


def timeline(
    runs: list[RunInfo],
    now: datetime,
    next_run: datetime | None = None,
    tz: tzinfo | None = None,
) -> Timeline:
    """``runs`` (newest first) on an axis that ends at now, or at ``next_run`` (the slot the actor
    will run next, None when it will not: paused, broken...) when that is near; ``tz`` is the
    zone the next slot is shown in."""
    furthest = now - WINDOW
    shown = [r for r in runs if r.started_at >= furthest]
    note = ""
    if shown:
        length = max(now - min(r.started_at for r in shown), SHORTEST)
        start = max(now - length * (1 + MARGIN), furthest)
        if len(runs) >= TIMELINE_RUNS and len(shown) == len(runs):
            note = f"its {len(shown)} newest runs"  # older ones in the window are left out
    else:
        start = now - EMPTY
        note = "no runs in 24 h" if runs else "no runs yet"
    end = now
    if next_run is not None and next_run <= now + (now - start) * AHEAD:
        end = max(now, next_run)
    seconds = max((end - start).total_seconds(), 1e-3)

    def x(moment: datetime) -> float:
        share = (moment - start).total_seconds() / seconds
        return round(min(max(share, 0.0), 1.0) * WIDTH, 1)

    marks = [_mark(r, x, start) for r in reversed(shown)]  # oldest first: the newest on top
    upcoming = None
    if next_run is not None and next_run <= end:
        title = f"next slot {relative((next_run - now).total_seconds())}: {exact(next_run, tz)}"
        upcoming = NextSlot(x(max(next_run, now)), title)
    return Timeline(marks, f"last {_span(now - start)}", note, x(now), upcoming)


def _mark(r: RunInfo, x: Callable[[datetime], float], start: datetime) -> Mark:
    at = x(r.started_at)
    late = (r.started_at - r.scheduled_for).total_seconds()
    cut = r.scheduled_for < start
    title = (
        f"run {r.id} {r.status} \N{EM DASH} slot {exact(r.scheduled_for, r.timezone)}, "
        f"started {_late(max(late, 0.0))} late, took {format_duration(r.duration_ms)}"
    )
    return Mark(at, max(at - STUB, 0.0) if cut else x(r.scheduled_for), r.status, title, cut)


def _late(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else amount(seconds)


def _span(length: timedelta) -> str:
    """``40 s``, ``12 min``, ``3.5 h``, ``24 h``: what a timeline covers."""
    hours = length.total_seconds() / 3600
    if hours < 1.5:
        return amount(length.total_seconds())
    return f"{hours:.1f}".removesuffix(".0") + " h"
