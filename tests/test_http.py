"""The HTTP endpoint of a real runtime on a real database: probes, /metrics, the JSON API and
who may use it, the loop-lag warning, and ``[http]`` in the configuration."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import servers

from discord_actor import Once, RunContext, actor
from discord_actor.assembly import Assembly
from discord_actor.cli import main
from discord_actor.config import (
    ConfigError,
    DatabaseConfig,
    HttpConfig,
    ScheduleConfig,
    is_loopback,
    load_config,
)
from discord_actor.db import Database, EmbeddedPostgres, open_database
from discord_actor.operations import Operations
from discord_actor.platforms.discord import DiscordRefused
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import actor_config
from discord_actor.web.server import HttpUnavailable

TOKEN = "s3cret-operator-token-for-tests"
METRICS = (
    "discord_actor_runs_total",
    "discord_actor_run_duration_seconds",
    "discord_actor_run_lateness_seconds",
    "discord_actor_pool_connections",
    "discord_actor_pool_max_connections",
    "discord_actor_pool_acquire_seconds",
    "discord_actor_actor_connections_in_use",
    "discord_actor_discord_connected",
    "discord_actor_discord_latency_seconds",
    "discord_actor_event_loop_lag_seconds",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


EVERY_SECOND = ScheduleConfig(type="interval", timezone="UTC", seconds=1)


@actor(platform="none")
async def ticker(ctx: RunContext) -> None:
    async with ctx.db() as conn:
        ctx.state["seen"] = await conn.fetchval("SELECT 1")


@actor(platform="none")
async def broken(ctx: RunContext) -> None:
    raise ValueError("the feed answered 500")


def assembly_for(
    database: Database, http: HttpConfig, actors: dict[str, Any], **server: Any
) -> Assembly:
    configs = [(impl, actor_config(name, schedule=EVERY_SECOND, platform="none"))
               for name, impl in actors.items()]
    return servers.assembly_for(database, configs, http=http, **server)


async def wait_for(check: Any, within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {check}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def served(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Runtime, str]]:
    monkeypatch.setenv("TEST_HTTP_TOKEN", TOKEN)
    http = HttpConfig(enabled=True, port=free_port(), token_env="TEST_HTTP_TOKEN")
    async with assembly_for(database, http, {"ticker": ticker, "broken": broken}) as runtime:
        yield runtime, f"http://127.0.0.1:{http.port}"


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of the samples named exactly ``name``."""
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


async def test_every_metric_is_served_and_moves_when_runs_happen(
    served: tuple[Runtime, str],
) -> None:
    runtime, url = served
    async with aiohttp.ClientSession() as http:

        async def scrape() -> str:
            async with http.get(f"{url}/metrics") as answer:
                assert answer.status == 200
                assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return await answer.text()

        first = await scrape()

        async def two_runs_each() -> str | None:
            text = await scrape()
            runs = samples(text, "discord_actor_runs_total")
            ok = runs.get('{actor="ticker",status="succeeded"}', 0) >= 2
            failed = runs.get('{actor="broken",status="failed"}', 0) >= 2
            return text if ok and failed else None

        later = await wait_for(two_runs_each)
    for name in METRICS:
        assert f"# TYPE {name} " in first and f"# TYPE {name} " in later, name
    count = samples(later, "discord_actor_run_duration_seconds_count")
    assert count['{actor="ticker"}'] >= 2 and count['{actor="broken"}'] >= 2
    assert samples(later, "discord_actor_run_lateness_seconds_count")[""] >= 4
    before = samples(first, "discord_actor_pool_acquire_seconds_count").get("", 0)
    assert samples(later, "discord_actor_pool_acquire_seconds_count")[""] > before
    assert '{actor="ticker"}' in samples(later, "discord_actor_actor_connections_in_use")
    pool = samples(later, "discord_actor_pool_connections")
    assert pool['{state="in_use"}'] + pool['{state="idle"}'] >= 1
    pool_max = runtime.config.database.max_pool_size
    assert samples(later, "discord_actor_pool_max_connections")[""] == pool_max
    assert samples(later, "discord_actor_discord_connected")[""] == 0  # no gateway here
    assert samples(later, "discord_actor_event_loop_lag_seconds")[""] >= 0


async def test_posts_without_the_token_get_401_and_change_nothing(
    served: tuple[Runtime, str],
) -> None:
    runtime, url = served
    store = runtime.store
    refusals = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"X-CSRF-Token": TOKEN},
    ]
    async with aiohttp.ClientSession() as http:
        for headers in refusals:
            for action in ("pause", "trigger", "resume"):
                async with http.post(f"{url}/api/actors/ticker/{action}", headers=headers) as a:
                    assert a.status == 401, (headers, action)
                    assert "Bearer" in a.headers["WWW-Authenticate"]
            async with http.post(f"{url}/actors/ticker/pause", headers=headers,
                                 data={"csrf": "guess"}) as a:
                assert a.status == 401
        task = await store.operator.task("ticker")
        assert task is not None and not task["paused"] and task["manual_at"] is None

        # A dashboard session without its CSRF token is refused too.
        async with http.post(f"{url}/login", data={"token": TOKEN}, allow_redirects=False) as a:
            assert a.status == 303
        async with http.post(f"{url}/actors/ticker/pause", data={"csrf": "not-it"}) as a:
            assert a.status == 401
        async with http.post(f"{url}/api/actors/ticker/pause") as a:
            assert a.status == 401
        task = await store.operator.task("ticker")
        assert task is not None and not task["paused"]

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(f"{url}/api/actors/ticker/pause", headers=bearer,
                             json={"reason": "maintenance"}) as a:
            assert a.status == 200
            answer = await a.json()
        assert answer["paused"] and answer["reason"].startswith("maintenance; paused by")
        task = await store.operator.task("ticker")
        assert task is not None and task["paused"]
        async with http.get(f"{url}/api/actors") as a:
            by_name = {x["actor"]: x for x in (await a.json())["actors"]}
        assert by_name["ticker"]["state"] == "paused"
        async with http.post(f"{url}/api/actors/ticker/trigger", headers=bearer) as a:
            assert a.status == 409 and "paused" in (await a.json())["error"]
        async with http.post(f"{url}/api/actors/nope/pause", headers=bearer) as a:
            assert a.status == 404
        async with http.post(f"{url}/api/actors/ticker/resume", headers=bearer) as a:
            assert a.status == 200 and (await a.json())["was_paused"]


async def test_runs_api_gives_the_traceback_and_filters(served: tuple[Runtime, str]) -> None:
    _, url = served
    async with aiohttp.ClientSession() as http:

        async def failed_runs() -> list[dict[str, Any]]:
            async with http.get(f"{url}/api/runs?actor=broken&status=failed&limit=5") as a:
                assert a.status == 200
                runs: list[dict[str, Any]] = (await a.json())["runs"]
                return runs

        runs = await wait_for(failed_runs)
        assert {r["actor"] for r in runs} == {"broken"}
        async with http.get(f"{url}/api/runs/{runs[0]['id']}") as a:
            detail = await a.json()
        assert detail["error"] == "ValueError: the feed answered 500"
        assert "Traceback" in detail["traceback"] and "raise ValueError" in detail["traceback"]
        for query, status in [("limit=0", 400), ("limit=x", 400), ("status=weird", 400),
                              ("actor=nobody", 404)]:
            async with http.get(f"{url}/api/runs?{query}") as a:
                assert a.status == status, query
                assert "error" in await a.json()
        async with http.get(f"{url}/api/runs/999999999") as a:
            assert a.status == 404


async def test_the_dashboard_counts_keyed_schedules(served: tuple[Runtime, str]) -> None:
    runtime, url = served
    later = datetime.now(UTC) + timedelta(hours=1)
    for key in ("guild:1", "guild:2"):
        await runtime.schedules.add("ticker", key=key, schedule=Once(at=later))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as page:
            assert "2 keyed schedules pending" in await page.text()
        async with http.get(f"{url}/actors/ticker") as page:
            assert "2 keyed schedules pending" in await page.text()
        async with http.get(f"{url}/api/actors") as api:
            body = await api.json()
    assert [a["keyed"] for a in body["actors"] if a["actor"] == "ticker"] == [2]


async def test_the_dashboard_shows_times_relative_and_reasons_whole_without_javascript(
    served: tuple[Runtime, str],
) -> None:
    runtime, url = served
    reason = ("the feed's provider is migrating servers tonight; resume after their status page "
              "says done, see the #ops channel for the ticket")

    async def ticked() -> bool:
        task = await runtime.store.operator.task("ticker")
        return task is not None and task["last_run_at"] is not None

    await wait_for(ticked)
    await Operations(runtime.store, runtime.config).pause("ticker", reason)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as page:
            overview = await page.text()
        async with http.get(f"{url}/actors/ticker") as page:
            one = await page.text()
    row = overview[overview.index('<tr id="actor-ticker"'):]
    row = row[:row.index("</tr>")]
    # Rendered on the server: relative, with the exact time and its zone for the hover.
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00" '
                     r'title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">(now|\d+ s ago)</time>', row), row
    assert f'<div class="reason">{reason}</div>' in row.replace("&#39;", "'")
    assert '<td class="time next-run"><span class="halted">paused</span>' in row
    assert '<dd class="next-run"><span class="halted">paused</span></dd>' in one


async def test_a_non_loopback_host_needs_the_token_to_read(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_cfg = HttpConfig(enabled=True, host="0.0.0.0", port=free_port(), token_env="TEST_T")
    assembly = assembly_for(database, http_cfg, {"ticker": ticker})
    monkeypatch.delenv("TEST_T", raising=False)
    with pytest.raises(HttpUnavailable, match=r"TEST_T \(http.token_env\) is not set"):
        await assembly.start()
    monkeypatch.setenv("TEST_T", TOKEN)
    await assembly.start()
    url = f"http://127.0.0.1:{http_cfg.port}"
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/api/actors", "/metrics", "/healthz", "/api/runs"):
                async with http.get(url + path) as a:
                    assert a.status == 401, path
                async with http.get(url + path,
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as a:
                    assert a.status == 200, path
            async with http.get(url + "/", allow_redirects=False) as a:
                assert a.status == 303 and a.headers["Location"].startswith("/login")
    finally:
        await assembly.stop()


async def test_health_and_readiness_follow_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedPostgres()
    data_dir = tmp_path / "pgdata"
    url = await asyncio.to_thread(server.start, data_dir)
    database = await open_database(
        DatabaseConfig(url=url, schema="health", connect_timeout_seconds=5)
    )
    port = free_port()
    assembly = assembly_for(database, HttpConfig(enabled=True, port=port), {"ticker": ticker})
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def probe(path: str) -> tuple[int, dict[str, Any]]:
                async with http.get(base + path) as a:
                    return a.status, await a.json()

            runtime = await assembly.start()
            status, body = await probe("/healthz")
            assert status == 200 and body["checks"]["database"]["ok"]
            assert body["checks"]["event_loop"]["ok"]
            assert (await probe("/readyz"))[0] == 200

            await asyncio.to_thread(server.stop)
            status, body = await probe("/healthz")
            assert status == 503
            assert not body["checks"]["database"]["ok"]
            assert "database" in body["reasons"][0]
            assert (await probe("/readyz"))[0] == 503

            await asyncio.to_thread(server.start, data_dir)

            async def healthy_again() -> bool:
                return (await probe("/healthz"))[0] == 200 and (await probe("/readyz"))[0] == 200

            await wait_for(healthy_again, within=20)
    finally:
        await assembly.stop()
        await database.close()
        await asyncio.to_thread(server.stop)
    # A stopped runtime is not ready (the server is gone with it, so this is its own answer).
    assert not runtime.started


async def test_a_blocked_event_loop_is_logged_naming_the_runs(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    @actor(platform="none")
    async def sleeper(ctx: RunContext) -> None:
        time.sleep(1.6)  # noqa: ASYNC251 - the mistake the warning is for

    assembly = assembly_for(database, HttpConfig(), {"sleeper": sleeper})
    caplog.set_level(logging.WARNING, logger="discord_actor.runtime")
    await assembly.start()
    try:

        async def warned() -> list[str]:
            return [r.getMessage() for r in caplog.records if "event loop was blocked" in
                    r.getMessage()]

        lines = await wait_for(warned)
    finally:
        await assembly.stop()
    assert re.search(r"blocked for 1\.\d s \(runs in progress: run \d+ of sleeper\)", lines[0])


# -- configuration ---------------------------------------------------------------------------


def write(tmp_path: Path, http: str) -> Path:
    path = tmp_path / "actor_server.toml"
    (tmp_path / "actors").mkdir(exist_ok=True)
    (tmp_path / "actors" / "hello.py").write_text(textwrap.dedent("""
        from discord_actor import RunContext, actor

        @actor(platform="none")
        async def hello(ctx: RunContext) -> None:
            pass
    """))
    path.write_text(textwrap.dedent(f"""
        [database]
        url = "postgresql://nobody@127.0.0.1:1/none"
        connect_timeout_seconds = 0.5

        [http]
        {http}

        [[actors]]
        name = "hello"
        module = "hello"
        [actors.schedule]
        type = "immediate"
    """))
    return path


def test_http_defaults_and_validation(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "enabled = true"))
    assert config.http == HttpConfig(enabled=True, host="127.0.0.1", port=8750,
                                     token_env="DISCORD_ACTOR_HTTP_TOKEN")
    path = write(tmp_path, 'enabled = "yes"\nport = 70000\ntoken_env = "abc def"\nhots = "x"')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert f"{path}:7: http.enabled: must be true or false" in text
    assert f"{path}:8: http.port: must be at most 65535, not 70000" in text
    assert f"{path}:9: http.token_env: must be the name of the environment variable" in text
    assert "abc def" not in text  # possibly the token itself: never echoed
    assert f"{path}:10: http.hots: unknown key; did you mean 'host'?" in text


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "example.org"]))


def test_run_refuses_a_public_address_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_ACTOR_HTTP_TOKEN", raising=False)
    path = write(tmp_path, 'enabled = true\nhost = "0.0.0.0"')
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "http.host = '0.0.0.0'" in err and "$DISCORD_ACTOR_HTTP_TOKEN" in err
    assert "Traceback" not in err


@actor(platform="none")
async def refused(ctx: RunContext) -> None:
    # What ctx.post raises when Discord refuses a post (the fake's 403s: test_discord_delivery)
    raise DiscordRefused("Discord refused actor 'refused' posting to channel 7 (403 Forbidden)")


async def test_the_dashboard_shows_the_queue_and_why_discord_refused_posts(
    database: Database,
) -> None:
    http_config = HttpConfig(enabled=True, port=free_port())
    async with assembly_for(database, http_config, {"refused": refused}) as runtime:
        url = f"http://127.0.0.1:{http_config.port}"

        async def refused_once() -> bool:
            [status] = (await Operations(runtime.store, runtime.config).status("refused")).actors
            return status.refused > 0

        await wait_for(refused_once)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/") as page:
                overview = await page.text()
            async with http.get(f"{url}/actors/refused") as page:
                one = await page.text()
            async with http.get(f"{url}/api/actors") as api:
                [body] = (await api.json())["actors"]
    said = "post(s) refused by Discord, not retried; the latest (its own schedule): Discord"
    assert said in overview and said in one
    assert body["refused"] >= 1 and "403 Forbidden" in body["refused_reason"]
    queue = overview[overview.index('<div class="card queue">'):]
    assert "posts queued" in queue and '<span class="big">0</span>' in queue
