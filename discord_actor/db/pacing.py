"""Rate budgets shared by every process of a bot: request slots reserved a few at a time from
one row per budget (``sql/pacing.sql``), so that the processes together keep to Discord's
global limit without a service of their own and without a round trip per request."""

from __future__ import annotations

from .queries import Aggregate


class RateBudgets(Aggregate):
    """The rate_budgets table: one row per budget (a bot's global limit)."""

    SQL_FILE = "pacing"

    async def reserve(self, bucket: str, count: int, spacing: float) -> float:
        """Reserve ``count`` slots ``spacing`` seconds apart in ``bucket``; returns in how many
        seconds (from now, by the database's clock) the first one is."""
        first_in: float = await self.pool.fetchval(
            self.sql["reserve_slots"], bucket, count, spacing
        )
        return first_in
