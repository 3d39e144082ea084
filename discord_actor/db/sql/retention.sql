-- Deleting old runs and keyed schedules that are over (discord_actor/db/retention.py).

-- name: retention_cutoff
-- The database's now minus $1 seconds.
SELECT now() - make_interval(secs => $1)

-- name: prunable
SELECT t.actor, count(*) AS n FROM {runs} r
 JOIN {tasks} t ON t.id = r.task_id
 WHERE r.status <> 'running' AND r.finished_at < $1
 GROUP BY t.actor ORDER BY t.actor

-- name: retention_try_lock
-- One deleter of a schema at a time ($1: the lock's name).
SELECT pg_try_advisory_xact_lock(hashtext($1))

-- name: prune_runs
-- At most $2 finished runs that finished before $1, oldest first.
DELETE FROM {runs} WHERE id IN (
 SELECT id FROM {runs} WHERE status <> 'running' AND finished_at < $1
 ORDER BY finished_at LIMIT $2)

-- name: prune_keyed
-- At most $2 keyed schedules that are over, unchanged since $1 and without runs left.
DELETE FROM {tasks} WHERE id IN (
 SELECT t.id FROM {tasks} t WHERE t.key IS NOT NULL
 AND t.updated_at < $1 AND NOT {pending}
 AND NOT EXISTS (SELECT 1 FROM {runs} r WHERE r.task_id = t.id)
 LIMIT $2)

-- name: fold_keyed_counts
-- What runs and removals freed, folded into the keyed schedules' counters (functions.sql:
-- keyed_fold_counts); how many change rows.
SELECT {schema}.keyed_fold_counts()
