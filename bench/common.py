"""Shared bits of the bench scripts: the machine line, a throwaway database, quiet platforms.

The scripts are run from the repository root as ``.venv/bin/python bench/NAME.py``, so this
module is importable as ``common`` (the script's directory is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from discord_actor.actor import Posted
from discord_actor.config import ActorConfig, DatabaseConfig
from discord_actor.db import Database, open_database
from discord_actor.platforms import Platform, every_platform


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


async def machine_line(database: Database) -> str:
    """platform, CPU, cores, Python and the PostgreSQL server's version, on one line."""
    server = await database.pool.fetchval("SHOW server_version")
    where = "embedded" if database.server is not None else "DATABASE_URL"
    return (
        f"{platform.platform()} | {cpu_model()} | {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | PostgreSQL {server} ({where})"
    )


@asynccontextmanager
async def bench_database(schema: str = "bench", **pool: Any) -> AsyncIterator[Database]:
    """A database for one bench run: ``DATABASE_URL`` if set, else an embedded server in a
    temporary directory that is stopped and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="discord_actor-bench-") as tmp:
        cfg = DatabaseConfig(
            url=os.environ.get("DATABASE_URL", ""),
            data_dir=Path(tmp) / "pgdata",
            schema=schema,
            **pool,
        )
        database = await open_database(cfg)
        try:
            yield database
        finally:
            await database.close()


async def other_schema(database: Database, schema: str) -> Database:
    """A second pool with the same settings on the same server, in a fresh ``schema``."""
    await database.pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return await open_database(replace(database.config, url=database.url, schema=schema))


class QuietPlatform:
    """Accepts posts and drops them (the console platform would print every one)."""

    name = "quiet"

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        return Posted(platform="quiet", channel_id=actor.channel_id, content=content)


def quiet_platforms() -> dict[str, Platform]:
    return every_platform(QuietPlatform())


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def project_lines(directory: Path, module: str, source: str, schema: str) -> list[str]:
    """Start a bench project in ``directory``: ``actors/<module>.py`` holding ``source``, and
    the first lines of its actor_server.toml (the embedded server in ``pgdata``, or
    ``DATABASE_URL``, and ``schema``); the caller adds its ``[[actors]]`` and writes the file."""
    (directory / "actors").mkdir(parents=True, exist_ok=True)
    (directory / "actors" / f"{module}.py").write_text(source)
    return [
        "[server]",
        'actors_dir = "actors"',
        "",
        "[database]",
        'url = "${DATABASE_URL:-}"',
        'data_dir = "pgdata"',
        f'schema = "{schema}"',
        "",
    ]
