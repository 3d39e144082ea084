-- The tasks table made to match the configuration (discord_actor/db/configuration.py).

-- name: reconcile_lock
-- One reconcile of a schema at a time ($1: the lock's name).
SELECT pg_advisory_xact_lock(hashtext($1))

-- name: reconcile_actors
-- Every configured actor's row: new ones inserted; a changed schedule (another hash), or an
-- actor in $9 (immediate: a slot at every start), restarts from its initial slot.
INSERT INTO {tasks} AS t (actor, enabled, schedule, schedule_hash,
    max_instances, max_attempts, next_run, due_at)
SELECT * FROM unnest($1::text[], $2::bool[], $3::jsonb[], $4::text[],
    $5::int[], $6::int[], $7::timestamptz[], $8::timestamptz[])
ON CONFLICT (actor) WHERE key IS NULL DO UPDATE SET
    enabled = EXCLUDED.enabled,
    removed_at = NULL,
    max_instances = EXCLUDED.max_instances,
    max_attempts = EXCLUDED.max_attempts,
    schedule = EXCLUDED.schedule,
    schedule_hash = EXCLUDED.schedule_hash,
    next_run = CASE WHEN t.schedule_hash <> EXCLUDED.schedule_hash
                      OR EXCLUDED.actor = ANY($9::text[])
                    THEN EXCLUDED.next_run ELSE t.next_run END,
    due_at = CASE WHEN t.schedule_hash <> EXCLUDED.schedule_hash
                    OR EXCLUDED.actor = ANY($9::text[])
                  THEN EXCLUDED.due_at ELSE t.due_at END,
    updated_at = now()
-- An unchanged actor is not written again (10,000 of them at every start).
WHERE t.removed_at IS NOT NULL
   OR t.enabled IS DISTINCT FROM EXCLUDED.enabled
   OR t.max_instances IS DISTINCT FROM EXCLUDED.max_instances
   OR t.max_attempts IS DISTINCT FROM EXCLUDED.max_attempts
   OR t.schedule_hash IS DISTINCT FROM EXCLUDED.schedule_hash
   OR EXCLUDED.actor = ANY($9::text[])

-- name: remove_unconfigured
-- Actors gone from the configuration are marked removed and keep their history.
UPDATE {tasks} SET removed_at = now(), updated_at = now()
 WHERE key IS NULL AND removed_at IS NULL
 AND actor NOT IN (SELECT unnest($1::text[]))

-- name: keyed_follow_actors
-- Keyed schedules follow their actor's max_instances and retry.attempts.
UPDATE {tasks} k SET max_instances = a.max_instances,
 max_attempts = a.max_attempts, updated_at = now()
 FROM {tasks} a WHERE a.key IS NULL AND a.actor = k.actor
 AND k.key IS NOT NULL AND k.actor = ANY($1::text[])
 AND (k.max_instances <> a.max_instances OR k.max_attempts <> a.max_attempts)

-- name: record_setup
-- Each actor's setup() failure ($2, NULL: it succeeded) kept on its row.
UPDATE {tasks} t SET setup_error = s.error,
 setup_error_at = CASE WHEN s.error IS NULL THEN NULL ELSE now() END,
 updated_at = now()
 FROM unnest($1::text[], $2::text[]) AS s(actor, error)
 WHERE t.actor = s.actor AND t.key IS NULL
 AND t.setup_error IS DISTINCT FROM s.error

-- name: ensure_actor
-- A configured actor's row if no server has written it yet.
INSERT INTO {tasks} (actor, enabled, schedule, schedule_hash, max_instances,
 max_attempts, next_run, due_at) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8)
 ON CONFLICT (actor) WHERE key IS NULL DO NOTHING
