"""The example actor actors/db_report.py: its report counts finished runs only."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

from discord_actor import RunContext, actor
from discord_actor.clock import FakeClock
from discord_actor.db import Database
from discord_actor.plugins import make_importable
from discord_actor.testing.harness import ActorHarness, actor_config

REPO = Path(__file__).resolve().parents[1]


@actor
async def counter(ctx: RunContext) -> None:
    pass


async def test_db_report_does_not_count_its_own_run_in_progress(database: Database) -> None:
    make_importable(REPO / "actors")
    db_report = importlib.import_module("db_report").db_report
    report = actor_config("db_report", settings={"schema": database.schema})

    async def reported(minute: int) -> str:
        # An immediate actor runs at each start: a new harness is a new start (a minute on).
        clock = FakeClock(datetime(2026, 1, 5, 12, minute, tzinfo=UTC))
        async with ActorHarness(database, [(db_report, report)], clock=clock) as harness:
            (run,) = await harness.tick()
        assert run.status == "succeeded", run.error_message
        return str(run.posted[0]["content"])

    async with ActorHarness(database, [(counter, actor_config("counter"))]) as harness:
        await harness.tick()
    # Its own run is still running while it asks: not a failure, not counted.
    assert await reported(1) == "last hour: counter 1/1 ok"
    assert await reported(2) == "last hour: counter 1/1 ok, db_report 1/1 ok"
