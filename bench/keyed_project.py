"""The keyed schedules' project that bench/keyed_schedules.py and bench/peers.py run: one
keyed ``reminder`` actor (no-op, counting its runs) with its limits set and far from reached.

Its own module so that the two scripts share it without importing each other.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from common import project_lines

SCHEMA = "bench_keyed"
ACTOR = "reminder"  # the keyed schedules' actor
MAX_SCHEDULES = 1_000_000  # workload 5's limits: set, and far from reached
MAX_PER_OWNER = 1_000

ACTOR_MODULE = '''"""A no-op actor for bench/keyed_schedules.py: counts runs, keeps lateness."""

import time

from discord_actor import RunContext, actor


@actor(platform="none")
async def remind(ctx: RunContext) -> None:
    late_ms = (time.time() - ctx.scheduled_for.timestamp()) * 1000
    ctx.state["runs"] = ctx.state.get("runs", 0) + 1
    ctx.state.setdefault("late_ms", late_ms)
'''


def write_project(directory: Path, once_at: list[datetime], per_owner: int | None = None) -> Path:
    """actor_server.toml: the keyed actor (no configured schedule; ``max_schedules_per_owner``
    ``per_owner`` if given) and one configured ``once`` actor per time in ``once_at``."""
    lines = [
        *project_lines(directory, "remind", ACTOR_MODULE, SCHEMA),
        "[[actors]]",
        f'name = "{ACTOR}"',
        'module = "remind"',
        'platform = "none"',
        f"max_schedules = {MAX_SCHEDULES}",
        *([f"max_schedules_per_owner = {per_owner}"] if per_owner is not None else []),
        "",
    ]
    for i, at in enumerate(once_at):
        lines += [
            "[[actors]]",
            f'name = "once{i:05d}"',
            'module = "remind"',
            'platform = "none"',
            "[actors.schedule]",
            'type = "once"',
            f'at = "{at.isoformat()}"',
            "",
        ]
    path = directory / "actor_server.toml"
    path.write_text("\n".join(lines))
    return path
