"""Real ``discord-actor run`` processes for the multi-process tests, and reading what they did.

Not a test module: the tests that start servers import it (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg


def spawn_server(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``discord-actor run --config config`` in a process of its own, its log in ``log``."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "discord_actor.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


async def fetch(url: str, sql: str, schema: str = "") -> list[asyncpg.Record]:
    """Rows of ``sql`` on a connection of its own; ``S.`` in it stands for ``schema.``."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql.replace("S.", f"{schema}.") if schema else sql)
    finally:
        await conn.close()
