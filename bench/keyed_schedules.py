"""Keyed schedules at 100,000: the targets of dynamic schedules, beside configured actors.

Every side runs ``discord-actor run --config actor_server.toml`` as a real subprocess (INFO log
to a file, every setting at its default) on the embedded PostgreSQL under a temporary directory
(or ``DATABASE_URL``), which this script starts and shares with its children. The actor is one
no-op module: each run counts its runs in its state and keeps its own lateness (``time.time()``
at the start of the actor's code minus ``ctx.scheduled_for``). Keyed schedules are written
from this process through the public API (``Schedules.add`` / ``add_many``), as bot code would.

Workloads (and the configured-actor side each is set beside):

1. *Due among many*: N pending ``Once`` schedules (100,000) spread over the 24 hours after
   the bench, plus 1,000 ``Once`` due within one minute, one process. Figures: runs of the
   1,000 (each must run exactly once, counted from the runs table and by the actor itself),
   runs of the others (0), start lateness p50 / p99 / max in the actor and from
   ``runs.started_at``, the process's CPU over the minute, PostgreSQL's CPU, peak RSS
   (``VmHWM``). Beside it: 1,000 configured actors (``type = "once"``) at the same times.
2. *Adding*: ``Schedules.add`` one at a time (adds per second) on an empty actor and at the
   N-th pending; ``add_many`` in chunks of 10,000 from 0 to N pending (seconds per chunk).
3. *Restart*: with the N pending schedules, a ``Once`` due at the restart: from spawning the
   process (the embedded server started by it, as after a real restart) to ``started_at`` of
   that run; then the process's and PostgreSQL's CPU over a window with nothing due, and its
   peak RSS. Beside it: the restart of workload 1's configured actors with one due.
4. *Two processes*: 10,000 ``Once`` due over one minute, shared by two ``discord-actor run``
   processes: duplicates (runs beyond one per schedule) and missed (none by the end), each
   process's share, lateness. Beside it: 10,000 configured ``once`` actors.
5. *Adds at N pending, limits on*: N pending ``Once`` (100,000, each with an owner and a
   payload, through ``add_many``), the actor's ``max_schedules`` and ``max_schedules_per_owner``
   set; then ``Schedules.add`` of a ``Once`` with a payload and a new owner each, one after
   another, then from 20 concurrent callers (a pool of 20 connections, one per caller): adds/s
   and latency p50 / p99 / max of each. No ``discord-actor run`` process: the cost of an add.

Run from the repository root: ``.venv/bin/python bench/keyed_schedules.py`` (about 8 minutes),
``--quick`` for a short try (10,000 pending, 20 s windows), ``--workloads 1,2,3`` to select
(2 and 3 use what 1 set up, so they imply it), ``--no-configured`` for the keyed sides only;
``--workloads 5`` alone measures adds (about 30 s; with ``--quick``, at 10,000 pending for 3 s
each, about 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from common import machine_line
from keyed_project import ACTOR, MAX_PER_OWNER, MAX_SCHEDULES, SCHEMA, write_project
from peers import (
    Bench,
    Child,
    cpu_seconds,
    fmt,
    percentiles,
    run_orchestration,
    shown_command,
    vm_hwm_mb,
)

from discord_actor import NewSchedule, Once, Schedules
from discord_actor.config import Config, DatabaseConfig, load_config
from discord_actor.db import migrate, open_database
from discord_actor.db.store import Store

START_DELAY = 6.0  # seconds from writing the due work to its first slot (the process starts)
GRACE = 10.0  # seconds after the last slot before counting
CHUNK = 10_000  # add_many chunk
SINGLE_ADDS = 300  # Schedules.add calls timed one after another
ADD_CALLERS = 20  # workload 5: concurrent callers
ADD_SECONDS = 10.0  # workload 5: each of its two parts stops after this long ...
ADD_MAX = 20_000  # ... or after this many adds

def spread(start: datetime, seconds: float, n: int) -> list[datetime]:
    return [start + timedelta(seconds=seconds * i / n) for i in range(n)]


@dataclass
class Row:
    """One side of a workload, as printed."""

    side: str
    expected: int = 0
    ran_once: int = 0
    missed: int = 0
    duplicates: int = 0
    strays: int = 0  # runs of schedules that were not due
    late_actor: tuple[float, float, float] | None = None
    late_db: tuple[float, float, float] | None = None
    cpu_pct: float | None = None  # of one core, over the window
    pg_cpu_pct: float | None = None
    rss_mb: float | None = None
    shares: list[int] = field(default_factory=list)  # runs per process


# What a side's due work is: a keyed schedule with a "due:" key, or a configured once actor.
DUE_SQL = "((t.key IS NULL AND starts_with(t.actor, 'once')) OR starts_with(t.key, 'due:'))"


async def count_runs(pool: asyncpg.Pool, row: Row) -> None:
    """Fill ``row`` from the runs table and the due schedules' states."""
    tasks, runs = f"{SCHEMA}.tasks", f"{SCHEMA}.runs"
    per_task = await pool.fetch(
        f"SELECT count(r.id) AS n, (t.state->>'runs')::int AS counted,"
        f" (t.state->>'late_ms')::float8 AS late_actor,"
        f" min(extract(epoch FROM r.started_at - r.scheduled_for) * 1000)::float8 AS late_db"
        f" FROM {tasks} t LEFT JOIN {runs} r ON r.task_id = t.id AND r.status <> 'skipped'"
        f" WHERE {DUE_SQL} GROUP BY t.id"
    )
    row.ran_once = sum(1 for r in per_task if r["n"] == 1 and r["counted"] == 1)
    row.missed = sum(1 for r in per_task if r["n"] == 0)
    row.duplicates = sum(max(r["n"], r["counted"] or 0) - 1 for r in per_task if r["n"] > 1
                         or (r["counted"] or 0) > 1)
    row.late_actor = percentiles([r["late_actor"] for r in per_task
                                  if r["late_actor"] is not None])
    row.late_db = percentiles([r["late_db"] for r in per_task if r["late_db"] is not None])
    row.strays = await pool.fetchval(
        f"SELECT count(*) FROM {runs} r JOIN {tasks} t ON t.id = r.task_id WHERE NOT {DUE_SQL}"
    )
    shares = await pool.fetch(
        f"SELECT r.instance_id, count(*) AS n FROM {runs} r JOIN {tasks} t ON t.id = r.task_id"
        f" WHERE {DUE_SQL} GROUP BY 1 ORDER BY 2 DESC"
    )
    row.shares = [s["n"] for s in shares]


class KeyedBench(Bench):
    """peers.Bench (spawning, stopping, sampling CPU) plus this script's workloads."""

    def __init__(self, tmp: Path, database: Any, env: dict[str, str],
                 args: argparse.Namespace) -> None:
        super().__init__(tmp, database, env)
        self.args = args
        self.log = tmp / "discord-actor.log"

    async def fresh_schema(self) -> None:
        await self.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        async with self.pool.acquire() as conn:
            await migrate(conn, SCHEMA)

    def schedules(self, config: Config) -> Schedules:
        return Schedules(Store(self.pool, SCHEMA), config)

    async def run(self, name: str, config: Path) -> Child:
        return await self.spawn(name, self.run_command(config), self.log)

    async def measure_then_stop(
        self, children: list[Child], row: Row, first: datetime, seconds: float
    ) -> None:
        try:
            await self.measure(children, row, first, seconds)
        finally:
            for child in children:
                await self.stop(child)

    async def measure(self, children: list[Child], row: Row, first: datetime,
                      seconds: float) -> None:
        """Sleep through the due minute sampling CPU; count once the grace has passed."""
        start = first.timestamp()
        for child in children:
            await self.sleep_until(start, child)
        cpu0 = sum(cpu_seconds(c.pid) for c in children)
        pg0, t0 = self.postgres_cpu(), time.time()
        for child in children:
            await self.sleep_until(start + seconds, child)
        cpu1 = sum(cpu_seconds(c.pid) for c in children)
        pg1, t1 = self.postgres_cpu(), time.time()
        deadline = start + seconds + GRACE
        while time.time() < deadline:  # leave early once every due run has finished
            for child in children:
                child.check()
            done = await self.pool.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.runs r JOIN {SCHEMA}.tasks t"
                f" ON t.id = r.task_id WHERE {DUE_SQL} AND r.status <> 'running'")
            if done >= row.expected:
                await asyncio.sleep(1.0)  # a duplicate would show up now
                break
            await asyncio.sleep(0.5)
        row.cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        if pg0 is not None and pg1 is not None:
            row.pg_cpu_pct = 100 * (pg1 - pg0) / (t1 - t0)
        rss = [vm_hwm_mb(c.pid) for c in children]
        row.rss_mb = max((r for r in rss if r is not None), default=None)
        await count_runs(self.pool, row)

    # workload 1 (and 2, which fills the pending set)

    async def configured_due(self, due: int, seconds: float, processes: int) -> Row:
        await self.fresh_schema()
        first = datetime.now(UTC) + timedelta(seconds=START_DELAY + due / 2000)
        config = write_project(self.tmp, spread(first, seconds, due))
        row = Row(f"{due:,} configured once actors", expected=due)
        children = [await self.run(f"discord-actor {i + 1}", config) for i in range(processes)]
        await self.measure_then_stop(children, row, first, seconds)
        return row

    async def keyed_pending(self, config: Config, pending: int) -> list[str]:
        """Fill the pending set: single adds, add_many chunks, single adds; returns lines."""
        schedules = self.schedules(config)
        later = datetime.now(UTC) + timedelta(hours=2)  # after the bench: nothing due in it
        at = spread(later, 86400, pending)
        single = min(SINGLE_ADDS, pending // 4)
        lines = []

        async def adds(lo: int, hi: int) -> float:
            t0 = time.perf_counter()
            for i in range(lo, hi):
                await schedules.add(ACTOR, key=f"p:{i}", schedule=Once(at=at[i]))
            return (hi - lo) / (time.perf_counter() - t0)

        rate = await adds(0, single)
        lines.append(f"add, one at a time, 0 pending: {rate:,.0f} adds/s ({single} adds)")
        chunks = []
        lo = single
        while lo < pending - single:
            hi = min(lo + CHUNK, pending - single)
            items = [NewSchedule(f"p:{i}", Once(at=at[i]), payload={"n": i},
                                 owner=f"user:{i % 1000}") for i in range(lo, hi)]
            t0 = time.perf_counter()
            await schedules.add_many(ACTOR, items)
            chunks.append((lo, hi - lo, time.perf_counter() - t0))
            lo = hi
        full = [c for c in chunks if c[1] == CHUNK] or chunks
        lines.append(
            f"add_many of {CHUNK:,} (payload and owner each): first {full[0][2]:.2f} s"
            f" ({full[0][0]:,} pending before), median {statistics.median(c[2] for c in full):.2f}"
            f" s, last {full[-1][2]:.2f} s ({full[-1][0]:,} pending before),"
            f" {len(chunks)} chunk(s)")
        rate = await adds(pending - single, pending)
        lines.append(f"add, one at a time, {pending - single:,} pending: {rate:,.0f} adds/s"
                     f" ({single} adds)")
        return lines

    # workload 5

    async def adds_at_pending(self, pending: int, seconds: float) -> list[str]:
        """``pending`` Once with owners (``add_many``), limits on; then single adds one after
        another and from ADD_CALLERS concurrent callers, each for ``seconds`` or ADD_MAX adds."""
        await self.fresh_schema()
        config = load_config(write_project(self.tmp, [], per_owner=MAX_PER_OWNER))
        later = datetime.now(UTC) + timedelta(hours=2)  # after the bench: nothing due in it
        fill = self.schedules(config)
        t0 = time.perf_counter()
        for lo in range(0, pending, CHUNK):
            await fill.add_many(ACTOR, [
                NewSchedule(f"p:{i}", Once(at=later + timedelta(seconds=86400 * i / pending)),
                            payload={"n": i}, owner=f"user:{i % 1000}")
                for i in range(lo, min(pending, lo + CHUNK))])
        filled = time.perf_counter() - t0
        await self.pool.execute(f"ANALYZE {SCHEMA}.tasks")
        database = await open_database(replace(
            self.database.config, url=self.database.url, min_pool_size=ADD_CALLERS,
            max_pool_size=ADD_CALLERS), migrate=False)
        lines = [f"filled {pending:,} pending (add_many of {CHUNK:,}, owner and payload each)"
                 f" in {filled:.1f} s; max_schedules = {MAX_SCHEDULES:,},"
                 f" max_schedules_per_owner = {MAX_PER_OWNER:,}"]
        print(lines[-1], flush=True)
        try:
            schedules = Schedules(Store(database.pool, SCHEMA), config)
            counter = iter(range(10**9))

            async def caller(deadline: float, latencies: list[float]) -> None:
                while time.perf_counter() < deadline and len(latencies) < ADD_MAX:
                    i = next(counter)
                    at = later + timedelta(seconds=i % 86400)
                    t = time.perf_counter()
                    await schedules.add(ACTOR, key=f"new:{i}", schedule=Once(at=at),
                                        payload={"text": "stand up"}, owner=f"new:{i}")
                    latencies.append(time.perf_counter() - t)

            for callers in (1, ADD_CALLERS):
                latencies: list[float] = []
                start = time.perf_counter()
                await asyncio.gather(*(caller(start + seconds, latencies)
                                       for _ in range(callers)))
                elapsed = time.perf_counter() - start
                p50, p99, top = percentiles([v * 1000 for v in latencies]) or (0, 0, 0)
                who = "one caller, one after another" if callers == 1 else (
                    f"{callers} concurrent callers")
                lines.append(f"add at {pending:,} pending, {who}: {len(latencies) / elapsed:,.0f}"
                             f" adds/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {top:.1f} ms"
                             f" ({len(latencies):,} adds in {elapsed:.1f} s)")
                print(lines[-1], flush=True)
            stored = await self.pool.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.tasks WHERE key IS NOT NULL")
            lines.append(f"keyed rows at the end: {stored:,}")
            if await self.pool.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.keyed_counts"):
                lines.append(await self.trigger_cost())
        finally:
            await database.close()
        return lines

    async def trigger_cost(self, rows: int = 2000) -> str:
        """Server time of the two updates a keyed ``Once`` run makes of its row (the claim:
        slot gone, a run in flight; the finish: none in flight, so no longer pending), with the
        counters' triggers and without them, in a transaction rolled back each time."""
        loop = f"""DO $$ DECLARE r record; BEGIN
            FOR r IN SELECT id FROM {SCHEMA}.tasks WHERE starts_with(key, 'p:')
                     ORDER BY id LIMIT {rows} LOOP
                UPDATE {SCHEMA}.tasks SET running = running + 1, next_run = NULL,
                    due_at = NULL WHERE id = r.id;
                UPDATE {SCHEMA}.tasks SET running = running - 1, last_status = 'succeeded'
                    WHERE id = r.id;
            END LOOP; END $$"""
        took = {}
        for triggers in (True, False, True, False):
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    if not triggers:
                        await conn.execute(f"ALTER TABLE {SCHEMA}.tasks DISABLE TRIGGER USER;"
                                           f" ALTER TABLE {SCHEMA}.retries DISABLE TRIGGER USER")
                    t0 = time.perf_counter()
                    await conn.execute(loop)
                    took[triggers] = min(took.get(triggers, 1e9),
                                         (time.perf_counter() - t0) / rows * 1e6)
                finally:
                    await tx.rollback()
        return (f"a keyed Once run's claim and finish of its row ({rows:,} rows, server time):"
                f" {took[True]:.1f} us with the counters' triggers, {took[False]:.1f} us"
                f" without ({took[True] - took[False]:+.1f} us a run)")

    async def keyed_due(self, due: int, seconds: float, pending: int) -> tuple[Row, list[str]]:
        await self.fresh_schema()
        path = write_project(self.tmp, [])
        config = load_config(path)
        lines = await self.keyed_pending(config, pending) if pending else []
        first = datetime.now(UTC) + timedelta(seconds=START_DELAY)
        items = [NewSchedule(f"due:{i:05d}", Once(at=at))
                 for i, at in enumerate(spread(first, seconds, due))]
        await self.schedules(config).add_many(ACTOR, items)
        row = Row(f"{due:,} keyed Once among {pending:,} pending", expected=due)
        child = await self.run("discord-actor", path)
        try:
            await self.measure([child], row, first, seconds)
        finally:
            await self.stop(child)
        return row, lines

    async def keyed_two(self, due: int, seconds: float) -> Row:
        await self.fresh_schema()
        path = write_project(self.tmp, [])
        first = datetime.now(UTC) + timedelta(seconds=START_DELAY)
        items = [NewSchedule(f"due:{i:05d}", Once(at=at))
                 for i, at in enumerate(spread(first, seconds, due))]
        await self.schedules(load_config(path)).add_many(ACTOR, items)
        row = Row(f"{due:,} keyed Once", expected=due)
        children = [await self.run(f"discord-actor {i + 1}", path) for i in range(2)]
        await self.measure_then_stop(children, row, first, seconds)
        return row

    # workload 3

    async def configured_due_now(self) -> int:
        """The first configured once actor (which has run) gets a slot now; its task id."""
        task_id: int = await self.pool.fetchval(
            f"UPDATE {SCHEMA}.tasks SET next_run = now(), due_at = now()"
            " WHERE actor = 'once00000' AND key IS NULL RETURNING id")
        return task_id

    async def keyed_due_now(self) -> int:
        """A new keyed Once, due now (while no process runs); its task id."""
        config = load_config(self.tmp / "actor_server.toml")
        await self.schedules(config).add(ACTOR, key="restart", schedule=Once(
            at=datetime.now(UTC)))
        task_id: int = await self.pool.fetchval(
            f"SELECT id FROM {SCHEMA}.tasks WHERE actor = $1 AND key = 'restart'", ACTOR)
        return task_id

    async def restart(self, label: str, make_due: Callable[[], Awaitable[int]],
                      idle: float) -> list[str]:
        """Make one schedule due now, restart, time its first run; then idle CPU and peak
        RSS."""
        path = self.tmp / "actor_server.toml"
        stopped = await self.pool.fetchval("SELECT now()")
        task_id = await make_due()
        child, first_run = await self.restart_and_time(
            f"discord-actor (restart, {label})", path, self.log, task_id, stopped, SCHEMA)
        try:
            await self.sleep_until(time.time() + 2.0, child)
            runs_sql = f"SELECT count(*) FROM {SCHEMA}.runs"
            runs0 = await self.count(runs_sql)
            cpu0, pg0, t0 = cpu_seconds(child.pid), self.postgres_cpu(), time.time()
            await self.sleep_until(t0 + idle, child)
            cpu1, pg1, t1 = cpu_seconds(child.pid), self.postgres_cpu(), time.time()
            runs1 = await self.count(runs_sql)
            rss = vm_hwm_mb(child.pid)
        finally:
            await self.stop(child)
        pg = (f", PostgreSQL {100 * (pg1 - pg0) / (t1 - t0):.2f} %"
              if pg0 is not None and pg1 is not None else "")
        quiet = "" if runs1 == runs0 else f" ({runs1 - runs0} runs in the idle window)"
        return [
            f"{label}: restart to first run {first_run:.2f} s (spawn of `discord-actor run`"
            f" to started_at of a run due at start; {self.database_origin()})",
            f"{label}: idle CPU over {idle:g} s with nothing due: runtime"
            f" {100 * (cpu1 - cpu0) / (t1 - t0):.2f} % of a core{pg}; peak RSS"
            f" {fmt(rss, 1)} MB{quiet}",
        ]


# -- output -----------------------------------------------------------------------------------


def late(p: tuple[float, float, float] | None) -> str:
    return "—" if p is None else " / ".join(f"{v:,.1f}" for v in p)


def print_table(rows: list[Row], two: bool = False) -> None:
    header = ["side", "ran once", "missed", "dupl.", "stray runs", "late in actor p50/p99/max ms",
              "late started_at p50/p99/max ms", "CPU %", "PG CPU %", "peak RSS MB"]
    if two:
        header.append("runs per process")
    body = []
    for r in rows:
        cells = [r.side, f"{r.ran_once:,} of {r.expected:,}", f"{r.missed:,}", f"{r.duplicates:,}",
                 f"{r.strays:,}", late(r.late_actor), late(r.late_db), fmt(r.cpu_pct, 1),
                 fmt(r.pg_cpu_pct, 1), fmt(r.rss_mb, 1)]
        if two:
            cells.append(" + ".join(f"{n:,}" for n in r.shares))
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(n) if i == 0 else c.rjust(n)
                                 for i, (c, n) in enumerate(zip(cells, widths, strict=True))) + " |"

    print(line(header))
    print("|" + "|".join("-" * (n + 2) if i == 0 else "-" * (n + 1) + ":"
                         for i, n in enumerate(widths)) + "|")
    for b in body:
        print(line(b))
    sys.stdout.flush()


NOTES = """\
ran once: due schedules with exactly one run in the runs table and a run count of 1 in their
state; missed: none by {grace:g} s after the last slot; dupl.: runs beyond one; stray runs: runs
of schedules that were not due; late in actor: time.time() at the start of the actor's code minus
ctx.scheduled_for; late started_at: runs.started_at (the database's clock) minus the slot; CPU:
the discord-actor process(es), user + sys, over the due window, in % of one core; PG CPU: the
PostgreSQL server's; peak RSS: VmHWM of the process (the larger of two)."""


async def orchestrate(args: argparse.Namespace) -> int:
    quick = args.quick
    pending = args.pending if args.pending is not None else (10_000 if quick else 100_000)
    due = args.due or 1_000
    seconds = args.seconds or (20.0 if quick else 60.0)
    two_due = args.two_due or (2_000 if quick else 10_000)
    idle = args.idle or (10.0 if quick else 20.0)
    chosen = {w.strip() for w in args.workloads.split(",") if w.strip()}
    if not chosen <= {"1", "2", "3", "4", "5"}:
        raise SystemExit(f"unknown workload(s) {args.workloads!r}: choose from 1, 2, 3, 4, 5")
    configured = not args.no_configured
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="discord_actor-bench-keyed-") as tmp_name:
        tmp = Path(tmp_name)
        runtime_dir = tmp / "xdg"  # the embedded server's lock and socket, shared with children
        runtime_dir.mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
        env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
        cfg = DatabaseConfig(url=os.environ.get("DATABASE_URL", ""), data_dir=tmp / "pgdata",
                             schema=SCHEMA)
        bench = KeyedBench(tmp, await open_database(cfg, migrate=False), env, args)
        try:
            print(f"machine: {await machine_line(bench.database)}")
            print(f"command: {shown_command()}")
            print("discord-actor: `discord-actor run --config actor_server.toml`, defaults"
                  " (poll_interval_seconds 1, max_concurrent_runs 32, max_pool_size 10),"
                  " INFO log to a file", flush=True)
            if chosen & {"1", "2", "3"}:
                print(f"\n1. {due:,} Once due within {seconds:g} s, {pending:,} more pending"
                      " over the 24 h after the bench; one process", flush=True)
                rows = []
                restarts = []
                if configured:
                    rows.append(await bench.configured_due(due, seconds, 1))
                    if "3" in chosen:
                        restarts += await bench.restart(
                            f"{due:,} configured actors", bench.configured_due_now, idle)
                row, adding = await bench.keyed_due(due, seconds, pending)
                rows.append(row)
                print_table(rows)
                print(NOTES.format(grace=GRACE))
                if "2" in chosen:
                    print(f"\n2. Adding keyed schedules (to {pending:,} pending)")
                    print("\n".join(adding))
                if "3" in chosen:
                    restarts += await bench.restart(
                        f"{pending:,} pending keyed", bench.keyed_due_now, idle)
                    print(f"\n3. Restart, then {idle:g} s with nothing due")
                    print("\n".join(restarts))
            if "4" in chosen:
                print(f"\n4. {two_due:,} due over {seconds:g} s, two processes", flush=True)
                rows = []
                if configured:
                    rows.append(await bench.configured_due(two_due, seconds, 2))
                rows.append(await bench.keyed_two(two_due, seconds))
                print_table(rows, two=True)
            if "5" in chosen:
                print(f"\n5. Single adds at {pending:,} pending, limits on", flush=True)
                lines = await bench.adds_at_pending(
                    pending, args.add_seconds or (3.0 if quick else ADD_SECONDS))
                print("\n".join(lines[3:]))
        finally:
            await bench.stop_all()
            with contextlib.suppress(Exception):
                await bench.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            await bench.database.close()
    print(f"\ntotal bench time {time.time() - started:.0f} s")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--workloads", default="1,2,3,4,5", help="which workloads (1,2,3,4,5)")
    p.add_argument("--pending", type=int, help="pending schedules besides the due (100000)")
    p.add_argument("--due", type=int, help="due within the window, workload 1 (1000)")
    p.add_argument("--two-due", type=int, help="due within the window, workload 4 (10000)")
    p.add_argument("--seconds", type=float, help="the due window in seconds (60)")
    p.add_argument("--idle", type=float, help="the idle window after the restart (20 s)")
    p.add_argument("--add-seconds", type=float,
                   help="workload 5: each part's length in seconds (10; --quick: 3)")
    p.add_argument("--no-configured", action="store_true",
                   help="skip the configured-actor sides")
    p.add_argument("--quick", action="store_true",
                   help="10,000 pending, 2,000 due in workload 4, 20 s windows: a fast try")
    args = p.parse_args(argv)
    return run_orchestration(orchestrate(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
