"""A tiny actor importable by dotted path, for trying a configuration without writing code."""

from __future__ import annotations

from ..actor import Actor, RunContext


class SampleActor(Actor):
    """Counts its runs in state and posts the count."""

    async def run(self, ctx: RunContext) -> None:
        ctx.state["runs"] = ctx.state.get("runs", 0) + 1
        await ctx.post(f"sample run #{ctx.state['runs']}")
