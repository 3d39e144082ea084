"""A burst of Discord posts at one instant, against the fake Discord with Discord's limits.

Real ``discord-actor run`` processes (every setting at its default but the endpoints) post to a
wire-level fake Discord in this process that enforces Discord's limits with the real headers
(``DiscordLimits()``: 50 requests per second per token, 5 messages per 5 s per channel, nonces
de-duplicated for 5 minutes). The embedded PostgreSQL under a temporary directory (or
``DATABASE_URL``) is started here and shared with the children.

The workload: N keyed ``Once`` schedules (600) due at the same instant, each posting one message
to its channel (120 channels, so 5 per channel), ``retry = { attempts = 3 }``, and beside them
a 1 s interval actor (platform ``none``) whose lateness shows whether the burst starves it.
Scenarios: ``plain``; ``drop``, 10 % of the posts' connections dropped after Discord made the
message; ``502``, 10 % answered 502 after the message was made; ``kill`` (two processes or
more), the busier process (the most runs running) killed with SIGKILL once a third of the keys
are in; ``refused``, every fifth channel answers 403 (Missing Access) to every post.

Figures per scenario: keys delivered and duplicated (messages beyond one per key), keys whose
run ended failed, global 429s, the most requests Discord got in one second, invalid requests,
the last message after the slot, the sustained rate (posts over the time from the first to the
last), and the 1 s actor's start lateness p50 / p99 / max and its slots not run, over the burst.
``kill`` adds when the kill came and the longest pause between two messages after it (the other
process carries on within its lease); ``refused``, the keys refused, those whose status names
the reason, their attempts beyond the first, and the refused channels (each may cost Discord one
invalid request: ``invalid requests`` should be no more).

Run from the repository root: ``.venv/bin/python bench/discord_burst.py`` (about 2 minutes);
``--scenarios plain,drop``, ``--posts``, ``--channels``, ``--processes`` to vary it;
``--code DIR`` runs the children on another checkout's ``discord_actor`` (a before/after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import bench_database, machine_line

from discord_actor import Once
from discord_actor.config import load_config
from discord_actor.db import Database, open_database
from discord_actor.db.store import Store
from discord_actor.keyed import NewSchedule, Schedules
from discord_actor.testing.fake_discord import DiscordLimits, FakeDiscord

BURST_PY = '''
from discord_actor import RunContext, actor


@actor(platform="discord")
async def burst(ctx: RunContext) -> None:
    await ctx.post(f"burst {ctx.key}")


@actor(platform="none")
async def tick(ctx: RunContext) -> None:
    pass
'''


def project(root: Path, fake: FakeDiscord, database: Database, schema: str) -> Path:
    (root / "actors").mkdir(parents=True)
    (root / "actors" / "burst.py").write_text(BURST_PY)
    path = root / "actor_server.toml"
    path.write_text(textwrap.dedent(f"""
        [server]
        shutdown_grace_seconds = 5

        [database]
        url = {json.dumps(database.url)}
        schema = {json.dumps(schema)}

        [discord]
        api_base_url = {json.dumps(fake.api_url)}
        gateway_url = {json.dumps(fake.gateway_url)}
        intents = ["guilds"]
        command_guild_ids = [{fake.guild.id}]

        [[actors]]
        name = "burst"
        module = "burst:burst"
        platform = "discord"
        retry = {{ attempts = 3 }}

        [[actors]]
        name = "tick"
        module = "burst:tick"
        schedule = {{ type = "interval", seconds = 1 }}
        """))
    return path


def spawn(directory: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``discord-actor run`` in ``directory``, its output in ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "discord_actor.cli", "run"], cwd=directory, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )


async def pending(database: Database, schema: str) -> int:
    """Runs running and retries waiting in ``schema``."""
    count: int = await database.pool.fetchval(
        f'SELECT (SELECT count(*) FROM "{schema}".retries)'
        f' + (SELECT count(*) FROM "{schema}".runs r JOIN "{schema}".tasks t'
        " ON t.id = r.task_id WHERE r.status = 'running' AND t.key IS NOT NULL)")
    return count


async def kill_busier(
    database: Database, schema: str, procs: list[subprocess.Popen[bytes]]
) -> datetime:
    """SIGKILL the process with the most runs running (its instance id names its pid)."""
    rows = await database.pool.fetch(
        f'SELECT instance_id, count(*) AS n FROM "{schema}".runs WHERE status = $1'
        " GROUP BY 1 ORDER BY 2 DESC", "running")
    pids = {p.pid: p for p in procs}
    for row in rows:
        pid = int(row["instance_id"].split(":")[1])
        if pid in pids:
            pids[pid].kill()
            print(f"  kill: SIGKILL to pid {pid}, {row['n']} runs running", flush=True)
            break
    else:
        procs[0].kill()
    return datetime.now(UTC)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def scenario(
    name: str, database: Database, args: argparse.Namespace, root: Path
) -> dict[str, str]:
    schema = f"burst_{name}"
    await database.pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    async with FakeDiscord(heartbeat_interval_ms=5000, limits=DiscordLimits()) as fake:
        channels = [
            fake.add_channel(fake.guild, f"c{i}", dispatch=False) for i in range(args.channels)
        ]
        if name == "drop":
            fake.disconnect_after_write("POST /channels/*/messages", count=10**9, fraction=0.1)
        elif name == "502":
            fake.fail_after_write("POST /channels/*/messages", 502, count=10**9, fraction=0.1)
        refusing = channels[::5] if name == "refused" else []
        for channel in refusing:
            fake.fail_next(f"POST /channels/{channel.id}/messages", 403, count=10**9,
                           code=50001, message="Missing Access")
        config_path = project(root / name, fake, database, schema)
        env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "DATABASE_URL")}
        env |= {"PYTHONUNBUFFERED": "1", "DISCORD_TOKEN": fake.token}
        if args.code:
            env["PYTHONPATH"] = args.code  # an absolute path
        logs = [root / name / f"server{i}.log" for i in range(args.processes)]
        procs = [spawn(config_path.parent, env, log) for log in logs]
        try:
            deadline = time.monotonic() + 90
            while not all("connected to Discord as" in log.read_text() for log in logs):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise SystemExit(f"{name}: a server did not start:\n"
                                     + logs[0].read_text()[-3000:])
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # the start-up requests leave Discord's window
            config = load_config(config_path)
            own = await open_database(replace(config.database, url=database.url),
                                      migrate=False)
            try:
                slot = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
                await Schedules(Store(own.pool, own.schema), config).add_many(
                    "burst",
                    [NewSchedule(f"k{i}", Once(at=slot), None, channels[i % len(channels)].id,
                                 None) for i in range(args.posts)],
                )
            finally:
                await own.close()
            # Until every key is in and no run or retry is pending (a late duplicate would come
            # from one); or until nothing new arrived for 40 s (keys whose runs failed).
            last_change, seen = time.monotonic(), 0
            finished_at: float | None = None
            killed_at: datetime | None = None
            while True:
                now = time.monotonic()
                count = len(fake.sent_messages())
                if name == "kill" and killed_at is None and count >= args.posts // 3:
                    killed_at = await kill_busier(database, schema, procs)
                if count != seen:
                    last_change, seen = now, count
                keys = {m.content for m in fake.sent_messages()}
                if len(keys) >= args.posts - len(refusing) * args.posts // len(channels) \
                        and finished_at is None:
                    finished_at = now
                if finished_at is not None and now - finished_at > 2:
                    if not await pending(database, schema):
                        break  # every key in, and no retry pending: nothing more comes
                if now - last_change > 40 or now - deadline > 300:
                    break
                await asyncio.sleep(0.25)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    await asyncio.to_thread(p.wait, 30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        sent = fake.sent_messages()
        contents = [m.content for m in sent]
        keys = set(contents)
        last = max((m.timestamp for m in sent), default=slot)
        first = min((m.timestamp for m in sent), default=slot)
        drain = (last - slot).total_seconds()
        figures = {
            "keys delivered / duplicated": f"{len(keys)} / {len(contents) - len(keys)}",
            "global 429s": str(fake.global_429s),
            "most requests in one second": str(fake.peak_requests_per_second),
            "invalid requests": str(fake.invalid_requests),
            "last message after the slot": f"{drain:.1f} s",
            "sustained posts/s": f"{len(contents) / max(0.001, (last - first).total_seconds()):.1f}"
            if contents else "-",
        }
    failed = await database.pool.fetchval(
        f'SELECT count(*) FROM "{schema}".tasks t WHERE t.actor = $1 AND t.key IS NOT NULL'
        f' AND NOT EXISTS (SELECT 1 FROM "{schema}".runs r WHERE r.task_id = t.id'
        " AND r.status = 'succeeded')", "burst")
    statuses = await database.pool.fetch(
        f'SELECT t.last_status, count(*) AS n FROM "{schema}".tasks t WHERE t.actor = $1'
        " AND t.key IS NOT NULL GROUP BY 1", "burst")
    print(f"  {name}: keyed tasks by last status: "
          + ", ".join(f"{r['last_status']} {r['n']}" for r in statuses), flush=True)
    figures["keys whose run ended failed"] = str(failed)
    if name == "kill" and killed_at is not None:
        after = sorted(m.timestamp for m in sent if m.timestamp >= killed_at)
        starts = [killed_at, *after[:-1]]
        gaps = [(b - a).total_seconds() for a, b in zip(starts, after, strict=True)]
        figures["killed (s after the slot)"] = f"{(killed_at - slot).total_seconds():.1f} s"
        figures["longest pause after the kill"] = f"{max(gaps, default=0.0):.2f} s"
    if name == "refused":
        refused = await database.pool.fetch(
            f'SELECT t.key, count(r.id) AS attempts, bool_or(r.error_message LIKE'
            f" '%Missing Access%') AS says_why FROM \"{schema}\".tasks t"
            f' JOIN "{schema}".runs r ON r.task_id = t.id WHERE t.actor = $1'
            " AND t.key IS NOT NULL AND t.last_status = 'failed' GROUP BY t.key", "burst")
        figures["keys refused / showing the reason"] = (
            f"{len(refused)} / {sum(1 for r in refused if r['says_why'])}")
        figures["attempts beyond the first"] = str(sum(r["attempts"] - 1 for r in refused))
        figures["refused channels"] = str(len(refusing))
    rows = await database.pool.fetch(
        f'SELECT r.scheduled_for, r.started_at, r.status FROM "{schema}".runs r'
        f' JOIN "{schema}".tasks t ON t.id = r.task_id WHERE t.actor = $1'
        " AND r.scheduled_for >= $2 AND r.scheduled_for < $3", "tick", slot,
        slot + timedelta(seconds=max(1.0, drain)))
    late = [(r["started_at"] - r["scheduled_for"]).total_seconds() for r in rows
            if r["status"] == "succeeded"]
    # The 1 s actor's slots within the drain: fixed-rate from its first slot, so their phase
    # against the burst's slot is that of any run of it.
    first_tick = await database.pool.fetchval(
        f'SELECT min(r.scheduled_for) FROM "{schema}".runs r JOIN "{schema}".tasks t'
        " ON t.id = r.task_id WHERE t.actor = $1", "tick")
    phase = 0.0 if first_tick is None else (first_tick - slot).total_seconds() % 1.0
    expected = max(1, math.ceil(max(1.0, drain) - phase))
    p50, p99, worst = percentile(late, 0.5), percentile(late, 0.99), max(late, default=0.0)
    figures["1 s actor lateness p50 / p99 / max"] = f"{p50:.2f} / {p99:.2f} / {worst:.2f} s"
    figures["1 s actor slots not run"] = f"{expected - len(late)} of {expected}"
    await database.pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="plain,drop,502")
    parser.add_argument("--posts", type=int, default=600)
    parser.add_argument("--channels", type=int, default=120)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--code", help="a checkout whose discord_actor the servers run")
    parser.add_argument("--logs", help="keep the servers' projects and logs in this directory")
    args = parser.parse_args()
    if args.code:
        args.code = os.path.abspath(args.code)
    return args


async def main(args: argparse.Namespace) -> None:
    async with bench_database(schema="bench_burst") as database:
        print(await machine_line(database))
        print(f"{args.posts} posts due at one instant over {args.channels} channels,"
              f" {args.processes} process(es)" + (f", servers on {args.code}" if args.code else ""))
        with tempfile.TemporaryDirectory(prefix="discord_actor-burst-") as tmp:
            results = {}
            for name in args.scenarios.split(","):
                results[name] = await scenario(name, database, args, Path(args.logs or tmp))
                print(f"  {name}: done", flush=True)
    names = list(results)
    rows = list(dict.fromkeys(row for figures in results.values() for row in figures))
    width = max(len(r) for r in rows)
    print(f"| {'':{width}} | " + " | ".join(names) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("---" for _ in names) + "|")
    for row in rows:
        print(f"| {row:{width}} | " + " | ".join(results[n].get(row, "-") for n in names) + " |")


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
