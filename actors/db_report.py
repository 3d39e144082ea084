"""Cron actor: asks the database how the actors are doing, through the shared pool."""

from discord_actor import RunContext, actor
from discord_actor.db import quote_ident

# The runtime's tables live in the configured schema ("discord_actor" unless [database] schema
# says otherwise: then set settings.schema to the same). Only finished runs count: one still
# running (this very report's, for one) has no outcome yet, and a slot skipped by
# catch_up = "skip" was not run at all.
QUERY = """
SELECT t.actor, count(*) FILTER (WHERE r.status = 'succeeded') AS ok, count(*) AS total
FROM {schema}.runs r JOIN {schema}.tasks t ON t.id = r.task_id
WHERE r.started_at > now() - interval '1 hour' AND r.status NOT IN ('running', 'skipped')
GROUP BY t.actor ORDER BY t.actor
"""


@actor(platform="console")
async def db_report(ctx: RunContext) -> None:
    query = QUERY.format(schema=quote_ident(ctx.settings.get("schema", "discord_actor")))
    async with ctx.db() as conn:  # one connection from the shared pool, within max_connections
        rows = await conn.fetch(query)
    summary = ", ".join(f"{r['actor']} {r['ok']}/{r['total']} ok" for r in rows) or "no runs yet"
    await ctx.post(f"last hour: {summary}")
