"""Failure alerts: a run of failures, or the circuit breaker pausing an actor.

The runtime decides when an alert is due; where it goes (Discord's alert channel, the console in
a dry run) is an ``AlertSink`` given by the host. Sending never delays the runs, and a sink that
fails is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from .db.records import Outcome
from .enums import RunStatus

log = logging.getLogger("discord_actor.runtime")

DRAIN_SECONDS = 5.0  # how long a shutdown waits for alerts still being sent


@dataclass(frozen=True)
class Alert:
    """A failure worth telling an operator about: a run of failures, or the breaker tripping."""

    actor: str
    run_id: int
    outcome: Outcome
    consecutive_failures: int
    paused: bool  # the circuit breaker paused the actor
    setup: bool = False  # its setup() hook failed: it does not run in this process
    key: str | None = None  # a keyed schedule's run: its breaker pauses only that key

    @classmethod
    def setup_failed(cls, actor: str, error: BaseException) -> Alert:
        """An actor that cannot run at all: its setup() raised at start-up."""
        outcome = Outcome(
            RunStatus.FAILED, type(error).__name__, str(error) or type(error).__name__
        )
        return cls(actor, 0, outcome, 0, False, setup=True)

    def text(self) -> str:
        error = f"{self.outcome.error_type}: {self.outcome.error_message}"
        if self.setup:
            return (
                f"actor {self.actor} is broken: setup() failed ({error}); it does not run in"
                " this process until a restart whose setup() succeeds"
            )
        if self.paused and self.key is not None:
            return (
                f"schedule {self.key!r} of actor {self.actor} paused after"
                f" {self.consecutive_failures} consecutive failures (last: run {self.run_id},"
                f" {error}); the actor's other schedules go on. Resume it with: discord-actor"
                f" resume {self.actor}, or add it again with replace=True"
            )
        if self.paused:
            return (
                f"actor {self.actor} paused after {self.consecutive_failures} consecutive"
                f" failures (last: run {self.run_id}, {error}); resume it with:"
                f" discord-actor resume {self.actor}"
            )
        which = f"schedule {self.key!r} of actor" if self.key is not None else "actor"
        if self.outcome.not_retried:
            return (
                f"{which} {self.actor} failed and is not retried (run {self.run_id}, {error});"
                " another attempt would meet the same refusal"
            )
        return (
            f"{which} {self.actor} failed {self.consecutive_failures} times in a row"
            f" (last: run {self.run_id}, {error})"
        )


AlertSink = Callable[[Alert], Awaitable[None]]


class ConsoleAlerts:
    """The dry run's alert sink: prints each alert on the console, as the dry run prints posts,
    so that an operator trying a configuration sees what the alert channel would get."""

    def __init__(self, channel_id: int = 0, stream: TextIO | None = None) -> None:
        self.channel_id = channel_id
        self._stream = stream

    async def __call__(self, alert: Alert) -> None:
        where = f" -> #{self.channel_id}" if self.channel_id else ""
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        print(f"{stamp} [alert{where}] {alert.text()}", file=self._stream or sys.stdout,
              flush=True)


class AlertSender:
    """Sends alerts in the background and waits for them at shutdown."""

    def __init__(self, sink: AlertSink | None) -> None:
        self.sink = sink
        self._sending: set[asyncio.Task[None]] = set()

    def send(self, alert: Alert) -> None:
        if self.sink is None:
            return
        task = asyncio.create_task(self._send(self.sink, alert), name=f"alert for {alert.actor}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def drain(self) -> None:
        """Wait (at most ``DRAIN_SECONDS``) for the alerts still being sent."""
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=DRAIN_SECONDS)

    @staticmethod
    async def _send(sink: AlertSink, alert: Alert) -> None:
        try:
            await sink(alert)
        except Exception as e:
            log.warning("could not send the alert for %s: %s: %s", alert.actor, type(e).__name__, e)
