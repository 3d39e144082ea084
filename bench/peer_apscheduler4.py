"""bench/peers.py's APScheduler 4 side (workloads D and E), run in a virtualenv of its own.

APScheduler 4.0.0a6 with its PostgreSQL data store (``SQLAlchemyDataStore`` on asyncpg) and
``AsyncpgEventBroker``: its pins (APScheduler 4, ``anyio==4.13.0``, whose 4.14+ makes the asyncpg
event broker drop notifications) conflict with the project's APScheduler 3, so bench/peers.py
creates that virtualenv on first use and runs this script in it. It imports nothing of
discord-actor. The server's URL comes in ``BENCH_PEERS_DATABASE_URL``; the result goes to
``--out`` as JSON, as bench/peers.py's other tracked children write it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tracked_common import BURST_DELAY, BurstRecorder, analyze, time_adds

URL_ENV = "BENCH_PEERS_DATABASE_URL"
RESULT_EXPIRATION = timedelta(hours=1)  # 0 by default: no job result would be kept
PREFILL_CALLERS = 20  # add_schedule has no batch form: the pending set is added concurrently
PREFILL_RATE = 150.0  # adds/s assumed when placing the burst's slot after its own adds

RECORDER: BurstRecorder | None = None


async def noop(key: str) -> None:
    """The job: stored by reference (``__main__:noop``), run by this process's scheduler."""
    assert RECORDER is not None
    RECORDER.call(key)


def sqlalchemy_url(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(scheme="postgresql+asyncpg").geturl()


async def child(phase: str, params: dict[str, Any], url: str) -> dict[str, Any]:
    global RECORDER
    from apscheduler import AsyncScheduler, ConflictPolicy
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from apscheduler.eventbrokers.asyncpg import AsyncpgEventBroker
    from apscheduler.triggers.date import DateTrigger
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(sqlalchemy_url(url), pool_size=PREFILL_CALLERS + 4)
    scheduler = AsyncScheduler(
        SQLAlchemyDataStore(engine), AsyncpgEventBroker.from_async_sqla_engine(engine),
        max_concurrent_jobs=params.get("workers", 32))
    RECORDER = BurstRecorder(params["n"])

    async def add(key: str, at: datetime) -> None:
        await scheduler.add_schedule(
            noop, DateTrigger(at), id=key, args=[key],
            job_result_expiration_time=RESULT_EXPIRATION,
            conflict_policy=ConflictPolicy.exception)

    async def prefill(keys: list[str], at: datetime) -> None:
        async def caller(c: int) -> None:
            for i in range(c, len(keys), PREFILL_CALLERS):
                await add(keys[i], at)

        await asyncio.gather(*(caller(c) for c in range(PREFILL_CALLERS)))

    async with scheduler:
        if phase == "adds":
            later = datetime.now(UTC) + timedelta(hours=3)
            await prefill([f"p:{i}" for i in range(params["pending"])], later)
            await analyze(url)
            return await time_adds(lambda key: add(key, later), params["n"], params["callers"])
        n = params["n"]
        slot = time.time() + BURST_DELAY + n / PREFILL_RATE
        await prefill([f"b:{i}" for i in range(n)], datetime.fromtimestamp(slot, UTC))
        added = time.time()
        await analyze(url)
        await scheduler.start_in_background()
        result = await RECORDER.wait(slot, params["limit"])
        result["added_before_slot_s"] = slot - added
        await scheduler.stop()
    await engine.dispose()
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--phase", choices=("adds", "burst"), required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    result = asyncio.run(child(args.phase, json.loads(args.params), os.environ[URL_ENV]))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
