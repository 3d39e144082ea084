"""What the tracked peers' children of bench/peers.py share: timing single adds, recording a
burst. Imports nothing of discord-actor, so that a peer in a virtualenv of its own (APScheduler 4,
bench/peer_apscheduler4.py) uses it too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

BURST_DELAY = 10.0  # E: seconds from the last enqueue to the slot (the side is started in it)
PREFILL_CHUNK = 5_000


async def time_adds(add: Callable[[str], Awaitable[object]], n: int,
                    callers: int) -> dict[str, Any]:
    """``n`` single adds one after another, then ``n`` more from ``callers`` concurrent callers;
    each add's latency and each way's wall time, in seconds."""
    seq: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await add(f"seq:{i}")
        seq.append(time.perf_counter() - t)
    seq_wall = time.perf_counter() - t0
    conc: list[float] = []

    async def caller(c: int) -> None:
        for i in range(c, n, callers):
            t = time.perf_counter()
            await add(f"conc:{i}")
            conc.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    return {"seq": seq, "seq_wall": seq_wall, "conc": conc,
            "conc_wall": time.perf_counter() - t0}


class BurstRecorder:
    """A peer's handler calls ``call(key)``: start times, calls per key, done once all ran."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.starts: list[float] = []
        self.calls: dict[str, int] = {}
        self.done = asyncio.Event()
        self.cpu_at_done = 0.0

    def call(self, key: str) -> None:
        self.starts.append(time.time())
        self.calls[key] = self.calls.get(key, 0) + 1
        if len(self.calls) >= self.n and not self.done.is_set():
            self.cpu_at_done = time.process_time()
            self.done.set()

    async def wait(self, slot: float, limit: float) -> dict[str, Any]:
        """Until every key ran (then a second more, for duplicates); CPU from the slot on."""
        await asyncio.sleep(max(0.0, slot - time.time()))
        cpu0 = time.process_time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), limit)
        cpu = (self.cpu_at_done if self.done.is_set() else time.process_time()) - cpu0
        await asyncio.sleep(1.0)
        return {"starts": self.starts, "slot": slot, "cpu": cpu, "ran": len(self.calls),
                "duplicates": sum(c - 1 for c in self.calls.values())}


async def analyze(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
