"""Time as the scheduler sees it.

Schedules read the time through a clock so that tests can step it (``FakeClock``) instead of
sleeping. Leases and heartbeats are about real process liveness and use the database's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Clock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Register a callback for when time jumps; the real clock never jumps."""


class FakeClock(Clock):
    """A clock that only moves when told to; wakes the scheduler when it does.

    Moving it runs nothing by itself: a test's ``ActorHarness.tick`` steps it from one due
    moment to the next and runs each, ``ActorHarness.advance`` moves it once and runs what is
    due then.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = (start or datetime.now(UTC)).astimezone(UTC)
        self._callbacks: list[Callable[[], None]] = []

    def now(self) -> datetime:
        return self._now

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def advance(self, delta: timedelta | float) -> datetime:
        """Move time forward by ``delta`` (seconds or a timedelta) and return the new time."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        return self.set(self._now + delta)

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (timezone-aware, not earlier than now)."""
        if when.tzinfo is None:
            raise ValueError("FakeClock.set needs a timezone-aware datetime")
        self._now = when.astimezone(UTC)
        for callback in self._callbacks:
            callback()
        return self._now
