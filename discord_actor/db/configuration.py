"""The tasks table made to match the configuration: each configured actor's row, what its
``setup()`` did at a start (``sql/configuration.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter

from .queries import Aggregate, arrays
from .records import TaskSpec


class Configuration(Aggregate):
    """The actors' own rows (key NULL), as the configuration says."""

    SQL_FILE = "configuration"

    async def reconcile(self, specs: Sequence[TaskSpec], now: datetime) -> None:
        """Make the tasks table match the configuration.

        New actors get a row; a changed schedule (different hash) restarts from its initial
        slot; "immediate" actors get a slot at every start; actors gone from the config are
        marked removed and keep their history.
        """
        actors = [s.actor for s in specs]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(self.sql["reconcile_lock"], f"discord_actor.reconcile.{self.schema}")
            written = await conn.execute(
                self.sql["reconcile_actors"],
                *arrays(specs, *TaskSpec.COLUMNS),
                [s.actor for s in specs if s.on_every_start],
            )
            await conn.execute(self.sql["remove_unconfigured"], actors)
            await conn.execute(self.sql["keyed_follow_actors"], actors)
            # Other running servers look at what is due again (a schedule may have changed).
            await conn.execute(self.sql["notify"], self.channel, "")
        await self.refresh_statistics(int(written.split()[-1]))

    async def record_setup(self, failed: dict[str, str], succeeded: Sequence[str]) -> None:
        """Keep each actor's setup() failure on its task (``failed``: actor -> error), and
        clear it for the actors whose setup() succeeded at this start."""
        await self.pool.execute(
            self.sql["record_setup"],
            [*failed, *succeeded],
            [*failed.values(), *(None for _ in succeeded)],
        )

    async def ensure_actor(self, spec: TaskSpec) -> None:
        """Give a configured actor its row if no server has yet (keyed schedules hang on it)."""
        await self.pool.execute(self.sql["ensure_actor"], *attrgetter(*TaskSpec.COLUMNS)(spec))
