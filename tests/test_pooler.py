"""discord-actor behind a real PgBouncer in transaction mode, as Supabase, Neon, Railway, Render
and Heroku hand it out: every feature through the pooler, migrations by processes starting
together, notifications through ``direct_url``, and the listener's self-probe catching a
``url`` that is a pooler although the configuration does not say so.

Needs Debian's ``pgbouncer`` (``.ci/run`` installs it); without it these tests skip, saying how
to get it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pgbouncer import INSTALL_HINT, PgBouncer, free_port, pgbouncer_binary
from servers import fetch, spawn_server, wait_for_text, write_server_project

from discord_actor.config import DatabaseConfig
from discord_actor.db import open_database
from discord_actor.db.migrations import available_migrations

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(pgbouncer_binary() is None, reason=INSTALL_HINT),
]

ALL_MIGRATIONS = [m.label for m in available_migrations()]

ACTORS = """
from discord_actor import RunContext, actor

@actor(platform="none")
async def ticker(ctx: RunContext) -> None:
    ctx.state["runs"] = ctx.state.get("runs", 0) + 1

@actor(platform="none")
async def manual(ctx: RunContext) -> None:
    pass
"""


@pytest.fixture
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode with a pool of 2 server connections per database."""
    bouncer = PgBouncer(database_url, pool_mode="transaction", default_pool_size=2).start()
    yield bouncer
    bouncer.stop()


def pooled_config(url: str, schema: str, **changes: object) -> DatabaseConfig:
    base = DatabaseConfig(url=url, schema=schema, pooler="transaction", statement_cache_size=0,
                          min_pool_size=1, max_pool_size=4, connect_timeout_seconds=5)
    return replace(base, **changes)  # type: ignore[arg-type]


def write_project(tmp_path: Path, url: str, schema: str, database: str = "",
                  poll: float = 0.3) -> Path:
    return write_server_project(
        tmp_path, {"jobs": ACTORS}, url, schema,
        textwrap.dedent(database) + textwrap.dedent(f"""
        [http]
        enabled = true
        port = {free_port()}

        [[actors]]
        name = "ticker"
        module = "jobs:ticker"
        schedule = {{ type = "interval", seconds = 0.5 }}

        [[actors]]
        name = "manual"
        module = "jobs:manual"
        schedule = {{ type = "interval", seconds = 3600 }}
        """), lease_seconds=3, poll_interval_seconds=poll)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "discord_actor.cli", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=60)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            assert p.wait(timeout=30) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


async def wait_for_runs(url: str, schema: str, actor: str, trigger: str, count: int,
                        seconds: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + seconds
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = [dict(r) for r in await fetch(
            url, "SELECT r.* FROM S.runs r JOIN S.tasks t ON t.id = r.task_id WHERE t.actor = "
            f"'{actor}' AND r.trigger = '{trigger}' AND r.status = 'succeeded'", schema)]
        if len(rows) >= count:
            break
        await asyncio.sleep(0.1)
    return rows


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        found: dict[str, Any] = json.load(answer)
        return found


def clean(log: str) -> None:
    """No traceback and no error line in a server's log."""
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]


async def test_processes_starting_together_migrate_once_through_the_pooler(
    pgbouncer: PgBouncer, db_schema: str
) -> None:
    # Four processes' worth of opens on one fresh schema, through two server connections: the
    # migration lock must hold across PgBouncer's lending (a session lock would not).
    cfg = pooled_config(pgbouncer.url, db_schema)
    opened = await asyncio.gather(*(open_database(cfg) for _ in range(4)))
    try:
        applied = sorted((db.applied_migrations for db in opened), key=len)
        assert applied == [[], [], [], ALL_MIGRATIONS]
    finally:
        for db in opened:
            await db.close()
    assert "ERROR" not in pgbouncer.log


def test_a_pooled_url_without_pooler_set_fails_with_what_to_set(
    database_url: str, db_schema: str, tmp_path: Path
) -> None:
    # asyncpg names its prepared statements __asyncpg_stmt_1__, 2, ... in every process, and
    # keeps them: through one lent server connection, the second process's first statement
    # meets the first's. Both commands are a user's first try with the host's pooler address.
    bouncer = PgBouncer(database_url, pool_mode="transaction", default_pool_size=1).start()
    try:
        config = write_project(tmp_path, bouncer.url, db_schema)
        first = cli(config, "migrate")
        second = cli(config, "status")
    finally:
        bouncer.stop()
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    [line] = second.stderr.strip().splitlines()
    assert "PreparedStatement" in line or "prepared statement" in line
    assert 'set database.pooler = "transaction"' in line


async def test_a_server_behind_the_pooler_runs_every_feature(
    pgbouncer: PgBouncer, db_schema: str, database_url: str, tmp_path: Path
) -> None:
    config = write_project(tmp_path, pgbouncer.url, db_schema, 'pooler = "transaction"\n')
    procs = [spawn_server(config, tmp_path / f"server{i}.log") for i in range(2)]
    logs = [tmp_path / f"server{i}.log" for i in range(2)]
    try:
        for log in logs:
            wait_for_text(log, "started with 2 actor(s)", time.monotonic() + 30)
            text = log.read_text()
            assert "started with 2 actor(s)" in text, text[-3000:]
            # It says, once, that it polls and what that costs.
            assert text.count("notifications cannot pass a transaction-mode pooler") == 1
        # Keyed schedules, operator actions and reads, all through the pooler.
        added = cli(config, "schedules", "add", "ticker", "k:1", "--every", "1")
        assert added.returncode == 0, added.stderr
        listed = cli(config, "schedules", "list", "ticker", "--json")
        assert [s["key"] for s in json.loads(listed.stdout)] == ["k:1"]
        triggered = cli(config, "trigger", "manual")
        assert triggered.returncode == 0, triggered.stderr
        manual = await wait_for_runs(database_url, db_schema, "manual", "manual", 1, 5)
        assert len(manual) == 1  # seen at a poll, 0.3 s here
        assert cli(config, "pause", "ticker").returncode == 0
        await asyncio.sleep(1.0)  # a run claimed just before the pause may still finish
        before = await fetch(database_url, "SELECT count(*) AS n FROM S.runs", db_schema)
        await asyncio.sleep(1.5)
        after = await fetch(database_url, "SELECT count(*) AS n FROM S.runs", db_schema)
        assert after[0]["n"] - before[0]["n"] <= 1  # "manual" may not run; paused ticker not
        assert cli(config, "resume", "ticker").returncode == 0
        await asyncio.sleep(1.5)
        status = cli(config, "status")
        assert status.returncode == 0, status.stderr
        assert "it polls" in status.stderr  # both processes say why
        assert status.stderr.count("notifications cannot pass") == 2
        history = cli(config, "history", "--json", "--limit", "200")
        runs = json.loads(history.stdout)
        assert {r["key"] for r in runs if r["actor"] == "ticker"} >= {"k:1", None}
        pruned = cli(config, "prune", "--older-than-days", "0", "--json")
        assert pruned.returncode == 0, pruned.stderr
        assert json.loads(pruned.stdout)["deleted"] >= len(runs) - 4  # all but those running
        assert cli(config, "schedules", "remove", "ticker", "k:1").returncode == 0
    finally:
        stop(procs)
    # Each slot ran once (no process ran another's claim twice), state carried from run to run.
    slots = await fetch(database_url, "SELECT r.task_id, r.scheduled_for, count(*) AS n FROM "
                        "S.runs r WHERE r.trigger = 'schedule' GROUP BY 1, 2 HAVING count(*) > 1",
                        db_schema)
    assert slots == []
    for log in logs:
        clean(log.read_text())
    assert "got packet" not in pgbouncer.log  # no LISTEN went through the pooler
    assert "ERROR" not in pgbouncer.log


async def test_direct_url_carries_notifications_past_the_pooler(
    pgbouncer: PgBouncer, db_schema: str, database_url: str, tmp_path: Path
) -> None:
    # A poll every 30 s: only a notification can start the triggered run within seconds.
    database = f'pooler = "transaction"\ndirect_url = "{database_url}"\n'
    config = write_project(tmp_path, pgbouncer.url, db_schema, database, poll=30)
    procs = [spawn_server(config, tmp_path / "server.log")]
    try:
        wait_for_text(tmp_path / "server.log", "started with 2 actor(s)", time.monotonic() + 30)
        started = time.monotonic()
        assert cli(config, "trigger", "manual").returncode == 0
        manual = await wait_for_runs(database_url, db_schema, "manual", "manual", 1, 10)
        assert len(manual) == 1, (tmp_path / "server.log").read_text()[-3000:]
        assert time.monotonic() - started < 10
        assert "polls" not in cli(config, "status").stderr
    finally:
        stop(procs)
    text = (tmp_path / "server.log").read_text()
    clean(text)
    assert "polls instead" not in text
    assert "applied migrations" in text  # through direct_url


async def test_the_listener_notices_it_is_behind_a_pooler(
    pgbouncer: PgBouncer, db_schema: str, database_url: str, tmp_path: Path
) -> None:
    # A pooled url given as if it were direct (statement_cache_size = 0 keeps the statements
    # working): its LISTEN lands on a lent server connection and hears nothing. The self-probe
    # finds out, says so in one line, and /healthz and status show it.
    database = 'statement_cache_size = 0\n'
    config = write_project(tmp_path, pgbouncer.url, db_schema, database, poll=0.3)
    log = tmp_path / "server.log"
    procs = [spawn_server(config, log)]
    try:
        wait_for_text(log, "notifications do not arrive", time.monotonic() + 20)
        text = log.read_text()
        assert text.count("notifications do not arrive") == 1, text[-3000:]
        assert "is database.url a transaction-mode pooler?" in text
        port = int(config.read_text().split("port = ")[1].split()[0])
        health = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/healthz")
        assert health["status"] == "ok"  # it still works, by polling
        assert health["checks"]["notifications"]["arrive"] is False
        assert "probe did not come back" in health["checks"]["notifications"]["note"]
        assert "probe did not come back" in cli(config, "status").stderr
        # And it still runs what is triggered, at its next poll.
        assert cli(config, "trigger", "manual").returncode == 0
        assert len(await wait_for_runs(database_url, db_schema, "manual", "manual", 1, 5)) == 1
    finally:
        stop(procs)
    clean(log.read_text())
