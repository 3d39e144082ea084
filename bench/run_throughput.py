"""No-op runs per second through the real runtime against the ceiling of its own SQL.

Runtime: M no-op actors (each increments a counter in ``ctx.state``), interval 1 s with
``catch_up = "all"``, registered at T0; then a fresh ``Runtime`` starts its background loops on a
fake clock at T0 + (K - 1) s, so every actor has K due slots, and the scheduler loop works through
all K * M of them (claim, run, state write, finish), as after a restart. The time includes
``Runtime.start()`` (register, reconcile, sync: a few ms).

Ceiling (the issue's): the same SQL without the runtime, at the same concurrency: M workers on
the same pool, each owning one task, call ``Store.runs.claim`` for its next slot and
``Store.runs.finish`` with the new state, K times (2 statements per run).

Batched ceiling (for reference): the runtime's own pattern with nothing else: one
``Store.runs.claim`` for every task that is free, a ``Store.runs.finish`` per run, a new claim as
soon as runs finish.
The runtime claims in batches too, so this is the fairer yardstick of its own overhead.

Every measurement gets a fresh schema on the same server and a pool with the same settings; the
sides alternate (the order rotates each round) and medians are compared. The target is
runtime >= 75% of the ceiling. ``--profile N`` adds a runtime round under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from common import bench_database, machine_line, median, other_schema, quiet_platforms, spread

from discord_actor import Actor, RunContext
from discord_actor.clock import FakeClock
from discord_actor.config import ScheduleConfig
from discord_actor.db import Database
from discord_actor.db.store import ClaimedRun, ClaimRequest, Finished, Outcome, Store
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import actor_config, load, make_config

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=1)


class Noop(Actor):
    """Does nothing but count its runs in its durable state."""

    async def run(self, ctx: RunContext) -> None:
        ctx.state["n"] = ctx.state.get("n", 0) + 1


@dataclass
class Measurement:
    runs: int
    seconds: float
    python_cpu: float  # CPU seconds of this Python process during the measurement
    postgres_cpu: float | None  # CPU seconds of local postgres processes (None: not found)
    statements: Counter[str]  # Store calls made during the measurement, by method

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


def postgres_cpu_seconds() -> float | None:
    """Total CPU time of the local PostgreSQL processes (the embedded server runs as another
    user, so this process's own CPU time does not include it)."""
    total, found = 0.0, False
    for p in psutil.process_iter(["name", "cpu_times"]):
        name, times = p.info["name"] or "", p.info["cpu_times"]
        if name.startswith("postgres") and times is not None:
            total += times.user + times.system
            found = True
    return total if found else None


HOT_METHODS = {
    "runs": ("claim", "finish", "finish_many", "due_window", "views", "checkpoint"),
    "instances": ("heartbeat", "live", "recover_abandoned"),
}


def count_statements(store: Store) -> Counter[str]:
    """Count the Store calls (each is one statement, plus the pool's reset on release)."""
    counts: Counter[str] = Counter()
    for part_name, methods in HOT_METHODS.items():
        part = getattr(store, part_name)
        for method in methods:
            original = getattr(part, method)

            def wrapper(*args: Any, _m: str = method, _f: Any = original) -> Any:
                counts[_m] += 1
                return _f(*args)

            setattr(part, method, wrapper)
    return counts


async def measure(
    body: Callable[[], Coroutine[Any, Any, int]], counts: Counter[str]
) -> Measurement:
    before = Counter(counts)
    pg0, cpu0, t0 = postgres_cpu_seconds(), time.process_time(), time.perf_counter()
    runs = await body()
    t1, cpu1, pg1 = time.perf_counter(), time.process_time(), postgres_cpu_seconds()
    pg = None if pg0 is None or pg1 is None else pg1 - pg0
    return Measurement(runs, t1 - t0, cpu1 - cpu0, pg, counts - before)


async def round_database(base: Database, name: str) -> Database:
    """A fresh schema and pool for one round."""
    return await other_schema(base, name)


async def warm_pool(database: Database) -> None:
    """Open every connection of the pool before timing, so neither side pays for connecting."""
    size = database.config.max_pool_size
    conns = [await database.pool.acquire() for _ in range(size)]
    for conn in conns:
        await conn.execute("SELECT 1")
        await database.pool.release(conn)


def bench_config(database: Database, actors: int) -> Any:
    schedule = ScheduleConfig(type="interval", timezone="UTC", seconds=1.0, catch_up="all")
    cfgs = [actor_config(f"noop{i:03d}", schedule=schedule, platform="none") for i in range(actors)]
    return make_config(database.config, cfgs, max_concurrent_runs=actors)


async def register_tasks(database: Database, config: Any) -> None:
    """Create the task rows the way the runtime does, with the first slot at T0."""
    loaded = {c.name: load(Noop, c) for c in config.actors}
    rt = Runtime(config, database, loaded, clock=FakeClock(T0), platforms=quiet_platforms())
    await rt.start(loops=False)
    await rt.stop()


async def check(database: Database, actors: int, slots: int) -> None:
    s = database.schema
    done = await database.pool.fetchval(f"SELECT count(*) FROM {s}.runs WHERE status = 'succeeded'")
    states = await database.pool.fetch(f"SELECT (state->>'n')::int AS n FROM {s}.tasks")
    if done != actors * slots or any(r["n"] != slots for r in states):
        raise SystemExit(f"bench bug: {done} succeeded runs, states {[r['n'] for r in states]}")


async def runtime_round(
    base: Database, name: str, actors: int, slots: int, profiler: cProfile.Profile | None = None
) -> Measurement:
    database = await round_database(base, name)
    try:
        config = bench_config(database, actors)
        await register_tasks(database, config)
        loaded = {c.name: load(Noop, c) for c in config.actors}
        clock = FakeClock(T0 + (slots - 1) * STEP)
        rt = Runtime(config, database, loaded, clock=clock, platforms=quiet_platforms())
        target = actors * slots
        finished = 0
        all_done = asyncio.Event()
        store_finish_many = rt.store.runs.finish_many

        async def counting_finish(
            outcomes: Sequence[tuple[int, Outcome]],
        ) -> list[Finished | None]:
            nonlocal finished
            result = await store_finish_many(outcomes)
            finished += len(outcomes)
            if finished == target:
                all_done.set()
            return result

        rt.store.runs.finish_many = counting_finish  # type: ignore[method-assign]
        count = count_statements(rt.store)
        await warm_pool(database)

        async def body() -> int:
            if profiler is not None:
                profiler.enable()
            try:
                await rt.start()
                await all_done.wait()
            finally:
                if profiler is not None:
                    profiler.disable()
            return finished

        result = await measure(body, count)
        await rt.stop()
        await check(database, actors, slots)
        return result
    finally:
        await database.close()


async def ceiling_setup(
    base: Database, name: str, actors: int
) -> tuple[Database, Store, str, list[int]]:
    database = await round_database(base, name)
    config = bench_config(database, actors)
    await register_tasks(database, config)
    store = Store(database.pool, database.schema)
    instance_id = f"bench-ceiling:{os.getpid()}"
    await store.instances.register(instance_id, socket.gethostname(), os.getpid(), 30.0)
    task_ids = [r["id"] for r in await database.pool.fetch(
        f"SELECT id FROM {database.schema}.tasks ORDER BY id"
    )]
    await warm_pool(database)
    return database, store, instance_id, task_ids


def slot_request(task_id: int, k: int) -> ClaimRequest:
    """The request the scheduler makes for slot k of a task (interval 1 s from T0)."""
    slot = T0 + k * STEP
    return ClaimRequest(
        task_id=task_id, kind="schedule", expected=slot, attempt=1, scheduled_for=slot,
        trigger="catch_up", new_next_run=slot + STEP, new_due_at=slot + STEP,
    )


async def finish_noop(store: Store, run: ClaimedRun) -> None:
    state = dict(run.state)
    state["n"] = state.get("n", 0) + 1
    await store.runs.finish(
        run.run_id, Outcome(status="succeeded", state_json=json.dumps(state))
    )


async def ceiling_round(base: Database, name: str, actors: int, slots: int) -> Measurement:
    """M workers, each claiming its own task's next slot and finishing it, K times."""
    database, store, instance_id, task_ids = await ceiling_setup(base, name, actors)
    try:
        now = T0 + (slots - 1) * STEP
        count = count_statements(store)

        async def worker(task_id: int) -> int:
            for k in range(slots):
                (run,) = await store.runs.claim(instance_id, [slot_request(task_id, k)], now)
                await finish_noop(store, run)
            return slots

        async def body() -> int:
            return sum(await asyncio.gather(*(worker(t) for t in task_ids)))

        result = await measure(body, count)
        await store.instances.unregister(instance_id)
        await check(database, actors, slots)
        return result
    finally:
        await database.close()


async def batched_round(base: Database, name: str, actors: int, slots: int) -> Measurement:
    """The scheduler's pattern with nothing else: one claim statement for every task that is
    free, a finish per run, a new claim as soon as runs have finished."""
    database, store, instance_id, task_ids = await ceiling_setup(base, name, actors)
    try:
        now = T0 + (slots - 1) * STEP
        count = count_statements(store)

        async def body() -> int:
            target = actors * slots
            free, next_k = list(task_ids), dict.fromkeys(task_ids, 0)
            done = 0
            wake = asyncio.Event()
            running: set[asyncio.Task[None]] = set()

            async def run_one(run: ClaimedRun) -> None:
                nonlocal done
                await finish_noop(store, run)
                done += 1
                free.append(run.task_id)
                wake.set()

            while done < target:
                requests = [slot_request(t, next_k[t]) for t in free if next_k[t] < slots]
                free.clear()
                if requests:
                    for run in await store.runs.claim(instance_id, requests, now):
                        next_k[run.task_id] += 1
                        task = asyncio.create_task(run_one(run))
                        running.add(task)
                        task.add_done_callback(running.discard)
                await wake.wait()
                wake.clear()
            await asyncio.gather(*running)
            return done

        result = await measure(body, count)
        await store.instances.unregister(instance_id)
        await check(database, actors, slots)
        return result
    finally:
        await database.close()


def describe(m: Measurement) -> str:
    pg = "" if m.postgres_cpu is None else f", postgres CPU {m.postgres_cpu / m.seconds:.0%}"
    calls = sum(m.statements.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(m.statements.items()))
    return (f"{m.runs} runs in {m.seconds:.2f} s = {m.rate:,.0f} runs/s"
            f" (python CPU {m.python_cpu / m.seconds:.0%}{pg};"
            f" {calls / m.runs:.2f} statements/run: {detail})")


SIDES = {
    "ceiling": ("ceiling (M workers, Store.runs.claim/finish)", ceiling_round),
    "batched": ("batched ceiling (claim all free at once)", batched_round),
    "runtime": ("runtime (Runtime.start, scheduler loop)", runtime_round),
}


async def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    async with bench_database("bench", max_pool_size=args.pool_size) as base:
        if args.synchronous_commit_off:
            if base.server is None:
                raise SystemExit("--synchronous-commit-off only changes the embedded server")
            name = await base.pool.fetchval("SELECT current_database()")
            await base.pool.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        probe = await round_database(base, "bench_probe")
        commit = await probe.pool.fetchval("SHOW synchronous_commit")
        await probe.close()
        print(f"machine: {await machine_line(base)}")
        print(f"M = {args.actors} actors = concurrency, K = {args.slots} due slots each;"
              f" max_pool_size = {args.pool_size}, max_concurrent_runs = {args.actors};"
              f" synchronous_commit = {commit}; INFO logging"
              f" {'on (to /dev/null)' if args.log else 'off'}")
        # A short warm-up of every path (server caches, imports), not counted.
        for _, run_round in SIDES.values():
            await run_round(base, "bench_warm", args.actors, 3)
        results: dict[str, list[Measurement]] = {side: [] for side in SIDES}
        order = list(SIDES)
        for r in range(args.rounds):
            for side in order[r % 3:] + order[:r % 3]:  # rotate the order between rounds
                label, run_round = SIDES[side]
                m = await run_round(base, f"bench_{side}_{r}", args.actors, args.slots)
                results[side].append(m)
                print(f"round {r + 1} {label}: {describe(m)}")
        rates = {side: median([m.rate for m in ms]) for side, ms in results.items()}
        print()
        for side, ms in results.items():
            cpu = median([m.python_cpu / m.runs * 1e6 for m in ms])
            print(f"{SIDES[side][0]:42s} median {rates[side]:6,.0f} runs/s"
                  f"  (rounds {spread([m.rate for m in ms])}; python CPU {cpu:,.0f} us/run)")
        ratio = rates["runtime"] / rates["ceiling"]
        verdict = "meets" if ratio >= 0.75 else "MISSES"
        print(f"runtime / ceiling         = {ratio:.0%} ({verdict} the >= 75% target)")
        print(f"runtime / batched ceiling = {rates['runtime'] / rates['batched']:.0%}")
        if args.profile:
            profiler = cProfile.Profile()
            m = await runtime_round(base, "bench_profile", args.actors, args.slots, profiler)
            print(f"\nprofiled runtime round (cProfile slows Python down): {describe(m)}")
            for key in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.profile)
                print(out.getvalue())
    print(f"total bench time {time.perf_counter() - started:.1f} s")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", type=int, default=32, help="M: actors = concurrency (32)")
    p.add_argument("--slots", type=int, default=60, help="K: due slots per actor (60)")
    p.add_argument("--rounds", type=int, default=3, help="measurements of each side (3)")
    p.add_argument("--pool-size", type=int, default=10, help="max_pool_size (10, the default)")
    p.add_argument("--log", action="store_true", help="INFO logging as `discord-actor run` does")
    p.add_argument("--synchronous-commit-off", action="store_true",
                   help="embedded server only: commit without waiting for the WAL flush")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="add a cProfile'd runtime round and print its top N functions")
    return p.parse_args(argv)


def log_like_the_cli() -> None:
    """INFO logging to a stream, as `discord-actor run` sets it up; the stream is /dev/null."""
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    if arguments.log:
        log_like_the_cli()
    sys.exit(asyncio.run(main(arguments)))
