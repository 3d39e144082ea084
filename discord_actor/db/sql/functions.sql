-- The schema's server-side functions, applied with search_path set to the schema, under the
-- migration lock, after the migrations, at every start (discord_actor/db/migrations.py): a
-- function's one definition lives here, and a change to it needs no migration. CREATE OR
-- REPLACE cannot change a function's arguments or the columns it returns: a change to those
-- needs a migration that drops the old function first (as 0005_keyed_schedules did).

-- finish_run records a run's outcome, so that the runtime can record many outcomes in one
-- statement (one round trip, one commit) and each is still applied on its own, in order: the
-- run, the actor's state and circuit breaker, a retry. It returns nothing when the run is no
-- longer running (another process declared it abandoned), and the task's key and keyed
-- definition: after a keyed schedule's run the scheduler computes its next slot from its own
-- schedule, not its actor's.
CREATE OR REPLACE FUNCTION finish_run(
    p_run_id bigint, p_status text, p_error_type text, p_error_message text,
    p_error_traceback text, p_posted jsonb, p_state jsonb, p_retry_at timestamptz,
    p_counts_as_failure boolean, p_max_failures integer
) RETURNS TABLE (
    id bigint, actor text, enabled boolean, paused boolean, max_instances integer,
    next_run timestamptz, due_at timestamptz, manual_at timestamptz, paused_reason text,
    consecutive_failures integer, was_paused boolean, scheduled_for timestamptz, attempt integer,
    retry_slot timestamptz, retry_attempt integer, retry_at timestamptz,
    key text, keyed_schedule text
) LANGUAGE sql SET search_path FROM CURRENT AS $$
WITH finished AS (
    UPDATE runs SET status = p_status, finished_at = now(),
        duration_ms = extract(epoch FROM now() - started_at) * 1000,
        error_type = p_error_type, error_message = p_error_message,
        error_traceback = p_error_traceback, posted = p_posted
    WHERE runs.id = p_run_id AND runs.status = 'running'
    RETURNING runs.id, runs.task_id, runs.scheduled_for, runs.attempt
), before AS (
    SELECT t.id, t.paused FROM tasks t JOIN finished f ON f.task_id = t.id
), task AS (
    UPDATE tasks t SET
        state = coalesce(p_state, t.state),
        running = greatest(t.running - 1, 0),
        last_run_id = f.id, last_run_at = now(), last_status = p_status,
        consecutive_failures = CASE WHEN p_status = 'succeeded' THEN 0
                                    WHEN p_counts_as_failure THEN t.consecutive_failures + 1
                                    ELSE t.consecutive_failures END,
        paused = t.paused OR (p_counts_as_failure AND t.consecutive_failures + 1 >= p_max_failures),
        paused_reason = CASE WHEN NOT t.paused AND p_counts_as_failure
                                  AND t.consecutive_failures + 1 >= p_max_failures
                             THEN format('circuit breaker: %s consecutive failures', p_max_failures)
                             ELSE t.paused_reason END,
        paused_at = CASE WHEN NOT t.paused AND p_counts_as_failure
                              AND t.consecutive_failures + 1 >= p_max_failures
                         THEN now() ELSE t.paused_at END,
        updated_at = now()
    FROM finished f WHERE t.id = f.task_id
    RETURNING t.id, t.actor, t.enabled, t.paused, t.max_instances, t.next_run, t.due_at,
              t.manual_at, t.paused_reason, t.consecutive_failures, t.key,
              CASE WHEN t.key IS NULL THEN NULL ELSE t.schedule::text END AS keyed_schedule
), retried AS (
    INSERT INTO retries (task_id, scheduled_for, attempt, retry_at)
    SELECT f.task_id, f.scheduled_for, f.attempt + 1, p_retry_at
    FROM finished f WHERE p_retry_at IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT task.id, task.actor, task.enabled, task.paused, task.max_instances, task.next_run,
       task.due_at, task.manual_at, task.paused_reason, task.consecutive_failures,
       b.paused, f.scheduled_for, f.attempt, q.scheduled_for, q.attempt, q.retry_at,
       task.key, task.keyed_schedule
FROM task JOIN finished f ON f.task_id = task.id JOIN before b ON b.id = task.id
LEFT JOIN LATERAL (
    SELECT r.scheduled_for, r.attempt, r.retry_at FROM retries r
    WHERE r.task_id = task.id ORDER BY r.retry_at, r.scheduled_for, r.attempt LIMIT 1
) q ON true
$$;
