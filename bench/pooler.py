"""discord-actor behind a real PgBouncer in transaction mode, against the server itself.

Three sides, one after another on one embedded PostgreSQL, each with two ``discord-actor run``
processes and 1,000 keyed ``Interval`` schedules every 10 s (slots spread evenly over the 10 s):

- ``direct``: ``url`` is the server (``pooler = "none"``, asyncpg's statement cache on);
- ``pooler``: ``url`` is PgBouncer (``pool_mode = transaction``, ``default_pool_size = 4``),
  ``pooler = "transaction"``, no ``direct_url``: no LISTEN, the processes poll;
- ``pooler + direct_url``: the same, with ``direct_url`` the server (LISTEN and migrations).

For each: slots missed and run twice in the steady window, start lateness (``started_at -
scheduled_for``) p50 / p99, error lines in the processes' and PgBouncer's logs, and how long a
``discord-actor trigger`` from the command line takes to start its run (5 triggers, 1 s polls).

    .venv/bin/python bench/pooler.py            # 40 s per side
    .venv/bin/python bench/pooler.py --quick    # 15 s per side, 300 schedules

Needs Debian's ``pgbouncer`` (apt-get install pgbouncer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import bench_database, machine_line
from pgbouncer import INSTALL_HINT, PgBouncer, pgbouncer_binary

from discord_actor import Interval, NewSchedule, Schedules
from discord_actor.config import load_config
from discord_actor.db import Database, migrate
from discord_actor.db.store import Store

SCHEMA = "bench_pooler"
EVERY = 10.0
WARMUP = 12.0  # seconds before the steady window (start, first slots)
TRIGGERS = 5

ACTORS = '''
from discord_actor import RunContext, actor

@actor(platform="none")
async def remind(ctx: RunContext) -> None:
    pass

@actor(platform="none")
async def manual(ctx: RunContext) -> None:
    pass
'''


@dataclass
class Side:
    name: str
    url: str
    database: str  # extra [database] lines
    expected: int = 0
    missed: int = 0
    duplicates: int = 0
    late: tuple[float, float] = (0.0, 0.0)
    errors: int = 0
    pgbouncer_warnings: int = 0
    trigger: tuple[float, float] = (0.0, 0.0)  # median, max seconds


def write_project(directory: Path, side: Side) -> Path:
    (directory / "actors").mkdir(parents=True, exist_ok=True)
    (directory / "actors" / "jobs.py").write_text(ACTORS)
    path = directory / "actor_server.toml"
    path.write_text(f"""
[server]
actors_dir = "actors"
poll_interval_seconds = 1.0
shutdown_grace_seconds = 2

[database]
url = "{side.url}"
schema = "{SCHEMA}"
max_pool_size = 6
{side.database}

[[actors]]
name = "remind"
module = "jobs:remind"
max_schedules = 100000

[[actors]]
name = "manual"
module = "jobs:manual"
schedule = {{ type = "interval", seconds = 86400 }}
""")
    return path


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "discord_actor.cli", "--config",
                                 str(config), "run"], stdout=subprocess.DEVNULL, stderr=stderr)


def cli(config: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "discord_actor.cli", "--config", str(config), *args],
                   check=True, capture_output=True, timeout=60)


async def measure(side: Side, database: Database, work: Path, schedules: int,
                  seconds: float, bouncer: PgBouncer | None) -> None:
    await database.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    async with database.pool.acquire() as conn:
        await migrate(conn, SCHEMA)
    directory = work / side.name.replace(" ", "_").replace("+", "")
    config = write_project(directory, side)
    first = datetime.now(UTC) + timedelta(seconds=4)
    step = EVERY / schedules
    items = [NewSchedule(f"k:{i}", Interval(seconds=EVERY,
                                            start_at=first + timedelta(seconds=step * i)))
             for i in range(schedules)]
    await Schedules(Store(database.pool, SCHEMA), load_config(config)).add_many("remind", items)
    logs = [directory / f"server{i}.log" for i in range(2)]
    procs = [spawn(config, log) for log in logs]
    try:
        await asyncio.sleep(WARMUP)
        window_start = datetime.now(UTC)
        await asyncio.sleep(seconds)
        window_end = datetime.now(UTC)
        waits = []
        for _ in range(TRIGGERS):
            before = await database.pool.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.runs r JOIN {SCHEMA}.tasks t ON t.id = r.task_id"
                " WHERE t.actor = 'manual' AND r.trigger = 'manual'")
            sent = time.monotonic()
            await asyncio.to_thread(cli, config, "trigger", "manual")
            while True:
                n = await database.pool.fetchval(
                    f"SELECT count(*) FROM {SCHEMA}.runs r JOIN {SCHEMA}.tasks t"
                    " ON t.id = r.task_id WHERE t.actor = 'manual' AND r.trigger = 'manual'")
                if n > before or time.monotonic() - sent > 10:
                    break
                await asyncio.sleep(0.01)
            waits.append(time.monotonic() - sent)
            await asyncio.sleep(0.3)
        side.trigger = (statistics.median(waits), max(waits))
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    rows = await database.pool.fetch(
        f"SELECT r.task_id, r.scheduled_for, count(*) AS n,"
        f" min(extract(epoch FROM r.started_at - r.scheduled_for))::float8 AS late"
        f" FROM {SCHEMA}.runs r JOIN {SCHEMA}.tasks t ON t.id = r.task_id"
        f" WHERE t.actor = 'remind' AND r.trigger = 'schedule' AND r.status <> 'skipped'"
        f" AND r.scheduled_for >= $1 AND r.scheduled_for < $2 GROUP BY 1, 2", window_start,
        window_end)
    side.expected = round(schedules * (window_end - window_start).total_seconds() / EVERY)
    side.missed = max(side.expected - len(rows), 0)
    side.duplicates = sum(r["n"] - 1 for r in rows)
    lateness = sorted(r["late"] * 1000 for r in rows)
    if lateness:
        side.late = (statistics.median(lateness), lateness[int(0.99 * (len(lateness) - 1))])
    text = "".join(log.read_text(errors="replace") for log in logs)
    side.errors = sum(1 for line in text.splitlines()
                      if " ERROR " in line or "Traceback" in line or "Error:" in line)
    if bouncer is not None:
        side.pgbouncer_warnings = sum(1 for line in bouncer.log.splitlines()
                                      if " WARNING " in line or " ERROR " in line)


async def orchestrate(args: argparse.Namespace) -> int:
    if pgbouncer_binary() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    schedules, seconds = (300, 15.0) if args.quick else (args.schedules, args.seconds)
    async with bench_database(SCHEMA) as database:
        print(await machine_line(database))
        bouncer = PgBouncer(database.url, pool_mode="transaction", default_pool_size=4).start()
        try:
            pooled = 'pooler = "transaction"'
            sides = [
                Side("direct", database.url, ""),
                Side("pooler", bouncer.url, pooled),
                Side("pooler + direct_url", bouncer.url,
                     f'{pooled}\ndirect_url = "{database.url}"'),
            ]
            with tempfile.TemporaryDirectory(prefix="discord_actor-bench-pooler-") as tmp:
                for side in sides:
                    await measure(side, database, Path(tmp), schedules, seconds,
                                  None if side.name == "direct" else bouncer)
        finally:
            bouncer.stop()
    print(f"2 processes, {schedules:,} keyed Interval schedules every {EVERY:g} s, a steady "
          f"window of {seconds:g} s after {WARMUP:g} s; PgBouncer {pool_mode()} "
          "default_pool_size = 4; poll_interval_seconds = 1")
    print(f"{'side':<22}{'slots':>7}{'missed':>8}{'twice':>7}{'late p50 / p99 ms':>20}"
          f"{'errors':>8}{'pgbouncer warn':>16}{'trigger median / max s':>25}")
    for s in sides:
        print(f"{s.name:<22}{s.expected:>7,}{s.missed:>8}{s.duplicates:>7}"
              f"{s.late[0]:>11.1f} / {s.late[1]:<6.1f}{s.errors:>8}{s.pgbouncer_warnings:>16}"
              f"{s.trigger[0]:>16.2f} / {s.trigger[1]:.2f}")
    return 0


def pool_mode() -> str:
    version = subprocess.run([pgbouncer_binary() or "pgbouncer", "--version"],
                             capture_output=True, text=True).stdout.split("\n")[0]
    return f"{version.removeprefix('PgBouncer ')} (pool_mode = transaction)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 schedules, 15 s per side")
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=40.0, help="steady window per side")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="discord_actor-xdg-"))
    return asyncio.run(orchestrate(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
