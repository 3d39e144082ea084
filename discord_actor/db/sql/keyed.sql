-- Keyed schedules, created at run time (discord_actor/db/keyed.py).

-- name: add_keyed
-- Keyed schedules written under the actor's limits, in one statement (functions.sql:
-- keyed_add): what became of each key.
SELECT key, change FROM {schema}.keyed_add($1, $2::text[], $3::jsonb[], $4::text[],
    $5::timestamptz[], $6::timestamptz[], $7::jsonb[], $8::bigint[], $9::text[], $10, $11, $12,
    $13)

-- name: remove_keyed
-- The key's row removed: nothing more of it runs (a run in flight finishes), its retries go,
-- its history stays; pending: whether it was (counted, as the counters had it). The triggers
-- (functions.sql) count what the removal frees.
WITH old AS (
    SELECT t.id, t.counted FROM {tasks} t
    WHERE t.actor = $1 AND t.key = $2 AND t.removed_at IS NULL FOR UPDATE
), removed AS (
    UPDATE {tasks} t SET removed_at = now(), next_run = NULL, due_at = NULL,
        manual_at = NULL, updated_at = now()
    FROM old WHERE t.id = old.id
), retries_gone AS (
    DELETE FROM {retries} q USING old WHERE q.task_id = old.id
)
SELECT old.counted AS pending FROM old

-- name: list_keyed
-- The actor's pending keyed schedules, soonest first (next_at: their next slot, retry or
-- trigger), filtered by key prefix $2, owner $3 and key $4 when given.
SELECT t.id, t.key, t.schedule::text AS schedule, t.payload::text AS payload,
       t.channel_id, t.owner, t.next_run, t.paused, t.paused_reason,
       t.consecutive_failures, t.last_status, t.last_run_at, t.running,
       t.created_at, q.retry_at,
       CASE WHEN t.manual_at IS NOT NULL THEN t.manual_at
            ELSE least(t.next_run, q.retry_at) END AS next_at
FROM {tasks} t
LEFT JOIN LATERAL (SELECT min(retry_at) AS retry_at FROM {retries}
                   WHERE task_id = t.id) q ON true
WHERE t.actor = $1 AND t.key IS NOT NULL AND {pending}
  AND ($2::text IS NULL OR starts_with(t.key, $2))
  AND ($3::text IS NULL OR t.owner = $3)
  AND ($4::text IS NULL OR t.key = $4)
ORDER BY next_at NULLS LAST, t.key
LIMIT $5
