"""Cron actor: asks the database how the actors are doing, through the shared pool."""

from discord_actor import RunContext, actor

# The runtime's tables live in the configured schema ("discord_actor" in actor_server.toml).
QUERY = """
SELECT t.actor, count(*) FILTER (WHERE r.status = 'succeeded') AS ok, count(*) AS total
FROM discord_actor.runs r JOIN discord_actor.tasks t ON t.id = r.task_id
WHERE r.started_at > now() - interval '1 hour'
GROUP BY t.actor ORDER BY t.actor
"""


@actor(platform="console")
async def db_report(ctx: RunContext) -> None:
    async with ctx.db() as conn:  # one connection from the shared pool, within max_connections
        rows = await conn.fetch(QUERY)
    summary = ", ".join(f"{r['actor']} {r['ok']}/{r['total']} ok" for r in rows) or "no runs yet"
    await ctx.post(f"last hour: {summary}")
