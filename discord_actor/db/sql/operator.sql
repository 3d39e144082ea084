-- What operators read and change (discord_actor/db/operator.py).

-- name: set_state
UPDATE {tasks} SET state = $2::jsonb, updated_at = now() WHERE actor = $1 AND key IS NULL

-- name: actor_retries
-- The actor's pending retries, earliest first.
SELECT q.* FROM {retries} q JOIN {tasks} t ON t.id = q.task_id
 WHERE t.actor = $1 AND t.key IS NULL ORDER BY q.retry_at, q.scheduled_for, q.attempt

-- name: status
-- Every actor's row (or the actor $1's), with its earliest retry, how many keyed schedules
-- it has pending, and how many of its rows (its own, its keyed schedules') last ran into a post
-- that Discord refused, with the latest one's key and reason (for the actors asked about only).
SELECT t.*, q.retry_at, coalesce(k.keyed, 0) AS keyed, coalesce(x.refused, 0) AS refused,
       x.refused_key, x.refused_reason
FROM {tasks} t
LEFT JOIN LATERAL (SELECT min(retry_at) AS retry_at FROM {retries}
                   WHERE task_id = t.id) q ON true
LEFT JOIN (SELECT t.actor, count(*) AS keyed FROM {tasks} t
           WHERE t.key IS NOT NULL AND ($1::text IS NULL OR t.actor = $1)
             AND {pending} GROUP BY t.actor) k
       ON k.actor = t.actor
LEFT JOIN (SELECT t.actor, count(*) AS refused,
                  (array_agg(t.key ORDER BY r.finished_at DESC))[1] AS refused_key,
                  (array_agg(r.error_message ORDER BY r.finished_at DESC))[1] AS refused_reason
           FROM {tasks} t JOIN {runs} r ON r.id = t.last_run_id
           WHERE r.error_type = 'DiscordRefused' AND ($1::text IS NULL OR t.actor = $1)
           GROUP BY t.actor) x
       ON x.actor = t.actor
WHERE t.removed_at IS NULL AND t.key IS NULL AND ($1::text IS NULL OR t.actor = $1)
ORDER BY t.actor

-- name: actor_task
SELECT * FROM {tasks} WHERE actor = $1 AND key IS NULL

-- name: task_row
SELECT * FROM {tasks} WHERE id = $1

-- name: history
SELECT r.*, t.actor, t.key, {keyed_zone}
FROM {runs} r JOIN {tasks} t ON t.id = r.task_id
WHERE ($1::text IS NULL OR t.actor = $1) AND ($2::text IS NULL OR r.status = $2)
ORDER BY r.started_at DESC, r.id DESC LIMIT $3

-- name: recent_runs
-- The newest $2 runs of each of the actors $1, without their tracebacks.
SELECT x.* FROM unnest($1::text[]) AS a(actor), LATERAL (
    SELECT r.id, r.task_id, r.scheduled_for, r.trigger, r.attempt, r.status,
           r.instance_id, r.started_at, r.finished_at, r.duration_ms, r.error_type,
           r.error_message, NULL::text AS error_traceback, r.posted, t.actor, t.key,
           {keyed_zone}
    FROM {runs} r JOIN {tasks} t ON t.id = r.task_id
    WHERE t.actor = a.actor
    ORDER BY r.started_at DESC, r.id DESC LIMIT $2
) x

-- name: run
SELECT r.*, t.actor, t.key, {keyed_zone} FROM {runs} r
 JOIN {tasks} t ON t.id = r.task_id WHERE r.id = $1

-- name: change_task
-- An operator's change to the actor $1's own row: {assignments} applied, on the row locked,
-- if {allowed} holds of the row as it was (old); both are fragments below.
WITH old AS (
    SELECT id, enabled, paused, paused_reason, manual_at FROM {tasks}
    WHERE actor = $1 AND key IS NULL AND removed_at IS NULL FOR UPDATE
), changed AS (
    UPDATE {tasks} t SET {assignments}, updated_at = now()
    FROM old WHERE t.id = old.id AND ({allowed})
    RETURNING t.next_run
)
SELECT old.*, c.next_run, EXISTS (SELECT 1 FROM changed) AS applied
FROM old LEFT JOIN changed c ON true

-- name: always
true

-- name: pause_assignments
-- $2: the reason.
paused = true, paused_reason = $2, paused_at = now()

-- name: resume_assignments
-- The slot $2 passed while paused moves on to $3 (due $4) if it is still the stored one.
paused = false, paused_reason = NULL, paused_at = NULL, consecutive_failures = 0,
 next_run = CASE WHEN old.paused AND t.next_run = $2 THEN $3 ELSE t.next_run END,
 due_at = CASE WHEN old.paused AND t.next_run = $2 THEN $4 ELSE t.due_at END

-- name: resume_keyed
-- Those of the actor's keyed schedules whose own circuit breaker tripped start afresh too.
UPDATE {tasks} SET paused = false, paused_reason = NULL,
 paused_at = NULL, consecutive_failures = 0, updated_at = now()
 WHERE actor = $1 AND key IS NOT NULL AND removed_at IS NULL AND paused

-- name: trigger_assignments
manual_at = coalesce(t.manual_at, clock_timestamp())

-- name: trigger_allowed
old.enabled AND NOT old.paused
