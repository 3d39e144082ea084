-- Keyed schedules, created at run time (discord_actor/db/keyed.py).

-- name: add_keyed
-- Keyed schedules written under the actor's limits, in one statement (functions.sql:
-- keyed_add): what became of each key.
SELECT key, change FROM {schema}.keyed_add($1, $2::text[], $3::jsonb[], $4::text[],
    $5::timestamptz[], $6::timestamptz[], $7::jsonb[], $8::bigint[], $9::text[], $10, $11, $12,
    $13)

-- name: add_new_keyed
-- One new key ($2...$9, as keyed_add takes them) written with room taken in its owner's and
-- its actor's counters, in one plain statement (Schedules.add of a new key, the common case):
-- the key inserted, then its owner's counter row, then this connection's shard of the actor's
-- count, in that order (the lock order of functions.sql). 'added'; 'again' when nothing was
-- written (the key is there: keyed_add looks at it), and the error 'discord_actor.keyed_again'
-- (undoing the insert) when a counter has no room as counted: keyed_add folds what was freed
-- and decides. The setting tells the triggers that this statement counts its own row.
WITH a AS (
    SELECT a.max_instances, a.max_attempts FROM {tasks} a
    WHERE a.actor = $1 AND a.key IS NULL
      AND set_config('discord_actor.keyed_add', 'on', true) = 'on'
), ins AS (
    INSERT INTO {tasks} (actor, key, schedule, schedule_hash, max_instances, max_attempts,
                         next_run, due_at, payload, channel_id, owner, counted)
    SELECT $1, $2, $3::jsonb, $4, a.max_instances, a.max_attempts, $5, $6, $7::jsonb, $8, $9,
           $5::timestamptz IS NOT NULL
    FROM a
    ON CONFLICT (actor, key) WHERE key IS NOT NULL DO NOTHING
    RETURNING counted, owner
), own AS (
    INSERT INTO {schema}.keyed_owner_counts AS k (actor, owner, pending)
    SELECT $1, i.owner, 1 FROM ins i
    WHERE i.counted AND i.owner IS NOT NULL AND ($11::bigint IS NULL OR $11::bigint >= 1)
    ON CONFLICT (actor, owner) DO UPDATE SET pending = k.pending + 1
    WHERE $11::bigint IS NULL OR k.pending + 1 <= $11::bigint
    RETURNING 1
), room AS (
    UPDATE {schema}.keyed_counts c SET pending = c.pending + 1
    FROM ins i
    WHERE i.counted AND c.actor = $1 AND c.shard = pg_backend_pid() % {schema}.keyed_shard()
      AND c.lim = $10::bigint AND c.pending + 1 <= c.cap
      AND (SELECT count(*) FROM own) >= 0  -- the owner's row before the shard
    RETURNING 1
), woke AS (
    SELECT pg_notify($12, '') FROM ins WHERE $12::text IS NOT NULL
)
SELECT CASE
    WHEN NOT EXISTS (SELECT FROM ins) THEN 'again'
    WHEN (SELECT i.counted AND ((i.owner IS NOT NULL AND NOT EXISTS (SELECT FROM own))
                                OR NOT EXISTS (SELECT FROM room)) FROM ins i)
        THEN {schema}.keyed_again()
    ELSE 'added' END AS change, (SELECT count(*) FROM woke) AS woke

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
