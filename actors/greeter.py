"""Immediate actor: says hello once each time the server starts."""

from discord_actor import RunContext, actor


@actor(platform="console")
async def greeter(ctx: RunContext) -> None:
    starts = ctx.state.get("starts", 0) + 1
    ctx.state["starts"] = starts
    name = ctx.settings.get("name", "world")
    await ctx.post(f"hello, {name}! (start #{starts})")
