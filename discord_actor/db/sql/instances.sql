-- The processes and their leases (discord_actor/db/instances.py).

-- name: register_instance
INSERT INTO {instances} (id, hostname, pid, lease_seconds) VALUES ($1, $2, $3, $4)

-- name: heartbeat
-- Renew the lease of $1 and return the live processes; renewed is false if another process
-- already declared it dead.
WITH renewed AS (UPDATE {instances} SET heartbeat_at = now() WHERE id = $1 RETURNING id)
SELECT EXISTS (SELECT 1 FROM renewed) AS renewed,
 ARRAY(SELECT id FROM {instances}
  WHERE id = $1 OR heartbeat_at >= now() - make_interval(secs => lease_seconds)
  ORDER BY id) AS live

-- name: live_instances
SELECT id FROM {instances}
 WHERE heartbeat_at >= now() - make_interval(secs => lease_seconds) ORDER BY id

-- name: unregister_instance
DELETE FROM {instances} WHERE id = $1

-- name: recover_abandoned
-- The running runs of dead processes become abandoned; those with attempts left get a retry of
-- the same slot at $1.
WITH dead AS (
    DELETE FROM {instances}
    WHERE heartbeat_at < now() - make_interval(secs => lease_seconds)
    RETURNING id
), lost AS (
    UPDATE {runs} r SET status = 'abandoned', finished_at = now(),
        duration_ms = extract(epoch FROM now() - r.started_at) * 1000,
        error_type = 'Abandoned',
        error_message = 'the process running it stopped renewing its lease'
    WHERE r.status = 'running'
      AND (r.instance_id IN (SELECT id FROM dead)
           OR r.instance_id NOT IN (SELECT id FROM {instances}))
    RETURNING r.id, r.task_id, r.scheduled_for, r.attempt, r.instance_id
), per_task AS (
    SELECT task_id, count(*) AS n, max(id) AS last_id FROM lost GROUP BY task_id
), counted AS (
    UPDATE {tasks} t SET
        running = greatest(t.running - p.n, 0),
        last_status = 'abandoned', last_run_id = p.last_id, last_run_at = now(),
        updated_at = now()
    FROM per_task p WHERE t.id = p.task_id
), retried AS (
    INSERT INTO {retries} (task_id, scheduled_for, attempt, retry_at)
    SELECT l.task_id, l.scheduled_for, l.attempt + 1, $1
    FROM lost l JOIN {tasks} t ON t.id = l.task_id
    WHERE l.attempt < t.max_attempts
    ON CONFLICT DO NOTHING
)
SELECT l.id AS run_id, t.actor, l.scheduled_for, l.attempt, l.instance_id
FROM lost l JOIN {tasks} t ON t.id = l.task_id

-- name: set_notifications
-- Why process $1 hears no notifications and only polls ($2), or NULL: they arrive.
UPDATE {instances} SET notifications = $2 WHERE id = $1

-- name: deaf_instances
-- The live processes that only poll, and why.
SELECT id, hostname, pid, notifications FROM {instances}
 WHERE notifications IS NOT NULL
   AND heartbeat_at >= now() - make_interval(secs => lease_seconds)
 ORDER BY id
