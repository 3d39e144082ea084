"""What the dashboard shows of times and timelines, without a browser: relative times with the
exact time and zone for the hover, and a timeline scaled to the runs there are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from discord_actor.enums import RunStatus, Trigger
from discord_actor.operations import RunInfo
from discord_actor.web.moments import exact, moment, relative
from discord_actor.web.timeline import STUB, TIMELINE_RUNS, WIDTH, timeline

NOW = datetime(2026, 3, 29, 1, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0.4, "now"), (-0.9, "now"), (4.9, "in 4 s"), (-89, "89 s ago"), (-90, "1 min ago"),
     (-180, "3 min ago"), (3 * 3600, "in 3 h"), (-47 * 3600, "47 h ago"), (-2 * 86400, "2 d ago"),
     (-6.3 * 365.25 * 86400, "6 y ago")],
)
def test_times_read_relative(seconds: float, said: str) -> None:
    assert relative(seconds) == said


@pytest.mark.parametrize(
    ("zone", "said"),
    [(None, "2026-03-29 01:00:30 UTC"),
     ("UTC", "2026-03-29 01:00:30 UTC"),
     ("Europe/Berlin", "2026-03-29 03:00:30 CEST (UTC+02:00, Europe/Berlin)"),
     ("Europe/London", "2026-03-29 02:00:30 BST (UTC+01:00, Europe/London)"),
     ("Asia/Kolkata", "2026-03-29 06:30:30 IST (UTC+05:30, Asia/Kolkata)"),
     ("America/Sao_Paulo", "2026-03-28 22:00:30 -03 (UTC-03:00, America/Sao_Paulo)")],
)
def test_the_exact_time_names_its_zone(zone: str | None, said: str) -> None:
    assert exact(NOW, ZoneInfo(zone) if zone else None) == said


def test_a_moment_carries_the_iso_time_in_its_zone() -> None:
    # Three minutes earlier Berlin was still on winter time: its own offset, read alike.
    shown = moment(NOW - timedelta(minutes=3), ZoneInfo("Europe/Berlin"), NOW)
    assert shown is not None
    assert shown.iso == "2026-03-29T01:57:30+01:00"
    assert shown.relative == "3 min ago"
    assert shown.exact == "2026-03-29 01:57:30 CET (UTC+01:00, Europe/Berlin)"
    assert moment(None, None, NOW) is None


def run(started: datetime, slot: datetime | None = None, run_id: int = 1) -> RunInfo:
    return RunInfo(
        id=run_id, actor="a", timezone=UTC, scheduled_for=slot or started, started_at=started,
        finished_at=started, duration_ms=3.0, status=RunStatus.SUCCEEDED, attempt=1,
        trigger=Trigger.SCHEDULE, error_type=None, error_message=None, instance_id=None,
        posted=[],
    )


def every(seconds: float, count: int) -> list[RunInfo]:
    """``count`` runs ``seconds`` apart up to now, newest first (as the store reads them)."""
    return [run(NOW - timedelta(seconds=seconds * n), run_id=n) for n in range(count)]


def test_a_fresh_install_fills_its_timeline() -> None:
    drawn = timeline(every(3, 11), NOW)  # half a minute of runs
    xs = [m.x for m in drawn.marks]
    assert min(xs) <= WIDTH * 0.03 and max(xs) == WIDTH
    assert drawn.span == "last 30 s" and drawn.note == ""


def test_a_day_of_runs_spans_24_hours() -> None:
    drawn = timeline(every(900, 97), NOW)  # the oldest is exactly 24 h ago
    assert drawn.span == "last 24 h" and min(m.x for m in drawn.marks) == 0


def test_without_runs_the_timeline_is_the_last_hour() -> None:
    assert (timeline([], NOW).span, timeline([], NOW).note) == ("last 60 min", "no runs yet")
    old = [run(NOW - timedelta(days=3))]
    assert (timeline(old, NOW).marks, timeline(old, NOW).note) == ([], "no runs in 24 h")


def test_a_once_of_2020_gets_a_stub_not_a_line_across_the_bar() -> None:
    slot = datetime(2020, 1, 1, 8, tzinfo=UTC)
    drawn = timeline([run(NOW - timedelta(seconds=20), slot)], NOW)
    (mark,) = drawn.marks
    assert mark.cut and 0 <= mark.slot_x < mark.x <= WIDTH
    assert mark.x - mark.slot_x <= STUB
    assert "started 6 y late" in mark.title
    assert "slot 2020-01-01 08:00:00 UTC" in mark.title


def test_the_next_slot_is_drawn_when_it_is_near() -> None:
    drawn = timeline(every(60, 30), NOW, next_run=NOW + timedelta(minutes=2), tz=UTC)
    assert drawn.next is not None and drawn.next.x == WIDTH and drawn.now_x < WIDTH
    assert drawn.next.title == "next slot in 2 min: 2026-03-29 01:02:30 UTC"
    far = timeline(every(60, 30), NOW, next_run=NOW + timedelta(hours=5))
    assert far.next is None and far.now_x == WIDTH


def test_runs_past_the_limit_are_said_to_be_left_out() -> None:
    drawn = timeline(every(2, TIMELINE_RUNS), NOW)
    assert drawn.span == "last 10 min" and drawn.note == f"its {TIMELINE_RUNS} newest runs"
