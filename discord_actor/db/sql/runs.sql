-- The scheduler's hot path (discord_actor/db/runs.py): a run costs at most two round trips,
-- claim_runs and finish_runs; due_window is read every poll interval, not per run.

-- name: due_window
-- What is due up to $1, earliest first, at most $2 of each kind: keyed schedules' slots, the
-- actors' own slots (kind 'o', apart, so that a burst of keyed slots does not crowd them out),
-- manual triggers and retries, each through its own index. kind says which part found the row, so
-- that the caller can tell whether a part was cut off by the limit. MATERIALIZED: the due rows
-- are found once; inlined, a plan made on stale statistics (a table just filled) ran the whole
-- union again for every task row it joined (3 s for 2,000 rows instead of 10 ms).
WITH due AS MATERIALIZED (
    (SELECT t.id, 's' AS kind, t.due_at AS at FROM {tasks} t
     WHERE t.key IS NOT NULL AND t.due_at <= $1 AND t.enabled AND NOT t.paused
       AND t.removed_at IS NULL
       AND t.running < t.max_instances AND {actor_live}
     ORDER BY t.due_at LIMIT $2)
    UNION ALL
    (SELECT t.id, 'o', t.due_at FROM {tasks} t
     WHERE t.key IS NULL AND t.due_at <= $1 AND t.enabled AND NOT t.paused
       AND t.removed_at IS NULL AND t.running < t.max_instances AND {actor_live}
     ORDER BY t.due_at LIMIT $2)
    UNION ALL
    (SELECT t.id, 'm', t.manual_at FROM {tasks} t
     WHERE t.manual_at IS NOT NULL AND t.enabled AND NOT t.paused AND t.removed_at IS NULL
       AND t.running < t.max_instances AND {actor_live}
     LIMIT $2)
    UNION ALL
    (SELECT task_id, 'r', retry_at FROM {retries} WHERE retry_at <= $1 ORDER BY retry_at LIMIT $2)
)
SELECT due.kind, due.at, {task_view_columns}
FROM due JOIN {tasks} t ON t.id = due.id
{earliest_retry}
WHERE t.enabled AND NOT t.paused AND t.removed_at IS NULL AND {actor_live}

-- name: task_views
-- The current rows of the tasks $1 (whatever their state).
SELECT {task_view_columns} FROM {tasks} t {earliest_retry} WHERE t.id = ANY($1::bigint[])

-- name: claim_runs
-- Lock the tasks, advance their next slots and insert the runs, for every run due in a pass.
-- Each task row counts its runs in flight (running), so that max_instances is checked on the
-- locked row itself: a count of the runs table would be read from the statement's snapshot,
-- which a concurrent claim can outdate.
WITH want AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $5::int[],
                         $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[],
                         $10::timestamptz[], $11::text[])
        AS w(task_id, kind, expected, attempt, scheduled_for, trigger, status,
             new_next_run, new_due_at, note)
), picked AS (
    SELECT t.id, t.actor, t.state, w.*
    FROM {tasks} t JOIN want w ON w.task_id = t.id
    WHERE t.enabled AND NOT t.paused AND t.removed_at IS NULL AND {actor_live}
      AND CASE w.kind
            WHEN 'schedule' THEN t.next_run = w.expected AND t.due_at <= $12
            WHEN 'retry' THEN EXISTS (
                SELECT 1 FROM {retries} q
                WHERE q.task_id = t.id AND q.scheduled_for = w.expected
                  AND q.attempt = w.attempt AND q.retry_at <= $12)
            ELSE t.manual_at = w.expected
          END
      AND (w.status = 'skipped' OR t.running < t.max_instances)
    FOR UPDATE OF t SKIP LOCKED
), consumed AS (
    DELETE FROM {retries} q USING picked p
    WHERE p.kind = 'retry' AND q.task_id = p.id AND q.scheduled_for = p.expected
      AND q.attempt = p.attempt
), started AS (
    INSERT INTO {runs} (task_id, scheduled_for, trigger, attempt, status, instance_id,
                        finished_at, duration_ms, error_message)
    SELECT p.id, p.scheduled_for, p.trigger, p.attempt, p.status, $1,
           CASE WHEN p.status = 'skipped' THEN now() END,
           CASE WHEN p.status = 'skipped' THEN 0 END,
           p.note
    FROM picked p
    ON CONFLICT (task_id, scheduled_for, attempt) DO NOTHING
    RETURNING id, task_id, scheduled_for, attempt, trigger, status
), advanced AS (
    UPDATE {tasks} t SET
        next_run = CASE WHEN p.kind = 'schedule' THEN p.new_next_run ELSE t.next_run END,
        due_at = CASE WHEN p.kind = 'schedule' THEN p.new_due_at ELSE t.due_at END,
        manual_at = CASE WHEN p.kind = 'manual' THEN NULL ELSE t.manual_at END,
        running = t.running + CASE WHEN s.status = 'running' THEN 1 ELSE 0 END,
        last_status = CASE WHEN s.status = 'skipped' THEN 'skipped' ELSE t.last_status END,
        updated_at = now()
    FROM picked p LEFT JOIN started s ON s.task_id = p.id
    WHERE t.id = p.id
)
SELECT s.*, t.actor, t.state, t.key, t.payload, t.channel_id,
       CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule::text END AS keyed_schedule
FROM started s JOIN {tasks} t ON t.id = s.task_id

-- name: finish_runs
-- Each outcome goes through the schema's finish_run function (functions.sql), in order: the
-- run, the new state, the retry and the circuit breaker together.
SELECT i.n, f.*
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
            $7::jsonb[], $8::timestamptz[], $9::bool[], $10::int[]) WITH ORDINALITY
     AS i(run_id, status, error_type, error_message, error_traceback, posted, state, retry_at,
          counts_as_failure, max_failures, n)
CROSS JOIN LATERAL {schema}.finish_run(i.run_id, i.status, i.error_type, i.error_message,
    i.error_traceback, i.posted, i.state, i.retry_at, i.counts_as_failure, i.max_failures) f
ORDER BY i.n

-- name: checkpoint
-- Save a running run's state now; nothing when the run $2 is no longer running.
UPDATE {tasks} SET state = $3::jsonb, updated_at = now() WHERE id = $1
 AND EXISTS (SELECT 1 FROM {runs} WHERE id = $2 AND status = 'running')

-- name: lost_claims
-- The runs process $1 owns and is not running ($2: those it knows): claimed by a statement
-- that committed but whose answer was lost with its connection. As claim_runs returns them.
SELECT r.id, r.task_id, r.scheduled_for, r.attempt, r.trigger, r.status, t.actor, t.state,
       t.key, t.payload, t.channel_id,
       CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule::text END AS keyed_schedule
FROM {runs} r JOIN {tasks} t ON t.id = r.task_id
WHERE r.instance_id = $1 AND r.status = 'running' AND NOT (r.id = ANY($2::bigint[]))
ORDER BY r.id

-- name: run_statuses
-- How the runs $1 are recorded now: after a write whose answer was lost, which outcomes it
-- stored (a final status other than abandoned) and which runs another process abandoned.
SELECT id, status FROM {runs} WHERE id = ANY($1::bigint[])
