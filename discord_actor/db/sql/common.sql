-- Fragments and statements shared by several parts of the store (see discord_actor/db/queries.py).
-- A statement starts at its "-- name:" line; the comment lines right after it say what it is for
-- and are not sent. {tasks}, {runs}, {retries}, {instances} and {schema} are the schema's
-- tables, quoted; any other {name} is the fragment of that name. Values are always $n parameters.

-- name: task_view_columns
-- What the scheduler keeps of a task that has work due soon (records.TaskView): returned by the
-- due window, by views and by finish. The retry is the task's earliest pending one.
t.id, t.actor, t.enabled, t.paused, t.max_instances, t.next_run, t.due_at,
q.scheduled_for AS retry_slot, q.attempt AS retry_attempt, q.retry_at, t.manual_at,
t.key, CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule::text END AS keyed_schedule

-- name: earliest_retry
-- The task's earliest pending retry, as q (joined to the task t).
LEFT JOIN LATERAL (
    SELECT scheduled_for, attempt, retry_at FROM {retries}
    WHERE task_id = t.id ORDER BY retry_at, scheduled_for, attempt LIMIT 1
) q ON true

-- name: keyed_zone
-- The zone a keyed schedule's runs are shown in (its own; NULL: its actor's).
CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule->>'timezone' END AS key_zone

-- name: actor_live
-- A keyed schedule obeys its actor's switches, which live on the actor's row (key NULL).
(t.key IS NULL OR EXISTS (
    SELECT 1 FROM {tasks} a WHERE a.actor = t.actor AND a.key IS NULL
      AND a.enabled AND NOT a.paused AND a.removed_at IS NULL))

-- name: pending
-- A keyed schedule is pending while it has anything left to run: a slot, a trigger, a run in
-- flight or a retry. A once that has run, or used up its retries, is not. tasks.counted holds
-- the same for each keyed row (kept by the triggers of functions.sql), as the counters have it.
(t.removed_at IS NULL AND (t.next_run IS NOT NULL OR t.running > 0
    OR t.manual_at IS NOT NULL OR EXISTS (SELECT 1 FROM {retries} p WHERE p.task_id = t.id)))

-- name: notify
-- Wake the running servers ($1: the schema's channel; $2: what happened, or '').
SELECT pg_notify($1, $2)

-- name: table_rows
-- How many rows the planner's statistics know of in a table ($1: its name).
SELECT reltuples FROM pg_class WHERE oid = $1::regclass

-- name: analyze_tasks
ANALYZE {tasks}
