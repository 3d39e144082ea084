"""Peers: the same scheduled no-op workload through discord.ext.tasks, APScheduler 3 and
discord-actor, side by side, in one invocation.

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

Run from the repository root: ``.venv/bin/python bench/peers.py`` (about 10 minutes),
``--quick`` for a short try, ``--workloads A,B`` to select.
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

import asyncpg
import psutil
from common import machine_line

from discord_actor.config import DatabaseConfig
from discord_actor.db import Database, open_database

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
    (directory / "actors").mkdir(parents=True, exist_ok=True)
    write_text(directory / "actors" / "noop.py", ACTOR_MODULE)
    lines = [
        "[server]",
        'actors_dir = "actors"',
        "",
        "[database]",
        'url = "${DATABASE_URL:-}"',
        'data_dir = "pgdata"',
        f'schema = "{SCHEMA}"',
        "",
    ]
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
    unknown = [k for k in chosen if k not in every]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}: choose from A, B, C")
    return [every[k] for k in chosen]


def shown_command() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    return shlex.join([exe, *sys.argv])


async def orchestrate(args: argparse.Namespace) -> int:
    chosen = workloads(args)
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
        bench = Bench(tmp, await open_database(cfg, migrate=False), env)
        try:
            print(f"machine: {await machine_line(bench.database)}")
            print(f"command: {shown_command()}")
            print("discord-actor: `discord-actor run --config actor_server.toml`, defaults"
                  " (max_concurrent_runs 32, max_pool_size 10), INFO log to a file")
            for w in chosen:
                await run_workload(bench, w)
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
    p.add_argument("--workloads", default="A,B,C", help="which workloads, e.g. A,B (A,B,C)")
    p.add_argument("--actors", type=int, help="actors in every workload (A 10000, B 3000,"
                   " C 10000)")
    p.add_argument("--warmup", type=float, help="A: seconds before the window (10)")
    p.add_argument("--seconds", type=float, help="A: the measured window in seconds (60)")
    p.add_argument("--quick", action="store_true",
                   help="2,000 actors, 20 s windows: a fast try")
    p.add_argument("--child", choices=("tasks", "apscheduler", "raw"), help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
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
