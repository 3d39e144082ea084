"""Start-up with 3,000 actors: from process start to the first recorded run and to all first runs.

Writes an ``actor_server.toml`` with N interval actors (platform "none") and one actors module
to a temporary directory, then starts a child process that does what ``discord-actor run`` does,
through the library API: INFO logging to stderr (here a file), ``load_config``, ``load_actors``,
``open_database`` (embedded PostgreSQL under the temporary directory), ``Runtime.start``. The
time runs from just before the child is spawned (interpreter start-up and imports count) to
the first run recorded in the database and to the first run of every actor. Then the child
shuts down gracefully.

Two starts: a cold one (new data directory: initdb, migrations, N new task rows) and a restart
on the same data directory once every actor's next slot has come (catch_up = "latest").
Target: first runs within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

INTERVAL = 10  # seconds; short enough that the restart finds every actor due again

ACTOR_MODULE = '''"""A no-op actor for the start-up benchmark: counts its runs in its state."""

from discord_actor import RunContext, actor


@actor(platform="none")
async def noop(ctx: RunContext) -> None:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
'''


def write_project(directory: Path, actors: int) -> Path:
    (directory / "actors").mkdir(parents=True, exist_ok=True)
    (directory / "actors" / "noop.py").write_text(ACTOR_MODULE)
    lines = [
        "[server]",
        'actors_dir = "actors"',
        "",
        "[database]",
        'url = "${DATABASE_URL:-}"',
        'data_dir = "pgdata"',
        'schema = "bench_startup"',
        "",
    ]
    for i in range(actors):
        lines += [
            "[[actors]]",
            f'name = "actor{i:04d}"',
            'module = "noop"',
            'platform = "none"',
            "[actors.schedule]",
            'type = "interval"',
            f"seconds = {INTERVAL}",
            "",
        ]
    path = directory / "actor_server.toml"
    path.write_text("\n".join(lines))
    return path


# -- the child: `discord-actor run`, in-process, stopping once every actor has run --------------


def child(config_path: Path, fresh: bool, limit: float, profile: int, quiet: bool) -> None:
    import logging

    stamps: dict[str, float] = {}
    if quiet:
        logging.disable(logging.INFO)  # --no-log: WARNING and above only
    from discord_actor.logs import configure_logging

    configure_logging(logging.INFO)  # as `discord-actor run` does

    from discord_actor.config import load_config
    from discord_actor.plugins import load_actors

    stamps["imported"] = time.time()
    config = load_config(config_path)
    stamps["config_loaded"] = time.time()
    actors = load_actors(config)
    stamps["actors_loaded"] = time.time()
    if profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, serve(config, actors, fresh, limit, stamps))
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(profile)
            print(out.getvalue())
    else:
        result = asyncio.run(serve(config, actors, fresh, limit, stamps))
    stamps["exited"] = time.time()
    print(json.dumps({"stamps": stamps, **result}), flush=True)


async def serve(
    config: Any, actors: dict[str, Any], fresh: bool, limit: float, stamps: dict[str, float]
) -> dict[str, Any]:
    import asyncpg

    from discord_actor.db import open_database, resolve_url
    from discord_actor.db.store import Finished, Outcome
    from discord_actor.runtime import Runtime, default_platforms

    url = resolve_url(config.database)
    if fresh and url:  # an external database: start from an empty schema
        conn = await asyncpg.connect(url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{config.database.schema}" CASCADE')
        await conn.close()
    database = await open_database(config.database)
    stamps["database_open"] = time.time()
    try:
        runtime = Runtime(config, database, actors, platforms=default_platforms())
        seen: set[int] = set()
        all_done = asyncio.Event()
        store_finish_many = runtime.store.runs.finish_many

        async def recording_finish(outcomes: list[tuple[int, Outcome]]) -> list[Finished | None]:
            results = await store_finish_many(outcomes)
            for (_, outcome), finished in zip(outcomes, results, strict=True):
                if finished is not None and outcome.status == "succeeded":
                    stamps.setdefault("first_run", time.time())
                    seen.add(finished.task.id)
            if len(seen) == len(actors):
                stamps.setdefault("all_runs", time.time())
                all_done.set()
            return results

        runtime.store.runs.finish_many = recording_finish  # type: ignore[method-assign]
        stamps["runtime_start"] = time.time()
        await runtime.start()
        stamps["runtime_started"] = time.time()
        try:
            async with asyncio.timeout(limit):
                await all_done.wait()
        except TimeoutError:
            pass
        recorded = await database.pool.fetchval(
            f'SELECT count(DISTINCT task_id) FROM "{database.schema}".runs'
            " WHERE status = 'succeeded' AND instance_id = $1",
            runtime.instance_id,
        )
        version = await database.pool.fetchval("SHOW server_version")
        where = "embedded" if database.server is not None else "DATABASE_URL"
        stamps["stop"] = time.time()
        await runtime.stop()
    finally:
        await database.close()
    stamps["closed"] = time.time()
    return {"actors_run": len(seen), "recorded_in_db": recorded,
            "postgres": f"{version} ({where})"}


# -- the parent ---------------------------------------------------------------------------------


def start_child(
    config_path: Path, fresh: bool, args: argparse.Namespace, log: Path, profile: int = 0
) -> dict[str, Any]:
    limit = args.limit
    command = [sys.executable, __file__, "--child", str(config_path), "--limit", str(limit),
               "--profile", str(profile)]
    if fresh:
        command.append("--fresh")
    if args.no_log:
        command.append("--no-log")
    with log.open("a") as stderr:
        spawned = time.time()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                              timeout=limit + 60, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"child failed with exit code {done.returncode}:\n{tail}")
    *printed, last = done.stdout.strip().splitlines()
    if printed:
        print("\n".join(printed))
    result: dict[str, Any] = json.loads(last)
    result["spawned"] = spawned
    return result


def report(label: str, result: dict[str, Any], actors: int, target: float) -> float | None:
    s, t0 = result["stamps"], result["spawned"]

    def at(key: str) -> str:
        return f"{s[key] - t0:6.2f} s" if key in s else "   never"

    print(f"{label}:")
    print(f"  imports done            {at('imported')}")
    print(f"  config loaded           {at('config_loaded')}  ({actors} actors)")
    print(f"  actors loaded           {at('actors_loaded')}")
    print(f"  database open           {at('database_open')}  (embedded server up, migrated)")
    print(f"  Runtime.start returned  {at('runtime_started')}  (registered, reconciled, synced)")
    print(f"  first run recorded      {at('first_run')}")
    print(f"  all first runs recorded {at('all_runs')}  ({result['actors_run']} actors ran;"
          f" {result['recorded_in_db']} in the runs table)")
    if "all_runs" in s and "runtime_started" in s:
        rate = actors / (s["all_runs"] - s["runtime_started"])
        print(f"  scheduler throughput    {rate:,.0f} first runs/s after start()")
    stop = s["closed"] - s["stop"]
    print(f"  shut down, closed       {at('closed')}  (graceful stop took {stop:.2f} s)")
    first = s["first_run"] - t0 if "first_run" in s else None
    ok = first is not None and first <= target
    print(f"  -> first run within {target:g} s: {'yes' if ok else 'NO'};"
          f" all first runs within {target:g} s:"
          f" {'yes' if 'all_runs' in s and s['all_runs'] - t0 <= target else 'NO'}")
    return first


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    import platform

    from common import cpu_model

    return (f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} cores | "
            f"Python {platform.python_version()}")


def parent(args: argparse.Namespace) -> int:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="discord_actor-bench-startup-") as tmp:
        config_path = write_project(Path(tmp), args.actors)
        log = Path(tmp) / "run.log"
        cold = start_child(config_path, True, args, log)
        print(f"machine: {machine()} | PostgreSQL {cold['postgres']}")
        print(f"{args.actors} interval actors (every {INTERVAL} s, platform none), defaults"
              f" otherwise (max_concurrent_runs 32, max_pool_size 10); "
              + ("logging at WARNING (--no-log)" if args.no_log else
                 "INFO logging to a file, as `discord-actor run` logs to stderr"))
        report("cold start (new data directory)", cold, args.actors, args.target)
        # Every actor's next slot is INTERVAL s after the cold start's reconcile: wait for it.
        wait = cold["stamps"]["runtime_start"] + INTERVAL + 0.5 - time.time()
        if wait > 0:
            time.sleep(wait)
        warm = start_child(config_path, False, args, log, args.profile)
        report("restart (same data directory, every actor due)", warm, args.actors, args.target)
        lines = len(log.read_text().splitlines())
        print(f"log lines written by both starts: {lines:,}")
    print(f"total bench time {time.time() - started:.1f} s")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", type=int, default=3000, help="configured actors (3000)")
    p.add_argument("--target", type=float, default=10.0, help="seconds to the first runs (10)")
    p.add_argument("--limit", type=float, default=60.0, help="give up waiting after (60 s)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="run the restart under cProfile and print its top N functions")
    p.add_argument("--no-log", action="store_true",
                   help="log at WARNING instead of INFO (to see what logging costs)")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.child, args.fresh, args.limit, args.profile, args.no_log)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
