"""Schedules: slot arithmetic, Debian cron semantics incl. DST, and catch-up decisions.

Pure Python, no database: every instant is written out so a failure shows the exact slot.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from discord_actor.config import ScheduleConfig
from discord_actor.schedules import (
    CronSchedule,
    ImmediateSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    SlotDecision,
    build_schedule,
    cron_error,
    decide,
    format_slot,
    jittered,
)
from discord_actor.schedules.base import Prediction, decide_due, predict

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def make(type: str, timezone: str = "UTC", **kw: Any) -> Schedule:
    return build_schedule(ScheduleConfig(type=type, timezone=timezone, **kw))


def cron(expression: str, timezone: str = "UTC", **kw: Any) -> Schedule:
    return make("cron", timezone, expression=expression, **kw)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def fmt(dt: datetime | None) -> str:
    assert dt is not None
    return format_slot(dt)


def iso(dts: list[datetime]) -> list[str]:
    return [format_slot(d) for d in dts]


def slots_after(s: Schedule, after: str, count: int) -> list[str]:
    return iso(s.upcoming(datetime.fromisoformat(after), count))


# --- build_schedule and validation ---------------------------------------------------------


def test_build_each_type_case_insensitively() -> None:
    assert isinstance(make("Interval", seconds=5), IntervalSchedule)
    assert isinstance(make("cron", expression="* * * * *"), CronSchedule)
    assert isinstance(make("ONCE", at=utc(2026, 1, 1)), OnceSchedule)
    assert isinstance(make("Immediate"), ImmediateSchedule)
    s = make("interval", BERLIN, seconds=5)
    assert s.tz == ZoneInfo(BERLIN) and s.config.seconds == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "weekly"}, "unknown schedule type 'weekly'"),
        ({"type": "interval"}, "seconds > 0"),
        ({"type": "interval", "seconds": 0}, "seconds > 0"),
        ({"type": "interval", "seconds": -3}, "seconds > 0"),
        ({"type": "interval", "seconds": float("inf")}, "seconds <= 3153600000"),
        ({"type": "interval", "seconds": 1e12}, "got 1000000000000.0"),
        ({"type": "cron"}, "empty cron expression"),
        ({"type": "cron", "expression": "61 * * * *"}, "bad minute field '61'"),
        ({"type": "once"}, "needs 'at'"),
        ({"type": "once", "at": datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "timezone": BERLIN},
         "'at' 9999-12-31T23:59:00\\+00:00 is out of range"),
        ({"type": "immediate", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_build_rejects_unusable_configs(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("timezone", "UTC")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_schedule(ScheduleConfig(**kwargs))


# --- interval ------------------------------------------------------------------------------


def test_interval_is_fixed_rate_and_in_the_schedule_zone() -> None:
    s = make("interval", BERLIN, seconds=90)
    now = utc(2026, 6, 1, 12, 0, 0)
    first = s.initial_slot(now)
    assert first == now and format_slot(first) == "2026-06-01T14:00:00+02:00"
    # The next slot depends only on the slot, never on when the run happened or finished.
    assert fmt(s.next_after(first)) == "2026-06-01T14:01:30+02:00"
    assert s.next_after(utc(2026, 6, 1, 12, 1, 30)) == utc(2026, 6, 1, 12, 3, 0)


def test_interval_counts_real_seconds_across_fall_back() -> None:
    s = make("interval", BERLIN, seconds=3600)
    slots = s.upcoming(utc(2026, 10, 24, 22, 0), 4, anchor=utc(2026, 10, 24, 22, 0))
    assert iso(slots) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_interval_upcoming_anchored_jumps_to_the_grid() -> None:
    s = make("interval", seconds=1)
    anchor = utc(2025, 1, 1)
    after = utc(2026, 1, 1, 0, 0, 0) + timedelta(microseconds=500_000)
    assert s.upcoming(after, 3, anchor=anchor) == [
        utc(2026, 1, 1, 0, 0, 1),
        utc(2026, 1, 1, 0, 0, 2),
        utc(2026, 1, 1, 0, 0, 3),
    ]
    # A slot exactly at `after` is not "after"; an anchor still ahead is the first slot.
    assert s.upcoming(utc(2026, 1, 1), 1, anchor=anchor) == [utc(2026, 1, 1, 0, 0, 1)]
    assert s.upcoming(utc(2026, 1, 1), 2, anchor=utc(2026, 1, 2)) == [
        utc(2026, 1, 2),
        utc(2026, 1, 2, 0, 0, 1),
    ]
    # Without an anchor the grid starts at `after`.
    assert make("interval", seconds=60).upcoming(utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 2),
    ]
    assert s.upcoming(utc(2026, 1, 1), 0) == []


# --- once and immediate --------------------------------------------------------------------


def test_once_runs_at_its_time_and_never_again() -> None:
    at = datetime.fromisoformat("2026-12-01T09:00:00+01:00")
    s = make("once", NEW_YORK, at=at)
    assert fmt(s.initial_slot(utc(2027, 1, 1))) == "2026-12-01T03:00:00-05:00"
    assert s.initial_slot(utc(2026, 1, 1)) == at
    assert s.next_after(at) is None
    assert s.upcoming(utc(2026, 1, 1), 5) == [at]
    assert s.upcoming(at, 5) == []
    d = decide(s, at, at + timedelta(seconds=5))
    assert (d.action, d.trigger, d.next_run) == ("run", "schedule", None)


def test_immediate_runs_at_startup_only() -> None:
    s = make("immediate", BERLIN)
    now = utc(2026, 5, 1, 8, 0)
    slot = s.initial_slot(now)
    assert slot is not None and fmt(slot) == "2026-05-01T10:00:00+02:00"
    assert s.next_after(slot) is None
    assert s.upcoming(now, 3) == []
    assert decide(s, slot, now + timedelta(seconds=1)) == SlotDecision(
        "run", now, "startup", 0, None
    )


# --- cron syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # names, case-insensitive, in ranges: weekdays at 09:00 (2026-01-02 is a Friday)
        ("0 9 * * mon-fri", "2026-01-02T09:00:00+00:00", ["2026-01-05T09:00:00+00:00"]),
        ("0 0 1 jan,JUL *", "2026-01-01T00:00:00+00:00", ["2026-07-01T00:00:00+00:00"]),
        # steps and stepped ranges
        ("*/20 * * * *", "2026-01-01T00:00:00+00:00",
         ["2026-01-01T00:20:00+00:00", "2026-01-01T00:40:00+00:00", "2026-01-01T01:00:00+00:00"]),
        ("10-50/20 8 * * *", "2026-01-01T00:00:00+00:00",
         ["2026-01-01T08:10:00+00:00", "2026-01-01T08:30:00+00:00", "2026-01-01T08:50:00+00:00"]),
        # both day fields restricted: the 13th OR a Friday (Feb 2026: Fri 6, Fri 13, Fri 20)
        ("0 0 13 * 5", "2026-02-01T00:00:00+00:00",
         ["2026-02-06T00:00:00+00:00", "2026-02-13T00:00:00+00:00", "2026-02-20T00:00:00+00:00"]),
        # a starred day-of-month (even stepped) means AND: odd days that are Fridays
        ("0 0 */2 * 5", "2026-02-01T00:00:00+00:00",
         ["2026-02-13T00:00:00+00:00", "2026-02-27T00:00:00+00:00", "2026-03-13T00:00:00+00:00"]),
        # Sunday is 0 or 7 (2026-01-04 is a Sunday)
        ("0 12 * * 7", "2026-01-01T00:00:00+00:00", ["2026-01-04T12:00:00+00:00"]),
        ("0 12 * * 0", "2026-01-01T00:00:00+00:00", ["2026-01-04T12:00:00+00:00"]),
        ("0 12 * * 5-7", "2026-01-02T12:00:00+00:00",
         ["2026-01-03T12:00:00+00:00", "2026-01-04T12:00:00+00:00", "2026-01-09T12:00:00+00:00"]),
        # macros are Debian's shorthands
        ("@weekly", "2026-01-01T00:00:00+00:00", ["2026-01-04T00:00:00+00:00"]),
        ("@hourly", "2026-01-01T00:00:00+00:00", ["2026-01-01T01:00:00+00:00"]),
        # cronsim's extensions stay available: last day of the month
        ("0 0 L 2 *", "2026-01-01T00:00:00+00:00", ["2026-02-28T00:00:00+00:00"]),
    ],
)
def test_cron_semantics(expression: str, after: str, expected: list[str]) -> None:
    assert slots_after(cron(expression), after, len(expected)) == expected


def test_cron_initial_slot_is_strictly_after_now() -> None:
    s = cron("0 9 * * *", BERLIN)
    assert fmt(s.initial_slot(utc(2026, 1, 5, 8, 0))) == "2026-01-06T09:00:00+01:00"
    assert fmt(s.initial_slot(utc(2026, 1, 5, 7, 59, 59))) == "2026-01-05T09:00:00+01:00"


@pytest.mark.parametrize("expression", ["@daily", "@DAILY", "0 9 * * MON-FRI", "30 2 * * 7"])
def test_cron_error_accepts_valid(expression: str) -> None:
    assert cron_error(expression) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty cron expression"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 0 9 * * *", "got 6 in '0 0 9 * * *' (seconds and year fields are not supported)"),
        ("@reboot", 'use type = "immediate"'),
        ("@often", "unknown cron macro '@often'"),
        ("61 * * * *", "bad minute field '61' in '61 * * * *' (allowed: 0-59)"),
        ("0 24 * * *", "bad hour field '24'"),
        ("0 0 0 * *", "bad day-of-month field '0'"),
        ("0 0 * 13 *", "bad month field '13'"),
        ("0 0 * * 8", "bad day-of-week field '8'"),
        ("*/0 * * * *", "bad minute field '*/0'"),
        ("5-1 * * * *", "bad minute field '5-1'"),
        ("0 0 ? * *", "bad day-of-month field '?'"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month '2'"),
    ],
)
def test_cron_error_explains(expression: str, message: str) -> None:
    error = cron_error(expression)
    assert error is not None and message in error


# --- DST -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Spring forward, fixed time inside the gap: runs right after the jump, then as usual.
        ("30 2 * * *", BERLIN, "2026-03-28T12:00:00+01:00",
         ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
        ("30 2 * * *", NEW_YORK, "2026-03-07T12:00:00-05:00",
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
        # Spring forward, wall clock: the missing hour simply has no slots.
        ("0 * * * *", BERLIN, "2026-03-29T00:30:00+01:00",
         ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]),
        ("0 * * * *", NEW_YORK, "2026-03-08T00:30:00-05:00",
         ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]),
        # Fall back, fixed time in the repeated hour: once, at the first pass.
        ("30 2 * * *", BERLIN, "2026-10-24T12:00:00+02:00",
         ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
        ("30 1 * * *", NEW_YORK, "2026-10-31T12:00:00-04:00",
         ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
        # Fall back, wall clock: the repeated hour runs twice.
        ("0 * * * *", BERLIN, "2026-10-25T00:30:00+02:00",
         ["2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00",
          "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]),
        ("0 * * * *", NEW_YORK, "2026-10-31T23:30:00-04:00",
         ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00",
          "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
        ("*/30 1 * * *", NEW_YORK, "2026-11-01T00:30:00-04:00",
         ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
          "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-02T01:00:00-05:00"]),
        # As in Debian cron, '*/2' in the hour is a wildcard (wall clock) ...
        ("0 */2 * * *", BERLIN, "2026-10-25T01:00:00+02:00",
         ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T04:00:00+01:00"]),
        # ... while '0-23/2' counts as fixed times: 02:00 only once.
        ("0 0-23/2 * * *", BERLIN, "2026-10-25T01:00:00+02:00",
         ["2026-10-25T02:00:00+02:00", "2026-10-25T04:00:00+01:00", "2026-10-25T06:00:00+01:00"]),
    ],
)
def test_dst(expression: str, zone: str, after: str, expected: list[str]) -> None:
    assert slots_after(cron(expression, zone), after, len(expected)) == expected


def test_dst_next_after_from_the_second_pass_of_a_repeated_hour() -> None:
    # 02:15+01:00 is after 02:50+02:00 in real time: the next 02:50 is the following day.
    s = cron("50 2 * * *", BERLIN)
    second_pass = utc(2026, 10, 25, 1, 15)
    assert fmt(s.next_after(second_pass)) == "2026-10-26T02:50:00+01:00"
    # Slots come back from the database in UTC; the first pass still leads to the second.
    hourly = cron("0 * * * *", BERLIN)
    first_pass = utc(2026, 10, 25, 0, 0)
    assert fmt(hourly.next_after(first_pass)) == "2026-10-25T02:00:00+01:00"


@pytest.mark.parametrize(
    ("zone", "day"),
    [(BERLIN, (2026, 3, 29)), (BERLIN, (2026, 10, 25)),
     (NEW_YORK, (2026, 3, 8)), (NEW_YORK, (2026, 11, 1))],
)
@pytest.mark.parametrize("expression", ["30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "50 1 * * *"])
def test_dst_catch_up_matches_forward_iteration(
    zone: str, day: tuple[int, int, int], expression: str
) -> None:
    """The latest-slot search (reverse iteration) agrees with plain forward iteration."""
    s = cron(expression, zone, catch_up="latest")
    start = datetime(*day, tzinfo=UTC) - timedelta(days=2)
    slots = s.upcoming(start, 120)
    first = slots[0]
    now = datetime(*day, tzinfo=UTC) - timedelta(hours=3)
    while now < datetime(*day, tzinfo=UTC) + timedelta(hours=9):
        due = [x for x in slots if x <= now]
        d = decide(s, first, now)
        # format_slot keeps the offset: equal wall times in one zone would compare equal.
        assert (format_slot(d.scheduled_for), d.skipped) == (format_slot(due[-1]), len(due) - 1)
        assert fmt(d.next_run) == fmt(slots[len(due)]), now
        now += timedelta(minutes=17)


# --- decide and catch-up -------------------------------------------------------------------


def test_decide_on_time_runs_the_slot() -> None:
    s = cron("*/5 * * * *", BERLIN)
    slot = utc(2026, 1, 5, 8, 0)
    d = decide(s, slot, slot + timedelta(seconds=2))
    assert d == SlotDecision("run", slot, "schedule", 0, utc(2026, 1, 5, 8, 5))
    assert d.scheduled_for.tzinfo == ZoneInfo(BERLIN)


def test_decide_rejects_a_slot_that_is_not_due() -> None:
    with pytest.raises(ValueError, match="not due"):
        decide(make("interval", seconds=5), utc(2026, 1, 1, 0, 1), utc(2026, 1, 1))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # T, T+1m, ..., T+10m are due at T+10m30s: 11 slots.
        ("latest", ("run", "12:10", "catch_up", 10, "12:11")),
        ("skip", ("skip", "12:10", "catch_up", 11, "12:11")),
        ("all", ("run", "12:00", "catch_up", 0, "12:01")),
    ],
)
def test_decide_interval_after_downtime(policy: str, expected: tuple[Any, ...]) -> None:
    s = make("interval", seconds=60, catch_up=policy)
    d = decide(s, utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 10, 30))
    def hhmm(dt: datetime | None) -> str:
        assert dt is not None
        return dt.strftime("%H:%M")

    assert (d.action, hhmm(d.scheduled_for), d.trigger, d.skipped, hhmm(d.next_run)) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # Daily 09:00, down from Mon 08:00 to Thu 10:00 (Berlin): Mon..Thu 09:00 are due.
        ("latest", ("run", "2026-01-08T09:00:00+01:00", 3, "2026-01-09T09:00:00+01:00")),
        ("skip", ("skip", "2026-01-08T09:00:00+01:00", 4, "2026-01-09T09:00:00+01:00")),
        ("all", ("run", "2026-01-05T09:00:00+01:00", 0, "2026-01-06T09:00:00+01:00")),
    ],
)
def test_decide_cron_after_downtime(policy: str, expected: tuple[Any, ...]) -> None:
    s = cron("0 9 * * *", BERLIN, catch_up=policy)
    slot = s.initial_slot(utc(2026, 1, 5, 7, 0))
    assert slot is not None
    d = decide(s, slot, utc(2026, 1, 8, 9, 0))
    assert (d.action, fmt(d.scheduled_for), d.skipped, fmt(d.next_run)) == expected
    assert d.trigger == "catch_up"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("latest", ("run", 0)), ("skip", ("skip", 1)), ("all", ("run", 0))],
)
def test_decide_single_slot_past_grace(policy: str, expected: tuple[str, int]) -> None:
    """Only one slot due, but it is older than the grace period: the policy still applies."""
    s = cron("0 9 * * *", "UTC", catch_up=policy)
    slot = utc(2026, 1, 5, 9, 0)
    d = decide(s, slot, utc(2026, 1, 5, 9, 5))
    assert (d.action, d.skipped) == expected
    assert (d.scheduled_for, d.trigger, d.next_run) == (slot, "catch_up", utc(2026, 1, 6, 9))
    # A longer grace makes it on time again.
    on_time = decide(s, slot, utc(2026, 1, 5, 9, 5), misfire_grace_seconds=600)
    assert (on_time.action, on_time.trigger) == ("run", "schedule")


@pytest.mark.parametrize(
    ("policy", "expected"), [("latest", ("run", 0)), ("skip", ("skip", 1)), ("all", ("run", 0))]
)
def test_decide_once_after_downtime(policy: str, expected: tuple[str, int]) -> None:
    at = utc(2026, 3, 1, 9)
    d = decide(make("once", at=at, catch_up=policy), at, utc(2026, 3, 2))
    assert (d.action, d.skipped) == expected
    assert (d.scheduled_for, d.trigger, d.next_run) == (at, "catch_up", None)


def task_row(s: Schedule, next_run: datetime | None, *, paused: bool = False) -> dict[str, Any]:
    """The fields of a stored task that ``predict`` reads."""
    return {"schedule_hash": s.hash(), "next_run": next_run, "paused": paused}


@pytest.mark.parametrize(
    ("policy", "slots", "trigger"),
    [
        ("latest", ["2026-01-05T12:59:50+00:00", "2026-01-05T13:00:00+00:00"], "catch_up"),
        ("skip", ["2026-01-05T13:00:00+00:00", "2026-01-05T13:00:10+00:00"], "catch_up"),
        ("all", ["2026-01-05T12:00:00+00:00", "2026-01-05T12:00:10+00:00"], "catch_up"),
    ],
)
def test_predict_decides_a_missed_slot_as_the_scheduler_does(
    policy: str, slots: list[str], trigger: str
) -> None:
    """An interval actor whose stored slot passed an hour ago: what runs next, in order."""
    s = make("interval", seconds=10, catch_up=policy)
    now = utc(2026, 1, 5, 12, 59, 55)
    found = predict(s, task_row(s, utc(2026, 1, 5, 12)), now, 2)
    assert iso(found.slots) == slots
    assert found.due is not None and found.due == decide_due(s, utc(2026, 1, 5, 12), now)
    assert (found.due.action, found.due.trigger) == ("skip" if policy == "skip" else "run", trigger)
    assert not found.done


def test_predict_once_new_done_paused_and_after() -> None:
    at = utc(2026, 3, 1, 9)
    once = make("once", at=at)
    late = utc(2026, 3, 2)
    # Not run yet, its time passed: the catch_up run a server makes of it.
    found = predict(once, None, late, 3)
    assert (found.slots, found.due and found.due.trigger, found.done) == ([at], "catch_up", False)
    assert predict(once, task_row(once, at), late, 3).slots == [at]
    # It ran (the stored slot is gone): nothing, for good.
    assert predict(once, task_row(once, None), late, 3) == Prediction([], done=True)
    # On time (within the grace): a schedule run, nothing missed.
    found = predict(once, None, at + timedelta(seconds=30), 3)
    assert found.slots == [at] and found.due is not None and found.due.trigger == "schedule"
    # A paused interval goes on at its next slot after now, as a resume does: nothing late.
    s = make("interval", seconds=10)
    found = predict(s, task_row(s, utc(2026, 1, 5, 12), paused=True), utc(2026, 1, 5, 13, 0, 5), 2)
    assert iso(found.slots) == ["2026-01-05T13:00:10+00:00", "2026-01-05T13:00:20+00:00"]
    assert found.due is None
    # With after: the grid after it, nothing decided.
    found = predict(s, task_row(s, utc(2026, 1, 5, 12)), utc(2026, 1, 6), 2,
                    after=utc(2026, 1, 5, 12, 0, 3))
    assert iso(found.slots) == ["2026-01-05T12:00:10+00:00", "2026-01-05T12:00:20+00:00"]
    assert found.due is None
    assert predict(make("immediate"), None, late, 3) == Prediction([])


def test_decide_immediate_long_after_startup_is_a_catch_up() -> None:
    s = make("immediate", catch_up="latest")
    d = decide(s, utc(2026, 1, 1), utc(2026, 1, 1, 0, 5))
    assert (d.action, d.trigger, d.skipped, d.next_run) == ("run", "catch_up", 0, None)


def test_decide_one_second_interval_after_thirty_days_is_arithmetic() -> None:
    slot = utc(2026, 1, 1)
    now = slot + timedelta(days=30, microseconds=250_000)
    latest = decide(make("interval", seconds=1, catch_up="latest"), slot, now)
    after_30_days = slot + timedelta(days=30)
    assert latest == SlotDecision(
        "run", after_30_days, "catch_up", 2_592_000, after_30_days + timedelta(seconds=1)
    )
    skip = decide(make("interval", seconds=1, catch_up="skip"), slot, now)
    assert (skip.action, skip.skipped, skip.next_run) == ("skip", 2_592_001, latest.next_run)


def test_decide_minutely_cron_after_thirty_days_across_dst() -> None:
    """43,200 missed minutes are counted exactly without visiting each of them."""
    s = cron("* * * * *", BERLIN, catch_up="skip")
    slot = utc(2026, 3, 15, 12, 0)
    d = decide(s, slot, slot + timedelta(days=30, seconds=30))
    assert (d.action, d.skipped) == ("skip", 30 * 1440 + 1)
    assert d.scheduled_for == slot + timedelta(days=30)
    assert d.next_run == slot + timedelta(days=30, minutes=1)
    # A fixed-time job across the same month, with the spring-forward day in it.
    daily = cron("30 2 * * *", BERLIN, catch_up="latest")
    d = decide(daily, utc(2026, 3, 15, 1, 30), utc(2026, 4, 14, 12))
    assert (format_slot(d.scheduled_for), d.skipped) == ("2026-04-14T02:30:00+02:00", 30)
    assert fmt(d.next_run) == "2026-04-15T02:30:00+02:00"


def test_decide_year_of_downtime_counts_match_calendar() -> None:
    # Weekdays 09:00 in New York through 2026: 261 of them, from Thu 1 Jan to Thu 31 Dec.
    s = cron("0 9 * * 1-5", NEW_YORK, catch_up="skip")
    first = s.initial_slot(utc(2026, 1, 1))
    assert first is not None and format_slot(first) == "2026-01-01T09:00:00-05:00"
    d = decide(s, first, utc(2027, 1, 1))
    assert (format_slot(d.scheduled_for), d.skipped) == ("2026-12-31T09:00:00-05:00", 261)


# --- hash, normalized, jitter, formatting --------------------------------------------------


def test_hash_is_stable_and_follows_what_decides_the_slots() -> None:
    base = cron("0 9 * * mon-fri", BERLIN)
    assert base.hash() == cron("0 9 * * mon-fri", BERLIN).hash()
    assert len(base.hash()) == 64
    json.dumps(base.normalized())
    # Spelling that does not change the slots does not change the hash.
    assert base.hash() == cron("  0 9  * * MON-FRI ", BERLIN).hash()
    assert cron("@daily").hash() == cron("0 0 * * *").hash()
    # Jitter and catch-up do not move slots: changing them must not reset a task.
    assert base.hash() == cron("0 9 * * mon-fri", BERLIN, jitter_seconds=30, catch_up="all").hash()
    different = [
        cron("0 10 * * mon-fri", BERLIN),
        cron("0 9 * * mon-fri", NEW_YORK),
        make("interval", BERLIN, seconds=60),
        make("interval", BERLIN, seconds=61),
        make("once", at=utc(2026, 1, 1)),
        make("once", at=utc(2026, 1, 2)),
        make("immediate"),
    ]
    hashes = {s.hash() for s in [base, *different]}
    assert len(hashes) == len(different) + 1
    # The same instant written in another zone is the same once schedule.
    assert make("once", at=utc(2026, 1, 1)).hash() == make(
        "once", at=datetime.fromisoformat("2026-01-01T01:00:00+01:00")
    ).hash()


def test_normalized_shapes() -> None:
    assert make("interval", seconds=60).normalized() == {"type": "interval", "seconds": 60.0}
    assert cron("@hourly", BERLIN).normalized() == {
        "type": "cron", "expression": "0 * * * *", "timezone": BERLIN
    }
    assert make("once", at=utc(2026, 1, 1)).normalized() == {
        "type": "once", "at": "2026-01-01T00:00:00+00:00"
    }
    assert make("immediate").normalized() == {"type": "immediate"}


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_jittered_stays_within_the_window_and_zone() -> None:
    slot = datetime(2026, 3, 29, 1, 59, 50, tzinfo=ZoneInfo(BERLIN))
    assert jittered(slot, 0) is slot
    assert jittered(slot, 30, FixedRandom(0.0)) == slot
    late = jittered(slot, 30, FixedRandom(0.999_999_999_9)).astimezone(UTC)
    assert timedelta(seconds=29) < late - slot.astimezone(UTC) < timedelta(seconds=30)
    # Across the spring-forward jump, the result is a real Berlin time.
    assert format_slot(jittered(slot, 30, FixedRandom(0.5))) == "2026-03-29T03:00:05+02:00"
    values = [jittered(slot, 10).astimezone(UTC) - slot.astimezone(UTC) for _ in range(50)]
    assert all(timedelta(0) <= v < timedelta(seconds=10) for v in values)


def test_format_slot() -> None:
    dt = datetime(2026, 3, 29, 3, 0, 0, 123456, tzinfo=ZoneInfo(BERLIN))
    assert format_slot(dt) == "2026-03-29T03:00:00+02:00"
    assert format_slot(utc(2026, 1, 1)) == "2026-01-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_slot(datetime(2026, 1, 1))
