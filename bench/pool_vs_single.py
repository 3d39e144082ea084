"""The shared pool against one connection behind a lock, for 16 concurrent actors.

Each of 16 actors repeatedly runs a query that takes 2 ms on the server
(``SELECT pg_sleep(0.002)``) and then saves its state; one "op" is that pair.

- pool: real runs of 16 actors through the runtime: the query through ``ctx.db()`` (the shared
  pool, within each actor's ``max_connections`` share), the save through ``ctx.checkpoint()``.
  Pool settings are the defaults of ``[database]`` (``max_pool_size = 10``, one connection kept
  for the runtime), ``max_connections = 1`` per actor.
- single: 16 coroutines share one asyncpg connection guarded by an ``asyncio.Lock`` (taken per
  statement) and issue the same two statements (the save is ``Store.runs.checkpoint``'s SQL).

All 16 start together and count the ops that complete within a fixed window. The two sides
alternate for a few rounds on the same server; medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from common import bench_database, machine_line, median, quiet_platforms, spread

from discord_actor import Actor, RunContext
from discord_actor.config import ScheduleConfig
from discord_actor.db import Database
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import actor_config, load, make_config

QUERY = "SELECT pg_sleep(0.002)"


@dataclass
class Window:
    """All workers start together at ``go`` and count what completes before ``deadline``."""

    workers: int
    seconds: float
    ready: int = 0
    finished: int = 0
    ops: int = 0
    deadline: float = 0.0
    go: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.ready += 1
        if self.ready == self.workers:
            self.deadline = time.perf_counter() + self.seconds
            self.go.set()
        await self.go.wait()

    def open(self) -> bool:
        return time.perf_counter() < self.deadline

    def count(self) -> None:
        if self.open():
            self.ops += 1

    def finish(self) -> None:
        self.finished += 1
        if self.finished == self.workers:
            self.done.set()


class Worker(Actor):
    """Query, save state, repeat until the window closes."""

    window: Window  # set per round

    async def run(self, ctx: RunContext) -> None:
        window = type(self).window
        await window.start()
        while window.open():
            async with ctx.db() as conn:
                await conn.execute(QUERY)
            ctx.state["n"] = ctx.state.get("n", 0) + 1
            await ctx.checkpoint()
            window.count()
        window.finish()


def config_for(database: Database, actors: int) -> Any:
    schedule = ScheduleConfig(type="immediate", timezone="UTC")
    cfgs = [actor_config(f"worker{i:02d}", schedule=schedule, platform="none")
            for i in range(actors)]
    return make_config(database.config, cfgs, max_concurrent_runs=actors)


async def pool_round(database: Database, actors: int, seconds: float) -> float:
    """One start of the runtime: each immediate actor runs once, for the whole window."""
    window = Window(actors, seconds)
    cls = type("PoolWorker", (Worker,), {"window": window})
    config = config_for(database, actors)
    loaded = {c.name: load(cls, c) for c in config.actors}
    runtime = Runtime(config, database, loaded, platforms=quiet_platforms())
    await runtime.start()
    try:
        async with asyncio.timeout(seconds + 30):
            await window.done.wait()
            await runtime.wait_idle()  # the runs are recorded
    finally:
        await runtime.stop()
    failed = await database.pool.fetchval(
        f"SELECT count(*) FROM {database.schema}.runs WHERE status <> 'succeeded'"
    )
    if failed:
        raise SystemExit(f"bench bug: {failed} run(s) did not succeed")
    return window.ops / seconds


async def single_round(database: Database, actors: int, seconds: float) -> float:
    """The same work over one connection shared under a lock."""
    window = Window(actors, seconds)
    conn = await asyncpg.connect(database.url)
    lock = asyncio.Lock()
    save = f"UPDATE {database.schema}.tasks SET state = $2::jsonb, updated_at = now() WHERE id = $1"
    task_ids = [r["id"] for r in await conn.fetch(
        f"SELECT id FROM {database.schema}.tasks ORDER BY id LIMIT $1", actors
    )]

    async def worker(task_id: int) -> None:
        state: dict[str, int] = {}
        await window.start()
        while window.open():
            async with lock:
                await conn.execute(QUERY)
            state["n"] = state.get("n", 0) + 1
            async with lock:
                await conn.execute(save, task_id, json.dumps(state))
            window.count()
        window.finish()

    try:
        await asyncio.gather(*(worker(t) for t in task_ids))
    finally:
        await conn.close()
    return window.ops / seconds


async def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    async with bench_database("bench_pool") as database:
        print(f"machine: {await machine_line(database)}")
        cfg = database.config
        print(f"{args.actors} actors, each op = `{QUERY}` + a state save;"
              f" window {args.seconds:g} s;"
              f" pool: max_pool_size = {cfg.max_pool_size} (one kept for the runtime),"
              f" max_connections = 1 per actor;"
              f" synchronous_commit = {await database.pool.fetchval('SHOW synchronous_commit')}")
        await pool_round(database, args.actors, 0.5)  # warm-up; also creates the task rows
        await single_round(database, args.actors, 0.5)
        pool: list[float] = []
        single: list[float] = []
        for r in range(args.rounds):
            for side in (("pool", "single") if r % 2 == 0 else ("single", "pool")):
                if side == "pool":
                    pool.append(await pool_round(database, args.actors, args.seconds))
                    print(f"round {r + 1} shared pool (ctx.db, real runs): {pool[-1]:7,.0f} ops/s")
                else:
                    single.append(await single_round(database, args.actors, args.seconds))
                    print(f"round {r + 1} one connection + lock:        {single[-1]:7,.0f} ops/s")
        p, s = median(pool), median(single)
        print()
        print(f"shared pool:           median {p:7,.0f} ops/s (rounds {spread(pool)})")
        print(f"one connection + lock: median {s:7,.0f} ops/s (rounds {spread(single)})")
        print(f"pool / single = {p / s:.1f}x")
    print(f"total bench time {time.perf_counter() - started:.1f} s")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", type=int, default=16, help="concurrent actors (16)")
    p.add_argument("--seconds", type=float, default=3.0, help="measuring window per round (3)")
    p.add_argument("--rounds", type=int, default=3, help="measurements of each side (3)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
