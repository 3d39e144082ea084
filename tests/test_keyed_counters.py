"""The counters behind the keyed schedules' limits (migration 0006, sql/functions.sql): exact
under concurrent adds and removes, and equal to a recount of the pending rows after every way a
row stops or starts being pending (adds, replacing adds, removes, runs of ``Once``, retries used
up, retention, a ``kill -9`` of a real ``discord-actor run`` mid-work), and initialised by the
migration from the rows there were."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from servers import spawn_server, write_server_project

from discord_actor import NewSchedule, Once, RunContext, ScheduleLimitReached, actor
from discord_actor.config import RetryPolicy, ScheduleConfig, load_config
from discord_actor.db import Database, migrate, open_database
from discord_actor.db.migrations import MIGRATIONS_DIR
from discord_actor.db.store import Store
from discord_actor.keyed import Interval, Schedules
from discord_actor.testing.harness import ActorHarness, actor_config

NO_SCHEDULE = ScheduleConfig(type="none", timezone="UTC")
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

# A keyed row is pending while it has a slot, a trigger, a run in flight or a retry left and
# is not removed: the definition the counters must agree with ({pending} of sql/common.sql).
PENDING = """t.key IS NOT NULL AND t.removed_at IS NULL AND (t.next_run IS NOT NULL
    OR t.running > 0 OR t.manual_at IS NOT NULL
    OR EXISTS (SELECT 1 FROM S.retries p WHERE p.task_id = t.id))"""



def pending_sql(schema: str) -> str:
    """How many keyed rows of ``schema`` are pending, counted."""
    return f"SELECT count(*) FROM S.tasks t WHERE {PENDING}".replace("S.", f'"{schema}".')


async def counts(db: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[str, Any]:
    """The counters (rows plus changes not yet folded) and a recount of the pending rows, per
    actor and per (actor, owner), and the keyed rows whose counted flag is not what they are;
    all read in one snapshot (a server may be running meanwhile)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await counts(conn, schema)
    async with db.transaction(isolation="repeatable_read", readonly=True):
        return await _counts(db, schema)


async def _counts(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    async def q(sql: str) -> list[asyncpg.Record]:
        return await conn.fetch(sql.replace("S.", f'"{schema}".'))

    def nonzero(rows: list[asyncpg.Record], *key: str) -> dict[Any, int]:
        return {tuple(r[k] for k in key): int(r["n"]) for r in rows if r["n"]}

    return {
        "actor": nonzero(await q(
            "SELECT actor, sum(n) AS n FROM (SELECT actor, pending AS n FROM S.keyed_counts"
            " UNION ALL SELECT actor, delta FROM S.keyed_count_changes) x GROUP BY actor"),
            "actor"),
        "owner": nonzero(await q(
            "SELECT actor, owner, sum(n) AS n FROM (SELECT actor, owner, pending AS n"
            " FROM S.keyed_owner_counts UNION ALL SELECT actor, owner, delta"
            " FROM S.keyed_owner_count_changes) x GROUP BY actor, owner"), "actor", "owner"),
        "recount_actor": nonzero(await q(
            f"SELECT t.actor, count(*) AS n FROM S.tasks t WHERE {PENDING} GROUP BY t.actor"),
            "actor"),
        "recount_owner": nonzero(await q(
            f"SELECT t.actor, t.owner, count(*) AS n FROM S.tasks t WHERE {PENDING}"
            " AND t.owner IS NOT NULL GROUP BY t.actor, t.owner"), "actor", "owner"),
        "wrong_flag": [r["key"] for r in await q(
            f"SELECT t.key FROM S.tasks t WHERE t.key IS NOT NULL"
            f" AND t.counted IS DISTINCT FROM ({PENDING})")],
    }


async def assert_exact(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[str, Any]:
    """The counters equal the recount; returns what was read."""
    c = await counts(conn, schema)
    assert c["wrong_flag"] == []
    assert c["actor"] == c["recount_actor"]
    assert c["owner"] == c["recount_owner"]
    return c


seen: list[str | None] = []


@actor(platform="console")
async def remind(ctx: RunContext) -> None:
    seen.append(ctx.key)
    if ctx.payload.get("fail"):
        raise RuntimeError("asked to fail")


def harness(database: Database, **cfg: Any) -> ActorHarness:
    return ActorHarness(database, [(remind, actor_config("reminder", schedule=NO_SCHEDULE, **cfg))])


async def wide(database: Database, connections: int = 30) -> Database:
    """A second pool on the test's schema with a connection per concurrent caller, so that the
    callers really are concurrent in the database (the test pool has 4)."""
    return await open_database(
        replace(database.config, min_pool_size=connections, max_pool_size=connections),
        migrate=False,
    )


@pytest.mark.parametrize(
    ("limits", "owner_of"),
    [({"max_schedules": 5}, lambda i: f"user:{i}"),
     ({"max_schedules_per_owner": 5}, lambda i: "spammer")],
    ids=["max_schedules", "max_schedules_per_owner"],
)
async def test_30_concurrent_adds_against_a_limit_of_5_let_exactly_5_through(
    database: Database, limits: dict[str, int], owner_of: Any
) -> None:
    big = await wide(database)
    try:
        async with harness(database, **limits) as h:
            schedules = Schedules(Store(big.pool, database.config.schema), h.config, h.clock)
            soon = Once(at=START + timedelta(minutes=5))
            for round_ in range(3):  # again after removing them: the room is back, exactly
                results = await asyncio.gather(
                    *(schedules.add("reminder", key=f"r{round_}:{i}", schedule=soon,
                                    owner=owner_of(i)) for i in range(30)),
                    return_exceptions=True,
                )
                added = [r for r in results if not isinstance(r, BaseException)]
                assert len(added) == 5
                assert all(isinstance(r, ScheduleLimitReached) for r in results
                           if isinstance(r, BaseException))
                await assert_exact(big.pool, database.config.schema)
                for r in added:
                    assert await schedules.remove("reminder", r.key)
                await assert_exact(big.pool, database.config.schema)
    finally:
        await big.close()


async def test_concurrent_adds_and_removes_never_pass_the_limit(database: Database) -> None:
    limit = 10
    schema = database.config.schema
    big = await wide(database)
    try:
        async with harness(database, max_schedules=limit, max_schedules_per_owner=4) as h:
            schedules = Schedules(Store(big.pool, schema), h.config, h.clock)
            soon = Once(at=START + timedelta(hours=1))
            for i in range(limit):
                await schedules.add("reminder", key=f"old:{i}", schedule=soon, owner=f"u{i % 3}")
            rng = random.Random(7)
            calls: list[tuple[str, str]] = [("remove", f"old:{i}") for i in range(limit)]
            calls += [("add", f"new:{i}") for i in range(40)]
            rng.shuffle(calls)
            stop = asyncio.Event()
            most = 0

            async def watch() -> None:  # the pending rows, recounted all along
                nonlocal most
                while not stop.is_set():
                    n = await big.pool.fetchval(pending_sql(schema))
                    most = max(most, n)
                    await asyncio.sleep(0)

            async def call(kind: str, key: str) -> bool:
                await asyncio.sleep(rng.random() * 0.05)
                if kind == "remove":
                    return await schedules.remove("reminder", key)
                try:
                    await schedules.add("reminder", key=key, schedule=soon,
                                        owner=f"u{int(key.split(':')[1]) % 3}")
                    return True
                except ScheduleLimitReached:
                    return False

            watcher = asyncio.create_task(watch())
            done = await asyncio.gather(*(call(k, key) for k, key in calls))
            stop.set()
            await watcher
            removed = sum(ok for (k, _), ok in zip(calls, done, strict=True) if k == "remove")
            added = sum(ok for (k, _), ok in zip(calls, done, strict=True) if k == "add")
            assert removed == limit
            assert 0 < added <= removed  # it started full: only freed room was taken
            assert most <= limit
            c = await assert_exact(big.pool, schema)
            pending = c["actor"].get(("reminder",), 0)
            assert pending == limit - removed + added
            assert all(n <= 4 for n in c["owner"].values())
            # No room lost or made up: distinct owners fill the actor exactly to its limit.
            filled = 0
            for i in range(limit + 3):
                try:
                    await schedules.add("reminder", key=f"fill:{i}", schedule=soon, owner=f"f{i}")
                    filled += 1
                except ScheduleLimitReached:
                    pass
            assert pending + filled == limit
            await assert_exact(big.pool, schema)
    finally:
        await big.close()


async def test_counters_follow_every_way_a_row_stops_or_starts_being_pending(
    database: Database,
) -> None:
    schema = database.config.schema
    retry = RetryPolicy(attempts=2, backoff_seconds=60, max_backoff_seconds=60)
    async with harness(database, max_schedules=50, max_schedules_per_owner=3, retry=retry) as h:
        pool = database.pool
        soon = START + timedelta(minutes=5)
        # Adds, an unchanged add, a replacing add that changes the owner, add_many.
        await h.schedules.add("reminder", key="a", schedule=Once(at=soon), owner="ann")
        await h.schedules.add("reminder", key="a", schedule=Once(at=soon), owner="ann")
        await h.schedules.add("reminder", key="b", schedule=Once(at=soon), owner="ann")
        await h.schedules.add("reminder", key="b", schedule=Once(at=soon), owner="bob",
                              replace=True)
        await h.schedules.add_many("reminder", [
            NewSchedule("c", Once(at=soon), owner="bob"),
            NewSchedule("fails", Once(at=soon), payload={"fail": True}, owner="cat"),
            NewSchedule("feed", Interval(seconds=600), owner="cat"),
            NewSchedule("c", Once(at=soon + timedelta(minutes=1)), owner="bob"),  # last wins
        ])
        c = await assert_exact(pool, schema)
        assert c["actor"] == {("reminder",): 5}
        assert c["owner"] == {("reminder", "ann"): 1, ("reminder", "bob"): 2,
                              ("reminder", "cat"): 2}
        # A removal, then the key armed again.
        assert await h.schedules.remove("reminder", "a")
        assert not await h.schedules.remove("reminder", "a")
        await assert_exact(pool, schema)
        await h.schedules.add("reminder", key="a", schedule=Once(at=soon), owner="ann")
        # The once schedules run: no longer pending; the failing one waits for its retry.
        await h.tick(timedelta(minutes=5))
        c = await assert_exact(pool, schema)
        assert c["actor"] == {("reminder",): 3}  # c (a minute later), fails (a retry), feed
        # c runs, and the retry fails again: its retries used up, no longer pending.
        await h.tick(timedelta(minutes=1))
        c = await assert_exact(pool, schema)
        assert c["actor"] == {("reminder",): 1}
        assert c["owner"] == {("reminder", "cat"): 1}
        # A once that ran, armed again with replace and another owner; then its room reused.
        await h.schedules.add("reminder", key="fails", schedule=Once(at=soon + timedelta(days=1)),
                              owner="dan")
        await assert_exact(pool, schema)
        # Retention: the finished rows go, and the changes fold into the counters.
        await pool.execute(f'DELETE FROM "{schema}".runs')
        while await h.store.retention.prune_keyed_batch(START + timedelta(days=365), 100):
            pass
        assert await h.store.retention.fold_keyed_counts() > 0
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".keyed_count_changes') == 0
        assert await pool.fetchval(
            f'SELECT count(*) FROM "{schema}".keyed_owner_count_changes') == 0
        c = await assert_exact(pool, schema)
        assert c["actor"] == {("reminder",): 2}
        # Owners with nothing pending keep no counter row.
        assert {r["owner"] for r in await pool.fetch(
            f'SELECT owner FROM "{schema}".keyed_owner_counts')} == {"cat", "dan"}
        # The per-owner limit after all that: exactly its room left.
        for key in ("x", "y"):
            await h.schedules.add("reminder", key=key, schedule=Once(at=soon + timedelta(days=1)),
                                  owner="cat")
        with pytest.raises(ScheduleLimitReached, match="already has 3 pending"):
            await h.schedules.add("reminder", key="z", schedule=Once(at=soon + timedelta(days=1)),
                                  owner="cat")
        await assert_exact(pool, schema)


async def test_the_migration_counts_the_rows_there_are(
    tmp_path: Path, database: Database, database_url: str
) -> None:
    """A schema at version 5 with pending and finished keyed rows (one pending by its retry
    alone, one with a run in flight), then 0006 and later: counters equal to a recount."""
    schema = database.config.schema + "_v5"
    old = tmp_path / "migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) <= 5:
            shutil.copy(path, old / path.name)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema, directory=old, functions=None)
        s = f'"{schema}"'
        await conn.execute(f"INSERT INTO {s}.tasks (actor, schedule, schedule_hash)"
                           " VALUES ('reminder', '{}', 'h')")
        await conn.execute(f"""
            INSERT INTO {s}.tasks (actor, key, owner, schedule, schedule_hash, next_run, running,
                                   removed_at)
            SELECT 'reminder', 'k' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'o' || (i % 4) END,
                   '{{}}', 'h',
                   CASE WHEN i % 5 <> 0 THEN now() + interval '1 day' END,
                   CASE WHEN i = 10 THEN 1 ELSE 0 END,
                   CASE WHEN i % 7 = 0 THEN now() END
            FROM generate_series(1, 40) i""")
        await conn.execute(f"""
            INSERT INTO {s}.retries (task_id, scheduled_for, attempt, retry_at)
            SELECT id, now(), 2, now() FROM {s}.tasks WHERE key IN ('k5', 'k15')""")
        await migrate(conn, schema)
        c = await assert_exact(conn, schema)
        assert c["actor"][("reminder",)] == await conn.fetchval(pending_sql(schema))
        assert c["actor"][("reminder",)] > 20
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


# -- a chaos run: a real discord-actor run killed with SIGKILL mid-work ------------------------

CHAOS_ACTORS = """
import asyncio
from discord_actor import RunContext, actor

@actor(platform="none")
async def chaos(ctx: RunContext) -> None:
    await asyncio.sleep(ctx.payload.get("sleep", 0))
    if ctx.payload.get("fail"):
        raise RuntimeError("asked to fail")
"""


def chaos_project(tmp_path: Path, database_url: str, schema: str) -> Path:
    return write_server_project(tmp_path, {"chaos": CHAOS_ACTORS}, database_url, schema, """
        [[actors]]
        name = "chaos"
        module = "chaos"
        max_instances = 4
        max_schedules = 120
        max_schedules_per_owner = 12
        retry = { attempts = 2, backoff_seconds = 1, max_backoff_seconds = 1 }
        """)


@pytest.mark.slow
async def test_counters_match_a_recount_after_a_chaos_run_with_a_kill(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    config_path = chaos_project(tmp_path, database_url, db_schema)
    config = load_config(config_path)
    db = await open_database(replace(config.database, min_pool_size=1, max_pool_size=16))
    procs = []
    try:
        schedules = Schedules(Store(db.pool, db_schema), config)
        rng = random.Random(16)
        procs.append(spawn_server(config_path, tmp_path / "server0.log"))
        keys: list[str] = []
        outcomes: Counter[str] = Counter()

        async def add(i: int) -> None:
            now = datetime.now(UTC)
            kind = rng.random()
            if kind < 0.1:
                schedule: Any = Interval(seconds=1 + rng.random())
            else:
                schedule = Once(at=now + timedelta(seconds=rng.random() * 4))
            payload = {"sleep": rng.choice([0, 0, 0.2, 1.5]), "fail": rng.random() < 0.3}
            key = f"k{rng.randrange(300)}"
            try:
                await schedules.add("chaos", key=key, schedule=schedule, payload=payload,
                                    owner=f"user:{rng.randrange(12)}", replace=rng.random() < 0.5)
                keys.append(key)
                outcomes["added"] += 1
            except ScheduleLimitReached:
                outcomes["limit"] += 1
            except Exception as e:  # a conflict without replace
                outcomes[type(e).__name__] += 1

        async def remove() -> None:
            if keys:
                outcomes["removed"] += await schedules.remove("chaos", rng.choice(keys))

        async def burst(n: int) -> None:
            await asyncio.gather(*(add(i) if rng.random() < 0.8 else remove() for i in range(n)))

        deadline = time.monotonic() + 6
        killed = False
        while time.monotonic() < deadline:
            await burst(20)
            await assert_exact(db.pool, db_schema)  # meanwhile too, not only at the end
            if not killed and time.monotonic() > deadline - 3:
                running = await db.pool.fetchval(
                    f"SELECT count(*) FROM {db_schema}.runs WHERE status = 'running'")
                if running:
                    procs[0].send_signal(signal.SIGKILL)  # mid-work: runs in flight
                    procs[0].wait()
                    killed = True
                    procs.append(spawn_server(config_path, tmp_path / "server1.log"))
            await asyncio.sleep(0.05)
        assert killed, "no run was in flight to kill"
        # The interval schedules are removed and everything else finishes (the dead process's
        # runs are abandoned, and retried by the new one if they have attempts left).
        for r in await db.pool.fetch(
                f"SELECT key FROM {db_schema}.tasks WHERE key IS NOT NULL"
                f" AND removed_at IS NULL AND schedule->>'type' = 'interval'"):
            await schedules.remove("chaos", r["key"])
        settle = time.monotonic() + 20
        while time.monotonic() < settle:
            left = await db.pool.fetchval(pending_sql(db_schema))
            if not left:
                break
            await asyncio.sleep(0.3)
        c = await assert_exact(db.pool, db_schema)
        assert c["actor"] == {}, c
        abandoned = await db.pool.fetchval(
            f"SELECT count(*) FROM {db_schema}.runs WHERE status = 'abandoned'")
        assert abandoned >= 1
        assert outcomes["added"] > 50 and outcomes["removed"] > 0, outcomes
        assert await Store(db.pool, db_schema).retention.fold_keyed_counts() >= 0
        await assert_exact(db.pool, db_schema)
        procs[-1].send_signal(signal.SIGINT)
        assert procs[-1].wait(timeout=30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        await db.close()
