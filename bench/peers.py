"""Peers: discord-actor beside discord.ext.tasks, APScheduler 3 and the tracked job systems.

The same scheduled no-op workload through discord.ext.tasks, APScheduler 3 and discord-actor,
and keyed adds and bursts beside pgqueuer, procrastinate and APScheduler 4, side by side, in
one invocation.

Each side runs in a fresh child process of its own, one after another:

- ``tasks``: one ``discord.ext.tasks`` loop per actor (no Client, nothing persisted);
- ``apscheduler``: APScheduler 3's ``AsyncIOScheduler``, in memory, one job per actor with an
  ``IntervalTrigger`` (its defaults otherwise: ``misfire_grace_time`` 1 s, ``coalesce``);
- ``discord-actor``: ``discord-actor run --config actor_server.toml`` as a real subprocess, on a
  generated config (N interval actors of one no-op module, platform "none", every other setting
  at its default), INFO logging to a file, the embedded PostgreSQL under the temporary directory
  (or ``DATABASE_URL``);
- ``raw ceiling`` (workload B only): plain asyncpg against the same PostgreSQL server, 10
  workers, each run exactly two statements: claim the earliest due task (``FOR UPDATE SKIP
  LOCKED``), advance it and insert a running run, all in one statement; then finish the run and
  write the task's state in one statement.

Every actor's call is a no-op that counts its runs in its state. Slots are spread evenly: actor
i's slots are at ``base + i * interval / N + k * interval``. The peers start loop (or job) i at
its first slot. discord-actor starts an interval actor's slots when it first creates its task row,
so it is started once to create the rows, stopped, the rows' ``next_run``/``due_at`` are moved to
the stagger, and it is started again for the measurement.

What is measured, over a window after a warm-up:

- runs/s: calls (runs) that started within the window, per second;
- start lateness p50 / p99 / max: for slots within the window, start time minus slot time. The
  peers take ``time.time()`` at the call; discord-actor and the raw ceiling ``runs.started_at``
  (the database's clock, on the same machine);
- missed slots: slots within the window with no call (run) by the time the side was stopped (a
  grace period after the window);
- CPU per run: user + system CPU of the side's process during the window / runs in the window
  (psutil, from outside). "PG CPU per run" is the PostgreSQL server's own CPU (postmaster and its
  backends) over the same window, for the sides that use it (embedded server only);
- peak RSS: ``VmHWM`` of the side's process just before it is stopped (PostgreSQL excluded);
- idle CPU (workload C): the process's CPU over a window in which nothing is due, in % of one
  core; and for discord-actor the restart time: spawn to ``started_at`` of a run that is due at
  start (its embedded server is started by the process, as after a real restart).

Workloads: A, 10,000 actors every 10 s (1,000 runs/s offered); B, 3,000 actors every 1 s
(overload: runs/s is the figure, and discord-actor's is given as a share of the raw ceiling
measured in the same invocation); C, 10,000 actors every hour (idle cost).

Workloads D and E set discord-actor's keyed schedules beside the PostgreSQL-backed job systems a
user would consider instead (the *tracked* peers): pgqueuer, procrastinate and APScheduler 4
with its PostgreSQL data store. Each peer runs in a child process of its own, in a database of
its own on the same server (``CREATE DATABASE bench_peers_<side>``), each add with a unique key
(pgqueuer ``dedupe_key``, procrastinate ``queueing_lock``, APScheduler 4's schedule id, ours the
keyed schedule's key). Our side goes through the public API: the adds are ``ctx.schedules.add``
calls from inside a run of an actor (``keyed_schedules.py``'s project, with the actor's limits
on), the pending sets and the burst are ``Schedules.add_many`` of keyed ``Once`` schedules.
APScheduler 4.0.0a6 cannot share the project's virtualenv (APScheduler 3, and it needs
``anyio==4.13.0``): it runs ``bench/peer_apscheduler4.py`` in ``bench/.venv-apscheduler4``,
created on first use.

- D: single adds at 100,000 pending (future, three hours out), 1,000 one after another, then
  1,000 from 20 concurrent callers (distinct keys and owners): adds/s, p50, p99;
- E: 10,000 one-shot jobs due at one instant, 32 workers (ours at its default
  ``max_concurrent_runs`` 32 and with 256), ``ANALYZE`` before the burst on every side: last
  start after the slot, start lateness p50 / p99, duplicates, the worker process's CPU per run,
  and the overload throughput (runs/s from the first start to the last, while more is due than
  can run), beside the raw two-statement ceiling on the same burst.

Run from the repository root: ``.venv/bin/python bench/peers.py`` (about 25 minutes),
``--quick`` for a short try (A to C on 2,000 actors and 20 s windows; D at 10,000 pending with
200 adds each way, E with 2,000 due), ``--workloads A,B`` to select, ``--tracked-sides`` to pick
the tracked peers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import asyncpg
import keyed_project as ks
import psutil
from common import machine_line, project_lines
from tracked_common import BURST_DELAY, PREFILL_CHUNK, BurstRecorder, analyze, time_adds

from discord_actor import NewSchedule, Once, Schedules
from discord_actor.config import DatabaseConfig, load_config
from discord_actor.db import Database, migrate, open_database
from discord_actor.db.store import Store

US = 1_000_000  # microseconds per second: slots are integers of microseconds, exact everywhere
START_DELAY = 2.0  # seconds from spawning a side to its base slot
SCHEMA = "bench_peers"  # discord-actor's schema (from the generated config)
RAW_SCHEMA = "bench_peers_raw"  # the raw ceiling's throwaway tables
RAW_WORKERS = 10
SCRIPT = str(Path(__file__).resolve())
URL_ENV = "BENCH_PEERS_DATABASE_URL"  # how the raw child gets the server's URL (not in argv)
STOP_TIMEOUT = 45.0  # SIGINT, then SIGKILL after this long (discord-actor's grace is 30 s)
FIRST_START_TIMEOUT = 180.0  # discord-actor: waiting for the task rows / the first runs
SPAWNED: set[int] = set()  # pids of children not yet seen to exit: killed by main() if left

ACTOR_MODULE = '''"""A no-op actor for bench/peers.py: counts its runs in its state."""

from discord_actor import RunContext, actor


@actor(platform="none")
async def noop(ctx: RunContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
'''


def now_us() -> int:
    return time.time_ns() // 1000


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def actor_name(i: int) -> str:
    return f"actor{i:05d}"


@dataclass(frozen=True)
class Plan:
    """Who is due when, and the measured window [w0, w1), all in microseconds since the epoch."""

    actors: int
    interval_us: int
    base_us: int
    stagger: bool
    w0_us: int
    w1_us: int

    def first_us(self, i: int) -> int:
        offset = i * self.interval_us // self.actors if self.stagger else 0
        return self.base_us + offset

    def expected(self) -> int:
        """Slots within the window, over all actors."""
        total = 0
        for i in range(self.actors):
            first = self.first_us(i)
            lo = max(0, -((first - self.w0_us) // self.interval_us))  # ceil((w0 - first) / T)
            hi = -((first - self.w1_us) // self.interval_us)
            total += max(0, hi - lo)
        return total

    @property
    def seconds(self) -> float:
        return (self.w1_us - self.w0_us) / US

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Workload:
    key: str
    actors: int
    interval: float  # seconds
    warmup: float  # seconds from the base slot to the window
    seconds: float  # the window
    idle: bool = False  # C: measure idle CPU instead of runs
    raw: bool = False  # B: add the raw two-statement ceiling

    @property
    def grace(self) -> float:
        """How long a side keeps running after the window, so late runs of its slots count."""
        return min(10.0, max(2.0, self.interval))

    def title(self) -> str:
        offered = self.actors / self.interval
        what = {"A": "spread evenly", "B": "overload, spread evenly",
                "C": "idle cost: all due once at start, then nothing for an hour"}[self.key]
        every = f"{self.interval:g} s" if self.interval < 3600 else "hour"
        window = (f"{self.warmup:g} s warm-up, {self.seconds:g} s idle window" if self.idle else
                  f"{self.warmup:g} s warm-up, {self.seconds:g} s measured")
        rate = "" if self.idle else f", {offered:,.0f} runs/s offered"
        return f"{self.key}: {self.actors:,} actors every {every}{rate} ({what}); {window}"


@dataclass
class Row:
    side: str
    runs_per_s: float | None = None
    late_ms: tuple[float, float, float] | None = None  # p50, p99, max
    missed: int | None = None
    expected: int | None = None
    cpu_per_run_us: float | None = None
    pg_cpu_per_run_us: float | None = None
    rss_mb: float | None = None
    idle_cpu_pct: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Counted:
    """What a side did in a window: lateness of window slots, slots hit, runs started."""

    late_ms: list[float]
    hits: int
    in_window: int


@dataclass
class Measured:
    """A child's window as seen from outside, and what it wrote when stopped."""

    plan: Plan
    cpu: float  # CPU seconds of the child over the window
    pg: float | None  # CPU seconds of the PostgreSQL server over the window
    rss_mb: float | None
    result: dict[str, Any]


def percentiles(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return at(0.50), at(0.99), ordered[-1]


# -- the children: one peer scheduler each --------------------------------------------------------


class Recorder:
    """Counts the calls of a peer scheduler against the plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.late_ms: list[float] = []
        self.hits = 0
        self.in_window = 0
        self.calls = 0
        self.state: dict[int, dict[str, int]] = {}  # the actors' "state", as ctx.state would be

    def call(self, i: int, slot_us: int, now: float) -> None:
        self.calls += 1
        state = self.state.setdefault(i, {})
        state["n"] = state.get("n", 0) + 1
        plan = self.plan
        if plan.w0_us <= slot_us < plan.w1_us:
            self.late_ms.append(now * 1000 - slot_us / 1000)
            self.hits += 1
        if plan.w0_us <= now * US < plan.w1_us:
            self.in_window += 1

    def result(self) -> dict[str, Any]:
        return {"late_ms": self.late_ms, "hits": self.hits, "in_window": self.in_window,
                "calls": self.calls}


Halt = Callable[[], Awaitable[None]]


def start_tasks_loops(plan: Plan, rec: Recorder) -> Halt:
    """One ``discord.ext.tasks`` loop per actor, each started at its first slot. A loop with
    ``seconds=`` is fixed-rate from its first call, so call k is for slot first + k * interval."""
    from discord.ext import tasks

    loop = asyncio.get_running_loop()
    interval = plan.interval_us / US
    loops: list[Any] = []

    def make(i: int) -> Any:
        first = plan.first_us(i)

        @tasks.loop(seconds=interval)
        async def tick() -> None:
            rec.call(i, first + tick.current_loop * plan.interval_us, time.time())

        return tick

    for i in range(plan.actors):
        one = make(i)
        loops.append(one)
        loop.call_at(loop.time() + plan.first_us(i) / US - time.time(), one.start)

    async def halt() -> None:
        for one in loops:
            one.cancel()
        await asyncio.sleep(0)

    return halt


def start_apscheduler(plan: Plan, rec: Recorder) -> Halt:
    """APScheduler 3, in memory, one interval job per actor starting at its first slot.

    A job never runs early and never more than ``misfire_grace_time`` (1 s, the default) late:
    later than that the run is skipped. So the slot of a call is the latest slot at or before it.
    """
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler = AsyncIOScheduler(timezone=UTC)
    period = plan.interval_us

    async def tick(i: int, first: int) -> None:
        now = time.time()
        slot = first + max(0, round(now * US) - first) // period * period
        rec.call(i, slot, now)

    for i in range(plan.actors):
        first = plan.first_us(i)
        trigger = IntervalTrigger(seconds=period / US, start_date=from_us(first), timezone=UTC)
        scheduler.add_job(tick, trigger, args=(i, first), id=actor_name(i))
    scheduler.start()

    async def halt() -> None:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    return halt


RAW_TABLES = """
CREATE SCHEMA {s};
CREATE TABLE {s}.tasks (
    id       bigint PRIMARY KEY,
    next_run timestamptz NOT NULL,
    state    jsonb NOT NULL DEFAULT '{{}}'::jsonb
);
CREATE INDEX tasks_next_run ON {s}.tasks (next_run);
CREATE TABLE {s}.runs (
    id            bigserial PRIMARY KEY,
    task_id       bigint NOT NULL REFERENCES {s}.tasks (id),
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text NOT NULL,
    UNIQUE (task_id, scheduled_for)
);
"""

# Statement 1: claim the earliest due task, advance it by one interval, insert a running run.
RAW_CLAIM = """
WITH due AS (
    SELECT id, next_run FROM {s}.tasks
    WHERE next_run <= now()
    ORDER BY next_run
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE {s}.tasks t SET next_run = t.next_run + $1::interval
    FROM due WHERE t.id = due.id
    RETURNING t.id, due.next_run AS slot, t.state
)
INSERT INTO {s}.runs (task_id, scheduled_for, status)
SELECT id, slot, 'running' FROM moved
RETURNING id, (SELECT state FROM moved) AS state
"""

# Statement 2: finish the run and write the task's state.
RAW_FINISH = """
WITH done AS (
    UPDATE {s}.runs SET status = 'succeeded', finished_at = now()
    WHERE id = $1
    RETURNING task_id
)
UPDATE {s}.tasks t SET state = $2::jsonb FROM done WHERE t.id = done.task_id
"""


async def start_raw(plan: Plan) -> Halt:
    """The raw two-statement ceiling: RAW_WORKERS connections, each run = RAW_CLAIM + RAW_FINISH."""
    url = os.environ[URL_ENV]
    s = RAW_SCHEMA
    setup = await asyncpg.connect(url)
    try:
        await setup.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        await setup.execute(RAW_TABLES.format(s=s))
        await setup.execute(
            f"INSERT INTO {s}.tasks (id, next_run)"
            " SELECT * FROM unnest($1::bigint[], $2::timestamptz[])",
            list(range(plan.actors)),
            [from_us(plan.first_us(i)) for i in range(plan.actors)],
        )
    finally:
        await setup.close()
    pool = await asyncpg.create_pool(url, min_size=RAW_WORKERS, max_size=RAW_WORKERS)
    claim, finish = RAW_CLAIM.format(s=s), RAW_FINISH.format(s=s)
    interval = timedelta(microseconds=plan.interval_us)
    stopping = asyncio.Event()

    async def worker() -> None:
        async with pool.acquire() as conn:
            while not stopping.is_set():
                row = await conn.fetchrow(claim, interval)
                if row is None:
                    await asyncio.sleep(0.005)
                    continue
                state = json.loads(row["state"])
                state["n"] = state.get("n", 0) + 1
                await conn.execute(finish, row["id"], json.dumps(state))

    workers = [asyncio.create_task(worker()) for _ in range(RAW_WORKERS)]

    async def halt() -> None:
        stopping.set()
        await asyncio.gather(*workers)
        await pool.close()

    return halt


async def run_child(side: str, plan: Plan, out: Path) -> None:
    """Run one side until SIGINT (or SIGTERM), then write what it counted to ``out``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rec = Recorder(plan)
    if side == "tasks":
        halt = start_tasks_loops(plan, rec)
    elif side == "apscheduler":
        halt = start_apscheduler(plan, rec)
    elif side == "raw":
        halt = await start_raw(plan)
    else:
        raise SystemExit(f"unknown side {side!r}")
    await stop.wait()
    await halt()
    write_text(out, json.dumps(rec.result()))


# -- the orchestrator -----------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(read_text(path).splitlines()[-lines:])


def write_project(directory: Path, actors: int, interval: float) -> Path:
    """actor_server.toml with N interval actors of one no-op module, defaults otherwise."""
    lines = project_lines(directory, "noop", ACTOR_MODULE, SCHEMA)
    for i in range(actors):
        lines += [
            "[[actors]]",
            f'name = "{actor_name(i)}"',
            'module = "noop"',
            'platform = "none"',
            "[actors.schedule]",
            'type = "interval"',
            f"seconds = {interval:g}",
            "",
        ]
    path = directory / "actor_server.toml"
    write_text(path, "\n".join(lines))
    return path


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size of a live process, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


class ChildFailed(Exception):
    pass


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    spawned: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        if self.proc.returncode is not None:
            raise ChildFailed(f"{self.name} exited with status {self.proc.returncode} before it"
                              f" was stopped; end of {self.log.name}:\n{tail(self.log)}")


class Bench:
    """Spawns, measures and always stops the sides; owns the orchestrator's database handle."""

    def __init__(self, tmp: Path, database: Database, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.database = database
        self.env = env
        self.children: list[Child] = []
        self.discord_actor = str(Path(sys.executable).with_name("discord-actor"))

    @property
    def pool(self) -> asyncpg.Pool:
        return self.database.pool

    # processes

    async def spawn(self, name: str, command: list[str], log: Path,
                    extra_env: dict[str, str] | None = None) -> Child:
        handle = open_log(log)
        try:
            spawned = time.time()
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=handle, stderr=handle,
                env={**self.env, **(extra_env or {})}, cwd=self.tmp, start_new_session=True,
            )
        finally:
            handle.close()
        child = Child(name, proc, log, spawned)
        self.children.append(child)
        SPAWNED.add(proc.pid)
        return child

    async def stop(self, child: Child) -> None:
        """SIGINT, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        proc = child.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                print(f"  ({child.name} did not stop within {STOP_TIMEOUT:g} s of SIGINT:"
                      " killed)", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        # Forgotten only once it has exited: an interrupted stop leaves it to stop_all / main.
        if child in self.children:
            self.children.remove(child)
        SPAWNED.discard(proc.pid)

    async def stop_all(self) -> None:
        for child in list(self.children):
            await self.stop(child)

    async def sleep_until(self, when: float, child: Child) -> None:
        while (left := when - time.time()) > 0:
            child.check()
            await asyncio.sleep(min(left, 0.5))
        child.check()

    def postgres_cpu(self) -> float | None:
        """CPU seconds of the embedded server's postmaster and its backends, or None."""
        server = self.database.server
        if server is None or server.data_dir is None:
            return None
        try:
            pid = int(read_text(server.data_dir / "postmaster.pid").splitlines()[0])
            postmaster = psutil.Process(pid)
            total = 0.0
            for p in [postmaster, *postmaster.children()]:
                with contextlib.suppress(psutil.Error):
                    total += cpu_seconds(p.pid)
            return total
        except (IndexError, ValueError, psutil.Error):
            return None

    async def window(self, child: Child, plan: Plan, grace: float,
                     postgres: bool) -> tuple[float, float | None, float | None]:
        """Sleep through the window sampling the child's CPU (and the server's, if it uses it);
        after the grace, the child's peak RSS."""

        def postgres_cpu() -> float | None:
            return self.postgres_cpu() if postgres else None

        await self.sleep_until(plan.w0_us / US, child)
        cpu0, pg0 = cpu_seconds(child.pid), postgres_cpu()
        await self.sleep_until(plan.w1_us / US, child)
        cpu1, pg1 = cpu_seconds(child.pid), postgres_cpu()
        await self.sleep_until(plan.w1_us / US + grace, child)
        pg = pg1 - pg0 if pg0 is not None and pg1 is not None else None
        return cpu1 - cpu0, pg, vm_hwm_mb(child.pid)

    # the peers (and the raw ceiling): one child each

    def plan_for(self, w: Workload, base: float, stagger: bool = True) -> Plan:
        base_us = round(base * US)
        w0 = base_us + round(w.warmup * US)
        return Plan(actors=w.actors, interval_us=round(w.interval * US), base_us=base_us,
                    stagger=stagger, w0_us=w0, w1_us=w0 + round(w.seconds * US))

    async def peer(self, side: str, label: str, w: Workload) -> Measured:
        """Spawn ``--child side``, measure its window, stop it and read what it counted."""
        out = self.tmp / f"{side}-{w.key}.json"
        plan = self.plan_for(w, time.time() + START_DELAY, stagger=not w.idle)
        command = [sys.executable, SCRIPT, "--child", side,
                   "--plan", plan.to_json(), "--out", str(out)]
        extra = {URL_ENV: self.database.url} if side == "raw" else None
        child = await self.spawn(label, command, self.tmp / f"{side}-{w.key}.log", extra)
        try:
            grace = 0.0 if w.idle else w.grace
            cpu, pg, rss = await self.window(child, plan, grace, side == "raw")
        finally:
            await self.stop(child)
        if child.proc.returncode != 0:
            raise ChildFailed(f"{label} exited with status {child.proc.returncode};"
                              f" end of its log:\n{tail(child.log)}")
        return Measured(plan, cpu, pg, rss, json.loads(read_text(out)))

    # discord-actor

    async def reset_schema(self) -> None:
        await self.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")

    async def count(self, query: str, *args: Any) -> int:
        try:
            return int(await self.pool.fetchval(query, *args) or 0)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return 0  # not migrated yet

    async def wait_for(self, child: Child, what: str, done: Callable[[], Awaitable[bool]],
                       limit: float = FIRST_START_TIMEOUT) -> float:
        deadline = time.time() + limit
        while not await done():
            child.check()
            if time.time() > deadline:
                raise ChildFailed(f"{child.name}: no {what} after {limit:g} s; end of its log:\n"
                                  f"{tail(child.log)}")
            await asyncio.sleep(0.25)
        return time.time()

    def run_command(self, config: Path) -> list[str]:
        return [self.discord_actor, "run", "--config", str(config)]

    async def discord_actor_staggered(self, w: Workload) -> Row:
        """Start once to create the task rows, move them to the stagger, start again, measure."""
        await self.reset_schema()
        config = write_project(self.tmp, w.actors, w.interval)
        log = self.tmp / f"discord-actor-{w.key}.log"
        first = await self.spawn("discord-actor (first start)", self.run_command(config), log)
        try:
            await self.wait_for(first, f"{w.actors} task rows", lambda: self.has_tasks(w.actors))
        finally:
            await self.stop(first)
        plan = self.plan_for(w, time.time() + START_DELAY)
        moved = await self.pool.execute(
            f"UPDATE {SCHEMA}.tasks t SET next_run = v.at, due_at = v.at"
            " FROM unnest($1::text[], $2::timestamptz[]) AS v(actor, at) WHERE t.actor = v.actor",
            [actor_name(i) for i in range(w.actors)],
            [from_us(plan.first_us(i)) for i in range(w.actors)],
        )
        if moved != f"UPDATE {w.actors}":
            raise ChildFailed(f"moving the slots to the stagger: {moved}, expected {w.actors} rows")
        child = await self.spawn("discord-actor", self.run_command(config), log)
        try:
            cpu, pg, rss = await self.window(child, plan, w.grace, True)
        finally:
            await self.stop(child)
        row = Row("discord-actor", rss_mb=rss)
        fill(row, plan, await counted_in_db(self.pool, SCHEMA, plan), cpu, pg)
        return row

    async def has_tasks(self, n: int) -> bool:
        return await self.count(f"SELECT count(*) FROM {SCHEMA}.tasks") >= n

    async def discord_actor_idle(self, w: Workload) -> tuple[Row, list[str]]:
        """C: every actor due at the first start; once all have run and it is quiet, idle CPU.
        Then the restart: one task due now, time from spawn to that run's started_at."""
        await self.reset_schema()
        config = write_project(self.tmp, w.actors, w.interval)
        log = self.tmp / f"discord-actor-{w.key}.log"
        lines: list[str] = []
        runs_sql = f"SELECT count(*) FROM {SCHEMA}.runs"
        done_sql = f"SELECT count(*) FROM {SCHEMA}.runs WHERE status <> 'running'"
        child = await self.spawn("discord-actor", self.run_command(config), log)
        try:
            async def all_first_runs() -> bool:
                return await self.count(done_sql) >= w.actors

            t_all = await self.wait_for(child, f"{w.actors} finished runs", all_first_runs)
            lines.append(f"discord-actor first start: {w.actors:,} first runs done"
                         f" {t_all - child.spawned:.1f} s after spawn")
            await self.sleep_until(max(time.time() + 2.0, child.spawned + w.warmup), child)
            runs0, t0 = await self.count(runs_sql), time.time()
            cpu0 = cpu_seconds(child.pid)
            await self.sleep_until(t0 + w.seconds, child)
            cpu1, t1 = cpu_seconds(child.pid), time.time()
            runs1 = await self.count(runs_sql)
            rss = vm_hwm_mb(child.pid)
        finally:
            await self.stop(child)
        row = Row("discord-actor", rss_mb=rss, idle_cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0))
        if runs1 != runs0:
            row.notes.append(f"{runs1 - runs0} runs in the idle window")
        lines.append(await self.restart_to_first_run(config, log))
        return row, lines

    async def restart_to_first_run(self, config: Path, log: Path) -> str:
        stopped = await self.pool.fetchval("SELECT now()")
        task_id = await self.pool.fetchval(
            f"UPDATE {SCHEMA}.tasks SET next_run = now(), due_at = now() WHERE actor = $1"
            " RETURNING id", actor_name(0))
        child, seconds = await self.restart_and_time(
            "discord-actor (restart)", config, log, task_id, stopped)
        await self.stop(child)
        return (f"discord-actor restart to first run: {seconds:.2f} s (spawn of `discord-actor"
                f" run` to started_at of a run due at start; {self.database_origin()})")

    async def restart_and_time(self, name: str, config: Path, log: Path, task_id: int,
                               stopped: datetime, schema: str = SCHEMA) -> tuple[Child, float]:
        """Start `discord-actor run` as after a restart and time it to the first run of
        ``task_id`` after ``stopped`` (seconds from the spawn); the child is left running."""
        embedded = self.database.server is not None
        if embedded:  # the server stops with the last process, as after a real restart
            await self.database.close()
        child = await self.spawn(name, self.run_command(config), log)
        try:
            if embedded:
                marker = len(read_text(log))

                async def started() -> bool:
                    return "started with" in read_text(log)[marker:]

                await self.wait_for(child, "start", started, 60.0)
                self.database = await open_database(self.database.config, migrate=False)
            started_at: datetime | None = None

            async def ran() -> bool:
                nonlocal started_at
                started_at = await self.pool.fetchval(
                    f"SELECT min(started_at) FROM {schema}.runs WHERE task_id = $1"
                    " AND started_at > $2", task_id, stopped)
                return started_at is not None

            await self.wait_for(child, "run of the due task", ran, 60.0)
        except BaseException:
            await self.stop(child)
            raise
        assert started_at is not None
        return child, started_at.timestamp() - child.spawned

    def database_origin(self) -> str:
        return ("the embedded server started by the process" if self.database.server is not None
                else "DATABASE_URL")

    async def raw_summary(self, plan: Plan) -> Counted:
        try:
            return await counted_in_db(self.pool, RAW_SCHEMA, plan)
        finally:
            await self.pool.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")


async def counted_in_db(pool: asyncpg.Pool, schema: str, plan: Plan) -> Counted:
    """Lateness and hits of the window's slots, and runs started in the window, from ``runs``."""
    w0, w1 = from_us(plan.w0_us), from_us(plan.w1_us)
    rows = await pool.fetch(
        f"SELECT r.task_id, r.scheduled_for,"
        f" extract(epoch FROM r.started_at - r.scheduled_for) * 1000 AS late"
        f" FROM {schema}.runs r JOIN {schema}.tasks t ON t.id = r.task_id"
        f" WHERE r.scheduled_for >= $1 AND r.scheduled_for < $2 AND r.status <> 'skipped'",
        w0, w1)
    started = await pool.fetchval(
        f"SELECT count(*) FROM {schema}.runs r JOIN {schema}.tasks t ON t.id = r.task_id"
        f" WHERE r.started_at >= $1 AND r.started_at < $2 AND r.status <> 'skipped'", w0, w1)
    hits = len({(r["task_id"], r["scheduled_for"]) for r in rows})
    return Counted([float(r["late"]) for r in rows], hits, int(started))


def fill(row: Row, plan: Plan, counted: Counted, cpu: float, pg: float | None) -> None:
    row.runs_per_s = counted.in_window / plan.seconds
    row.late_ms = percentiles(counted.late_ms)
    row.expected = plan.expected()
    row.missed = max(0, row.expected - counted.hits)
    if counted.in_window:
        row.cpu_per_run_us = cpu / counted.in_window * US
        if pg is not None:
            row.pg_cpu_per_run_us = pg / counted.in_window * US


# -- output ---------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_table(w: Workload, rows: list[Row]) -> None:
    if w.idle:
        header = ["side", "idle CPU % (of one core)", "peak RSS (MB)", "notes"]
        body = [[r.side, fmt(r.idle_cpu_pct, 2), fmt(r.rss_mb, 1), "; ".join(r.notes)]
                for r in rows]
    else:
        header = ["side", "runs/s", "late p50 (ms)", "late p99 (ms)", "late max (ms)",
                  "missed slots", "CPU per run (µs)", "PG CPU per run (µs)", "peak RSS (MB)"]
        body = []
        for r in rows:
            late = r.late_ms or (None, None, None)
            missed = "—" if r.missed is None else f"{r.missed:,} of {r.expected:,}"
            body.append([r.side, fmt(r.runs_per_s), fmt(late[0], 1), fmt(late[1], 1),
                         fmt(late[2], 1), missed, fmt(r.cpu_per_run_us), fmt(r.pg_cpu_per_run_us),
                         fmt(r.rss_mb, 1)])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    text = [i == 0 or (w.idle and h == "notes") for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(n) if left else c.rjust(n)
                                 for c, n, left in zip(cells, widths, text, strict=True)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (n + 2) if left else "-" * (n + 1) + ":"
                         for n, left in zip(widths, text, strict=True)) + "|")
    for b in body:
        print(line(b))


NOTES = """\
late: start minus slot, for slots in the window (peers: time.time() at the call; discord-actor
and raw: runs.started_at, the database's clock); missed: window slots with no call or run when
the side was stopped ({grace:g} s after the window); CPU per run: the side's process (user + sys)
over the window / runs started in it; PG CPU: the PostgreSQL server's, over the same window;
peak RSS: VmHWM of the side's process (PostgreSQL excluded)."""


def peer_row(label: str, w: Workload, m: Measured) -> Row:
    row = Row(label, rss_mb=m.rss_mb)
    if w.idle:
        row.idle_cpu_pct = 100 * m.cpu / m.plan.seconds
        if m.result["calls"] != w.actors:
            row.notes.append(f"{m.result['calls']:,} first runs of {w.actors:,}")
    else:
        counted = Counted(m.result["late_ms"], m.result["hits"], m.result["in_window"])
        fill(row, m.plan, counted, m.cpu, m.pg)
    return row


async def run_workload(bench: Bench, w: Workload) -> None:
    print()
    print(w.title(), flush=True)
    rows: list[Row] = []
    extra: list[str] = []
    for side, label in (("tasks", "discord.ext.tasks"), ("apscheduler", "APScheduler 3")):
        rows.append(peer_row(label, w, await bench.peer(side, label, w)))
    if w.idle:
        row, extra = await bench.discord_actor_idle(w)
    else:
        row = await bench.discord_actor_staggered(w)
    rows.append(row)
    if w.raw:
        label = f"raw ceiling ({RAW_WORKERS} workers, 2 statements/run)"
        m = await bench.peer("raw", label, w)
        raw = Row(label, rss_mb=m.rss_mb)
        fill(raw, m.plan, await bench.raw_summary(m.plan), m.cpu, m.pg)
        rows.append(raw)
        if raw.runs_per_s:
            ours = row.runs_per_s or 0.0
            extra.append(f"discord-actor / raw ceiling = {ours:,.0f} / {raw.runs_per_s:,.0f}"
                         f" runs/s = {100 * ours / raw.runs_per_s:.0f}%")
    print_table(w, rows)
    for r in rows if not w.idle else []:  # the idle table has a notes column
        for note in r.notes:
            print(f"  {r.side}: {note}")
    for text in extra:
        print(text)
    if not w.idle:
        print(NOTES.format(grace=w.grace))
    sys.stdout.flush()



# -- tracked peers: adds at 100,000 pending, a burst due at one instant (D, E) ------------------

TRACKED_PENDING = 100_000  # D: pending future jobs / schedules before the timed adds
TRACKED_ADDS = 1_000  # D: timed single adds, for each of the two ways
TRACKED_CALLERS = 20  # D: concurrent callers
TRACKED_BURST = 10_000  # E: due at one instant
TRACKED_WORKLOADS = ("D", "E")
TRACKED_WORKERS = 32  # E: the peers' concurrency (ours: max_concurrent_runs 32, then 256)
PGQUEUER_DEQUEUE_TIMEOUT = 1.0  # seconds; 30 by default (its wait when nothing is due)
PROCRASTINATE_POLLING = 0.1  # fetch_job_polling_interval; 5 s by default
APS4_VENV = Path(__file__).resolve().parent / ".venv-apscheduler4"
APS4_PINS = ["APScheduler==4.0.0a6", "anyio==4.13.0", "sniffio", "asyncpg>=0.29",
             "SQLAlchemy[asyncio]>=2.0.24", "psutil>=5.9"]
APS4_SCRIPT = str(Path(__file__).resolve().with_name("peer_apscheduler4.py"))
TRACKED_LABELS = {"pgqueuer": "pgqueuer", "procrastinate": "procrastinate",
                  "apscheduler4": "APScheduler 4 (PG store)"}
TRACKED_TRACKS = {
    "discord-actor": "one task row per schedule, one runs row per run (kept 30 days)",
    "pgqueuer": "the job row is deleted when done; one pgqueuer_log row per transition"
                " (queued, picked, successful)",
    "procrastinate": "one procrastinate_jobs row per job, its status updated (one row per job,"
                     " not per attempt); one procrastinate_events row per transition",
    "apscheduler4": "one jobs row while pending/running; one job_results row kept for"
                    " job_result_expiration_time (set to 1 h here; 0 by default, keeps none)",
}


def tracked_settings(side: str, workers: int = TRACKED_WORKERS) -> str:
    return {
        "pgqueuer": f"QueueManager on asyncpg, dequeue_timeout {PGQUEUER_DEQUEUE_TIMEOUT:g} s,"
                    f" batch_size 10, max_concurrent_tasks {workers}; enqueue with dedupe_key and"
                    " execute_after",
        "procrastinate": f"PsycopgConnector, worker concurrency {workers},"
                         f" fetch_job_polling_interval {PROCRASTINATE_POLLING:g} s, listen_notify"
                         " on; defer with queueing_lock and schedule_at",
        "apscheduler4": f"AsyncScheduler, SQLAlchemyDataStore (asyncpg) + AsyncpgEventBroker,"
                        f" max_concurrent_jobs {workers}, job_result_expiration_time 1 h;"
                        " add_schedule(DateTrigger) with a schedule id, in its own virtualenv",
    }[side]


async def pgqueuer_child(phase: str, params: dict[str, Any], url: str) -> dict[str, Any]:
    from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()

    async def prefill(keys: list[str], at: float) -> None:
        for lo in range(0, len(keys), PREFILL_CHUNK):
            chunk = keys[lo:lo + PREFILL_CHUNK]
            after = timedelta(seconds=at - time.time())  # execute_after is from the insert's now
            await queries.enqueue(["noop"] * len(chunk), [k.encode() for k in chunk],
                                  [0] * len(chunk), [after] * len(chunk), dedupe_key=chunk)

    if phase == "adds":
        await prefill([f"p:{i}" for i in range(params["pending"])], time.time() + 3 * 3600)
        await analyze(url)
        pool = await asyncpg.create_pool(url, min_size=params["callers"],
                                         max_size=params["callers"])
        pooled = Queries(AsyncpgPoolDriver(pool))
        try:
            return await time_adds(
                lambda key: pooled.enqueue("noop", key.encode(), 0, timedelta(hours=3),
                                           dedupe_key=key),
                params["n"], params["callers"])
        finally:
            await pool.close()
            await conn.close()
    n, workers = params["n"], params["workers"]
    rec = BurstRecorder(n)
    slot = time.time() + BURST_DELAY
    await prefill([f"b:{i}" for i in range(n)], slot)
    await analyze(url)
    qm = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(url))))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        rec.call((job.payload or b"").decode())

    runner = asyncio.create_task(qm.run(
        dequeue_timeout=timedelta(seconds=PGQUEUER_DEQUEUE_TIMEOUT),
        max_concurrent_tasks=workers))
    result = await rec.wait(slot, params["limit"])
    qm.shutdown.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(runner, 10)
    await conn.close()
    return result


async def procrastinate_child(phase: str, params: dict[str, Any], url: str) -> dict[str, Any]:
    import procrastinate

    size = params.get("callers", 4) + 4
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=url, min_size=size, max_size=size))
    rec = BurstRecorder(params["n"])

    @app.task(name="noop", pass_context=True)
    async def noop(context: procrastinate.JobContext) -> None:
        rec.call(context.job.queueing_lock or "")

    async with app.open_async():
        await app.schema_manager.apply_schema_async()

        async def prefill(keys: list[str], at: datetime) -> None:
            for lo in range(0, len(keys), PREFILL_CHUNK):
                jobs = [noop.configure(queueing_lock=k, schedule_at=at).make_new_job()
                        for k in keys[lo:lo + PREFILL_CHUNK]]
                await app.job_manager.batch_defer_jobs_async(jobs)

        if phase == "adds":
            later = datetime.now(UTC) + timedelta(hours=3)
            await prefill([f"p:{i}" for i in range(params["pending"])], later)
            await analyze(url)
            return await time_adds(
                lambda key: noop.configure(queueing_lock=key, schedule_at=later).defer_async(),
                params["n"], params["callers"])
        slot = time.time() + BURST_DELAY
        await prefill([f"b:{i}" for i in range(params["n"])],
                      datetime.fromtimestamp(slot, UTC))
        await analyze(url)
        worker = asyncio.create_task(app.run_worker_async(
            concurrency=params["workers"], fetch_job_polling_interval=PROCRASTINATE_POLLING,
            install_signal_handlers=False, wait=True))
        result = await rec.wait(slot, params["limit"])
        worker.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(worker, 10)
        return result


def run_tracked_child(side: str, phase: str, params: dict[str, Any], out: Path) -> None:
    url = os.environ[URL_ENV]
    child = {"pgqueuer": pgqueuer_child, "procrastinate": procrastinate_child}[side]
    write_text(out, json.dumps(asyncio.run(child(phase, params, url))))


def aps4_python() -> tuple[Path, str | None]:
    """The private virtualenv's python for APScheduler 4 (its pins conflict with the project's
    APScheduler 3 and anyio), created on first use; and a line saying so, when it was."""
    python = APS4_VENV / "bin" / "python"
    if python.exists():
        return python, None
    import subprocess
    import venv

    venv.create(APS4_VENV, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *APS4_PINS], check=True)
    return python, (f"APScheduler 4 runs in its own virtualenv, created now at {APS4_VENV}"
                    f" ({', '.join(APS4_PINS)}): it conflicts with the project's APScheduler 3")


ADDER_MODULE = '''"""bench/peers.py workload D: times ctx.schedules.add from inside a run."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from discord_actor import Once, RunContext, actor

N = {n}
CALLERS = {callers}
OUT = {out!r}


@actor(platform="none")
async def adder(ctx: RunContext) -> None:
    at = datetime.now(UTC) + timedelta(hours=3)

    async def add(key: str) -> float:
        t = time.perf_counter()
        await ctx.schedules.add("reminder", key=key, schedule=Once(at=at), owner="o:" + key)
        return time.perf_counter() - t

    t0 = time.perf_counter()
    seq = [await add(f"seq:{{i}}") for i in range(N)]
    seq_wall = time.perf_counter() - t0
    conc: list[float] = []

    async def caller(c: int) -> None:
        for i in range(c, N, CALLERS):
            conc.append(await add(f"conc:{{i}}"))

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    result = {{"seq": seq, "seq_wall": seq_wall, "conc": conc,
               "conc_wall": time.perf_counter() - t0}}
    Path(OUT).write_text(json.dumps(result))
'''


@dataclass
class TrackedRow:
    side: str
    seq: tuple[float, float, float] | None = None  # adds/s, p50 ms, p99 ms
    conc: tuple[float, float, float] | None = None
    last_ms: float | None = None  # E: last start after the slot
    late: tuple[float, float, float] | None = None  # p50, p99, max ms
    ran: int | None = None
    expected: int | None = None
    duplicates: int | None = None
    cpu_us: float | None = None
    drain: float | None = None  # runs/s from the first start to the last


def adds_figures(lat: list[float], wall: float) -> tuple[float, float, float]:
    p = percentiles([v * 1000 for v in lat]) or (0.0, 0.0, 0.0)
    return len(lat) / wall, p[0], p[1]


def burst_figures(row: TrackedRow, starts: list[float], slot: float, expected: int) -> None:
    late = [(s - slot) * 1000 for s in starts]
    row.late = percentiles(late)
    row.last_ms = max(late) if late else None
    row.expected = expected
    if len(starts) > 1:
        row.drain = (len(starts) - 1) / max(1e-9, max(starts) - min(starts))


class TrackedBench(Bench):
    """The tracked sides of D and E, each peer in a database of its own on the same server."""

    async def fresh_database(self, name: str) -> str:
        await self.pool.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await self.pool.execute(f"CREATE DATABASE {name}")
        return str(urlsplit(self.database.url)._replace(path=f"/{name}").geturl())

    async def tracked_peer(self, side: str, phase: str, params: dict[str, Any],
                           limit: float) -> dict[str, Any]:
        url = await self.fresh_database(f"bench_peers_{side}")
        out = self.tmp / f"{side}-{phase}.json"
        if side == "apscheduler4":
            python, note = aps4_python()
            if note:
                print(note, flush=True)
            command = [str(python), APS4_SCRIPT]
        else:
            command = [sys.executable, SCRIPT, "--tracked", side]
        command += ["--phase", phase, "--params", json.dumps(params), "--out", str(out)]
        child = await self.spawn(TRACKED_LABELS[side], command, self.tmp / f"{side}-{phase}.log",
                                 {URL_ENV: url})
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.proc.wait(), limit)
            if child.proc.returncode is None:
                raise ChildFailed(f"{child.name} ({phase}) did not finish within {limit:g} s;"
                                  f" end of its log:\n{tail(child.log)}")
            if child.proc.returncode != 0 or not out.exists():
                raise ChildFailed(f"{child.name} ({phase}) exited with status"
                                  f" {child.proc.returncode}; end of its log:\n{tail(child.log)}")
        finally:
            await self.stop(child)
        result: dict[str, Any] = json.loads(read_text(out))
        return result

    async def ours_project(self, max_concurrent_runs: int, adder: str | None = None) -> Path:
        """keyed_schedules' project (its ``reminder`` actor, limits on: 1,000,000 per actor,
        1,000 per owner), our schema fresh; with ``adder``, an actor that runs it at start."""
        await self.pool.execute(f"DROP SCHEMA IF EXISTS {ks.SCHEMA} CASCADE")
        async with self.pool.acquire() as conn:
            await migrate(conn, ks.SCHEMA)
        path = ks.write_project(self.tmp, [])
        limits = "max_schedules = 1000000\n"
        text = read_text(path).replace(
            "[server]\n", f"[server]\nmax_concurrent_runs = {max_concurrent_runs}\n", 1).replace(
            limits, f"{limits}max_schedules_per_owner = 1000\n")
        if adder is not None:
            write_text(self.tmp / "actors" / "adder.py", adder)
            text += ("\n[[actors]]\nname = \"adder\"\nmodule = \"adder\"\nplatform = \"none\"\n"
                     "timeout_seconds = 3600\n[actors.schedule]\ntype = \"immediate\"\n")
        write_text(path, text)
        return path

    async def ours_prefill(self, path: Path, keys: list[str], at: datetime,
                           owners: int = 1000) -> None:
        schedules = Schedules(Store(self.pool, ks.SCHEMA), load_config(path))
        for lo in range(0, len(keys), 10_000):
            await schedules.add_many(ks.ACTOR, [
                NewSchedule(k, Once(at=at), owner=f"user:{(lo + j) % owners}")
                for j, k in enumerate(keys[lo:lo + 10_000])])
        await self.pool.execute("ANALYZE")

    async def ours_adds(self, params: dict[str, Any], limit: float) -> dict[str, Any]:
        out = self.tmp / "discord-actor-adds.json"
        out.unlink(missing_ok=True)
        path = await self.ours_project(32, ADDER_MODULE.format(
            n=params["n"], callers=params["callers"], out=str(out)))
        # No process runs while the pending set is written: the adder runs when one starts.
        await self.ours_prefill(path, [f"p:{i}" for i in range(params["pending"])],
                                datetime.now(UTC) + timedelta(hours=3))
        child = await self.spawn("discord-actor", self.run_command(path),
                                 self.tmp / "discord-actor-adds.log")
        try:
            async def written() -> bool:
                return out.exists()

            await self.wait_for(child, "adds", written, limit)
        finally:
            await self.stop(child)
        result: dict[str, Any] = json.loads(read_text(out))
        return result

    async def ours_burst(self, n: int, max_concurrent_runs: int, limit: float) -> TrackedRow:
        path = await self.ours_project(max_concurrent_runs)
        slot = datetime.now(UTC) + timedelta(seconds=BURST_DELAY + n / 5000)
        await self.ours_prefill(path, [f"b:{i}" for i in range(n)], slot, owners=n)
        child = await self.spawn("discord-actor", self.run_command(path),
                                 self.tmp / f"discord-actor-burst-{max_concurrent_runs}.log")
        runs = f"{ks.SCHEMA}.runs"
        try:
            await self.sleep_until(slot.timestamp(), child)
            cpu0 = cpu_seconds(child.pid)

            async def all_started() -> bool:
                return await self.count(f"SELECT count(DISTINCT task_id) FROM {runs}"
                                        " WHERE status <> 'running'") >= n

            await self.wait_for(child, f"{n} finished runs", all_started, limit)
            cpu = cpu_seconds(child.pid) - cpu0
            await asyncio.sleep(1.0)  # a duplicate would show up now
        finally:
            await self.stop(child)
        rows = await self.pool.fetch(
            f"SELECT task_id, extract(epoch FROM started_at)::float8 AS at FROM {runs}"
            " WHERE status <> 'skipped'")
        row = TrackedRow(f"discord-actor (max_concurrent_runs {max_concurrent_runs})")
        burst_figures(row, [r["at"] for r in rows], slot.timestamp(), n)
        row.ran = len({r["task_id"] for r in rows})
        row.duplicates = len(rows) - row.ran
        row.cpu_us = cpu / max(1, len(rows)) * US
        return row

    async def raw_burst(self, n: int, limit: float) -> TrackedRow:
        """The raw two-statement ceiling on the burst: n tasks due at one instant."""
        base = now_us() + int(3 * US)
        plan = Plan(n, 3600 * US, base, False, base, base + 3600 * US)
        os.environ[URL_ENV] = self.database.url
        halt = await start_raw(plan)
        try:
            done_sql = f"SELECT count(*) FROM {RAW_SCHEMA}.runs WHERE status = 'succeeded'"
            deadline = time.time() + limit
            while time.time() < deadline:
                if await self.count(done_sql) >= n:
                    break
                await asyncio.sleep(0.25)
        finally:
            await halt()
        rows = await self.pool.fetch(
            f"SELECT extract(epoch FROM started_at)::float8 AS at FROM {RAW_SCHEMA}.runs")
        await self.pool.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
        row = TrackedRow(f"raw ceiling ({RAW_WORKERS} workers, 2 statements/run)")
        burst_figures(row, [r["at"] for r in rows], base / US, n)
        row.ran = len(rows)
        return row


def tracked_sides(args: argparse.Namespace) -> list[str]:
    sides = [s.strip() for s in args.tracked_sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in TRACKED_LABELS]
    if unknown:
        raise SystemExit(f"unknown tracked side(s) {', '.join(unknown)}:"
                         f" choose from {', '.join(TRACKED_LABELS)}")
    return sides


def table(header: list[str], body: list[list[str]]) -> None:
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


def three(v: tuple[float, float, float] | None, digits: tuple[int, int, int]) -> list[str]:
    return [fmt(None)] * 3 if v is None else [fmt(x, d) for x, d in zip(v, digits, strict=True)]


async def run_adds(bench: TrackedBench, args: argparse.Namespace) -> None:
    n = args.adds or (200 if args.quick else TRACKED_ADDS)
    pending = args.pending if args.pending is not None else (
        10_000 if args.quick else TRACKED_PENDING)
    params = {"n": n, "pending": pending, "callers": TRACKED_CALLERS}
    print(f"\nD: single adds at {pending:,} pending, each with a unique key: {n:,} one after"
          f" another, then {n:,} from {TRACKED_CALLERS} concurrent callers (distinct keys and"
          " owners)", flush=True)
    rows = []
    ours = await bench.ours_adds(params, 1800)
    rows.append(TrackedRow("discord-actor (ctx.schedules.add in a run)",
                           adds_figures(ours["seq"], ours["seq_wall"]),
                           adds_figures(ours["conc"], ours["conc_wall"])))
    for side in tracked_sides(args):
        r = await bench.tracked_peer(side, "adds", params, 1800)
        rows.append(TrackedRow(TRACKED_LABELS[side], adds_figures(r["seq"], r["seq_wall"]),
                               adds_figures(r["conc"], r["conc_wall"])))
    table(["side", "one by one adds/s", "p50 ms", "p99 ms",
           f"{TRACKED_CALLERS} callers adds/s", "p50 ms", "p99 ms"],
          [[r.side, *three(r.seq, (0, 2, 2)), *three(r.conc, (0, 2, 2))] for r in rows])


async def run_burst(bench: TrackedBench, args: argparse.Namespace) -> None:
    n = args.burst or (2_000 if args.quick else TRACKED_BURST)
    limit = 600.0
    print(f"\nE: a burst of {n:,} keyed one-shot jobs due at one instant, {TRACKED_WORKERS}"
          " workers (ours also with max_concurrent_runs 256); ANALYZE before the burst, every"
          " side; overload throughput = runs/s from the first start to the last", flush=True)
    rows = [await bench.ours_burst(n, 32, limit), await bench.ours_burst(n, 256, limit)]
    for side in tracked_sides(args):
        params = {"n": n, "workers": TRACKED_WORKERS, "limit": limit}
        r = await bench.tracked_peer(side, "burst", params, limit + 120)
        row = TrackedRow(TRACKED_LABELS[side], ran=r["ran"], duplicates=r["duplicates"],
                         cpu_us=r["cpu"] / max(1, len(r["starts"])) * US)
        burst_figures(row, r["starts"], r["slot"], n)
        rows.append(row)
        if r.get("added_before_slot_s", 1.0) < 0:
            print(f"  {row.side}: its adds ended {-r['added_before_slot_s']:.1f} s after the"
                  " slot (lateness counts from the slot)")
    rows.append(await bench.raw_burst(n, limit))
    table(["side", "ran", "last start after slot (s)", "late p50 (s)", "late p99 (s)",
           "duplicates", "worker CPU per run (µs)", "overload runs/s"],
          [[r.side, f"{fmt(r.ran)} of {r.expected:,}",
            fmt(None if r.last_ms is None else r.last_ms / 1000, 2),
            *[fmt(None if r.late is None else r.late[i] / 1000, 2) for i in (0, 1)],
            fmt(r.duplicates), fmt(r.cpu_us), fmt(r.drain)] for r in rows])
    ours = max((r.drain or 0.0) for r in rows if r.side.startswith("discord-actor"))
    if rows[-1].drain:
        print(f"discord-actor's best / raw ceiling = {ours:,.0f} / {rows[-1].drain:,.0f} runs/s"
              f" = {100 * ours / rows[-1].drain:.0f}%")
    print("late: start minus the slot (peers: time.time() in the handler; discord-actor and raw:"
          " runs.started_at); worker CPU: the side's process, user + sys, from the slot to the"
          " last run (discord-actor: the whole `discord-actor run` process)")


def print_tracked_settings(args: argparse.Namespace) -> None:
    from importlib.metadata import version

    print("tracked peers (workloads D, E), each in a database of its own on the same server:")
    print("  discord-actor: `discord-actor run`, defaults (max_pool_size 10,"
          " poll_interval_seconds 1), keyed Once schedules of one actor (max_schedules 1000000,"
          " max_schedules_per_owner 1000)")
    for side in tracked_sides(args):
        v = "4.0.0a6 (its own virtualenv)" if side == "apscheduler4" else version(side)
        print(f"  {TRACKED_LABELS[side]} {v}: {tracked_settings(side)}")
    print("  what each tracks per run:")
    for side in ["discord-actor", *tracked_sides(args)]:
        print(f"    {TRACKED_LABELS.get(side, side)}: {TRACKED_TRACKS[side]}")


def workloads(args: argparse.Namespace) -> list[Workload]:
    quick = args.quick
    n = args.actors or (2000 if quick else None)
    warmup = args.warmup if args.warmup is not None else (5.0 if quick else 10.0)
    seconds = args.seconds if args.seconds is not None else (20.0 if quick else 60.0)
    idle = 20.0 if quick else 30.0
    every = {
        "A": Workload("A", n or 10_000, 10.0, warmup, seconds),
        "B": Workload("B", n or 3_000, 1.0, 5.0, 20.0, raw=True),
        "C": Workload("C", n or 10_000, 3600.0, 10.0 if quick else 15.0, idle, idle=True),
    }
    chosen = [k.strip().upper() for k in args.workloads.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in every and k not in TRACKED_WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}: choose from A, B, C, D, E")
    return [every[k] for k in chosen if k in every]


def shown_command() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe, *sys.argv])


async def orchestrate(args: argparse.Namespace) -> int:
    chosen = workloads(args)
    tracked = [k.strip().upper() for k in args.workloads.split(",")
               if k.strip().upper() in TRACKED_WORKLOADS]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="discord_actor-bench-peers-") as tmp_name:
        tmp = Path(tmp_name)
        # A private runtime directory for the embedded server's lock and sockets; every process
        # that shares the server (this one and the children) must see the same one.
        runtime_dir = tmp / "xdg"
        runtime_dir.mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
        env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
        cfg = DatabaseConfig(url=os.environ.get("DATABASE_URL", ""), data_dir=tmp / "pgdata",
                             schema=SCHEMA)
        bench = TrackedBench(tmp, await open_database(cfg, migrate=False), env)
        try:
            print(f"machine: {await machine_line(bench.database)}")
            print(f"command: {shown_command()}")
            print("discord-actor: `discord-actor run --config actor_server.toml`, defaults"
                  " (max_concurrent_runs 32, max_pool_size 10), INFO log to a file")
            if tracked:
                print_tracked_settings(args)
            for w in chosen:
                await run_workload(bench, w)
            if "D" in tracked:
                await run_adds(bench, args)
            if "E" in tracked:
                await run_burst(bench, args)
        finally:
            await bench.stop_all()
            with contextlib.suppress(Exception):
                await bench.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
                await bench.pool.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
            await bench.database.close()
    print(f"\ntotal bench time {time.time() - started:.0f} s")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--workloads", default="A,B,C,D,E",
                   help="which workloads, e.g. A,B (A,B,C,D,E)")
    p.add_argument("--tracked-sides", default=",".join(TRACKED_LABELS),
                   help="the tracked peers of D and E (pgqueuer,procrastinate,apscheduler4)")
    p.add_argument("--pending", type=int, help="D: pending before the timed adds (100000)")
    p.add_argument("--adds", type=int, help=f"D: timed adds, each way ({TRACKED_ADDS})")
    p.add_argument("--burst", type=int, help=f"E: due at one instant ({TRACKED_BURST})")
    p.add_argument("--actors", type=int, help="actors in every workload (A 10000, B 3000,"
                   " C 10000)")
    p.add_argument("--warmup", type=float, help="A: seconds before the window (10)")
    p.add_argument("--seconds", type=float, help="A: the measured window in seconds (60)")
    p.add_argument("--quick", action="store_true",
                   help="2,000 actors, 20 s windows; D at 10,000 pending, E with 2,000 due:"
                   " a fast try")
    p.add_argument("--child", choices=("tasks", "apscheduler", "raw"), help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--tracked", choices=("pgqueuer", "procrastinate"), help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=("adds", "burst"), help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tracked is not None:
        run_tracked_child(args.tracked, args.phase, json.loads(args.params), args.out)
        return 0
    if args.child is not None:
        asyncio.run(run_child(args.child, Plan.from_json(args.plan), args.out))
        return 0
    return run_orchestration(orchestrate(args))


def run_orchestration(orchestration: Coroutine[Any, Any, int]) -> int:
    """Run a bench's orchestration; a child that failed is one line, and no child outlives it."""
    try:
        return asyncio.run(orchestration)
    except ChildFailed as e:
        print(f"bench failed: {e}", file=sys.stderr)
        return 1
    finally:
        for pid in SPAWNED:  # only if a stop was interrupted (Ctrl-C twice, say)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
