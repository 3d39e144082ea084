"""Interval actor: counts its runs in durable state (survives restarts)."""

from discord_actor import Actor, RunContext


class Counter(Actor):
    platform = "console"

    async def run(self, ctx: RunContext) -> None:
        count = ctx.state.get("count", 0) + 1
        ctx.state["count"] = count  # saved with the run record when the run succeeds
        await ctx.post(f"tick #{count}")
