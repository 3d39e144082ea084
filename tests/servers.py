"""Helpers the test modules share: real ``discord-actor run`` processes and reading what they
did, and a runtime with its background loops on the real clock.

Not a test module: the tests import it (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg

from discord_actor.assembly import Assembly
from discord_actor.config import ActorConfig, Config, HttpConfig
from discord_actor.db import Database
from discord_actor.platforms import every_platform
from discord_actor.plugins import LoadedActor
from discord_actor.runtime import Runtime
from discord_actor.testing.harness import RecordingPlatform, load, make_config


def write_server_project(
    root: Path,
    modules: Mapping[str, str],
    url: str,
    schema: str,
    rest: str,
    *,
    lease_seconds: float = 1.5,
    poll_interval_seconds: float = 0.2,
) -> Path:
    """A project for ``discord-actor run`` processes: ``actors/<name>.py`` for each of
    ``modules``, an ``actor_server.toml`` with short leases and polls on ``url``/``schema``,
    then ``rest`` (more of ``[database]``, other tables, the ``[[actors]]``). Its path."""
    (root / "actors").mkdir(exist_ok=True)
    for name, source in modules.items():
        (root / "actors" / f"{name}.py").write_text(source)
    config = root / "actor_server.toml"
    config.write_text(textwrap.dedent(f"""
        [server]
        lease_seconds = {lease_seconds}
        poll_interval_seconds = {poll_interval_seconds}
        shutdown_grace_seconds = 1

        [database]
        url = "{url}"
        schema = "{schema}"
        max_pool_size = 4
        """) + textwrap.dedent(rest))
    return config


def spawn_server(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``discord-actor run --config config`` in a process of its own, its log in ``log``."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "discord_actor.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def stop_servers(
    procs: Sequence[subprocess.Popen[bytes] | None], grace_seconds: float = 30
) -> None:
    """SIGINT to the processes still running, then wait for each (``grace_seconds``, then
    SIGKILL): what a test does last with the servers it started."""
    live = [p for p in procs if p is not None and p.poll() is None]
    for p in live:
        p.send_signal(signal.SIGINT)
    for p in live:
        try:
            await asyncio.to_thread(p.wait, grace_seconds)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def spawn_run_in(directory: Path, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``discord-actor run`` in ``directory`` (its ``actor_server.toml``), as a user starts it
    there, with ``env``; its standard output and error in ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "discord_actor.cli", "run"], cwd=directory, env=dict(env),
            stdout=out, stderr=subprocess.STDOUT,
        )


def wait_for_text(log: Path, text: str, deadline: float) -> None:
    """Until ``text`` is in ``log`` or ``time.monotonic()`` passes ``deadline``."""
    while text not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)


async def fetch(url: str, sql: str, schema: str = "") -> list[asyncpg.Record]:
    """Rows of ``sql`` on a connection of its own; ``S.`` in it stands for ``schema.``."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql.replace("S.", f"{schema}.") if schema else sql)
    finally:
        await conn.close()


def runtime_for(
    database: Database,
    actors: Sequence[tuple[Any, ActorConfig]],
    *,
    instance_id: str | None = None,
    **server: Any,
) -> Runtime:
    """A runtime of these (implementation, config) pairs, ``server`` keys set, posting to one
    ``RecordingPlatform`` (``runtime.platforms["console"]``); start it to run its loops."""
    config, loaded = configured(database, actors, **server)
    return Runtime(
        config,
        database,
        loaded,
        platforms=every_platform(RecordingPlatform()),
        instance_id=instance_id,
    )


def assembly_for(
    database: Database,
    actors: Sequence[tuple[Any, ActorConfig]],
    *,
    http: HttpConfig | None = None,
    **server: Any,
) -> Assembly:
    """As ``runtime_for``, with the HTTP server of ``http``: ``async with`` it (or ``start``
    it) to serve; ``database`` stays open."""
    config, loaded = configured(database, actors, **server)
    if http is not None:
        config = replace(config, http=http)
    return Assembly(
        config, loaded, platforms=every_platform(RecordingPlatform()), database=database
    )


def configured(
    database: Database, actors: Sequence[tuple[Any, ActorConfig]], **server: Any
) -> tuple[Config, dict[str, LoadedActor]]:
    """The configuration of these (implementation, config) pairs and the actors loaded."""
    config = make_config(database.config, [cfg for _, cfg in actors], **server)
    loaded = {
        cfg.name: load(impl, cfg) for (impl, _), cfg in zip(actors, config.actors, strict=True)
    }
    return config, loaded
