-- Keyed schedules, created at run time (discord_actor/db/keyed.py).

-- name: lock_actor_row
-- The actor's own row, locked: the limits are checked under this lock.
SELECT max_instances, max_attempts FROM {tasks} WHERE actor = $1 AND key IS NULL FOR UPDATE

-- name: keyed_existing
-- The rows of the keys $2 of the actor $1, and whether each is pending.
SELECT t.id, t.key, t.schedule_hash, {pending} AS pending
 FROM {tasks} t WHERE t.actor = $1 AND t.key = ANY($2::text[])

-- name: delete_retries_of_tasks
DELETE FROM {retries} WHERE task_id = ANY($1::bigint[])

-- name: write_keyed
-- New keys inserted; a key written again is armed afresh (its history stays).
INSERT INTO {tasks} AS t (actor, key, schedule, schedule_hash,
    max_instances, max_attempts, next_run, due_at, payload, channel_id, owner)
SELECT $1, v.key, v.schedule, v.hash, $2, $3, v.next_run, v.due_at,
       v.payload, v.channel_id, v.owner
FROM unnest($4::text[], $5::jsonb[], $6::text[], $7::timestamptz[],
            $8::timestamptz[], $9::jsonb[], $10::bigint[], $11::text[])
     AS v(key, schedule, hash, next_run, due_at, payload, channel_id, owner)
ON CONFLICT (actor, key) WHERE key IS NOT NULL DO UPDATE SET
    schedule = EXCLUDED.schedule, schedule_hash = EXCLUDED.schedule_hash,
    next_run = EXCLUDED.next_run, due_at = EXCLUDED.due_at,
    payload = EXCLUDED.payload, channel_id = EXCLUDED.channel_id,
    owner = EXCLUDED.owner, removed_at = NULL, manual_at = NULL,
    paused = false, paused_reason = NULL, paused_at = NULL,
    consecutive_failures = 0, updated_at = now()

-- name: count_pending
SELECT count(*) FROM {tasks} t WHERE t.actor = $1 AND t.key IS NOT NULL AND {pending}

-- name: count_pending_by_owner
SELECT t.owner, count(*) AS n FROM {tasks} t WHERE t.actor = $1
 AND t.key IS NOT NULL AND t.owner = ANY($2::text[]) AND {pending}
 GROUP BY t.owner

-- name: lock_keyed
SELECT t.id, {pending} AS pending FROM {tasks} t
 WHERE t.actor = $1 AND t.key = $2 AND t.removed_at IS NULL FOR UPDATE

-- name: delete_retries_of_task
DELETE FROM {retries} WHERE task_id = $1

-- name: remove_keyed
UPDATE {tasks} SET removed_at = now(), next_run = NULL, due_at = NULL,
 manual_at = NULL, updated_at = now() WHERE id = $1

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
