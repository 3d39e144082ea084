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

-- Keyed schedules' counters (migration 0006): tasks.counted says whether a keyed row is
-- counted as pending, and keyed_counts (an actor's, in shards) and keyed_owner_counts (an
-- owner's) hold the counts, with what runs and removals freed in keyed_count_changes and
-- keyed_owner_count_changes until it is folded in. Only an add (keyed_add below, or keyed.sql's
-- add_new_keyed for a new key) takes room in a counter, and it counts the rows it writes itself;
-- everything else that changes whether a row is pending (a run, a retry used up, a removal,
-- retention, the recovery of a dead process's runs) inserts a change row through the triggers
-- below and waits on no counter row.
--
-- Locks are always taken in one order, so that adds, runs and folds never wait on each other in
-- a circle: task rows (by key), owner counter rows (by owner), an actor's shards (by shard); a
-- change row is deleted only by whoever holds the counter row it folds into.

-- keyed_count_task: a keyed row changed or deleted. Before an update it sets counted to whether
-- the row is pending now; unless keyed_add is writing (it counts its own rows: the setting
-- discord_actor.keyed_add is 'on' inside it), each change of the counts becomes a change row.
CREATE OR REPLACE FUNCTION keyed_count_task() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    was boolean;
    was_owner text;
    now_pending boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO keyed_count_changes (actor, delta) VALUES (OLD.actor, -1);
        IF OLD.owner IS NOT NULL THEN
            INSERT INTO keyed_owner_count_changes (actor, owner, delta)
            VALUES (OLD.actor, OLD.owner, -1);
        END IF;
        RETURN OLD;
    END IF;
    was := OLD.counted;
    was_owner := OLD.owner;
    now_pending := NEW.removed_at IS NULL
        AND (NEW.next_run IS NOT NULL OR NEW.running > 0 OR NEW.manual_at IS NOT NULL);
    IF NOT now_pending AND NEW.removed_at IS NULL THEN
        now_pending := EXISTS (SELECT 1 FROM retries p WHERE p.task_id = NEW.id);
    END IF;
    NEW.counted := now_pending;
    IF current_setting('discord_actor.keyed_add', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF was <> now_pending THEN
        INSERT INTO keyed_count_changes (actor, delta)
        VALUES (NEW.actor, CASE WHEN now_pending THEN 1 ELSE -1 END);
    END IF;
    IF was AND was_owner IS NOT NULL
       AND (NOT now_pending OR was_owner IS DISTINCT FROM NEW.owner) THEN
        INSERT INTO keyed_owner_count_changes (actor, owner, delta)
        VALUES (NEW.actor, was_owner, -1);
    END IF;
    IF now_pending AND NEW.owner IS NOT NULL
       AND (NOT was OR was_owner IS DISTINCT FROM NEW.owner) THEN
        INSERT INTO keyed_owner_count_changes (actor, owner, delta)
        VALUES (NEW.actor, NEW.owner, 1);
    END IF;
    RETURN NEW;
END
$$;

-- keyed_count_retry: a retry added or taken, after the statement that did it (whose own
-- change of the task, a run finished or claimed, the task's trigger may have seen without the
-- retry). The task's row is locked before its retries are looked at, in a statement of their
-- own, so that what is read is what is committed: everything that adds or takes a retry holds
-- the task's row.
CREATE OR REPLACE FUNCTION keyed_count_retry() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_task bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.task_id ELSE NEW.task_id END;
    t record;
    now_pending boolean;
BEGIN
    SELECT k.counted, k.removed_at, k.next_run, k.running, k.manual_at INTO t
    FROM tasks k WHERE k.id = v_task AND k.key IS NOT NULL FOR UPDATE;
    IF NOT FOUND THEN  -- an actor's own row, or a task being deleted
        RETURN NULL;
    END IF;
    now_pending := t.removed_at IS NULL
        AND (t.next_run IS NOT NULL OR t.running > 0 OR t.manual_at IS NOT NULL);
    IF NOT now_pending AND t.removed_at IS NULL THEN
        now_pending := EXISTS (SELECT 1 FROM retries p WHERE p.task_id = v_task);
    END IF;
    IF now_pending IS DISTINCT FROM t.counted THEN  -- the task's trigger counts the change
        UPDATE tasks SET counted = now_pending WHERE id = v_task;
    END IF;
    RETURN NULL;
END
$$;

-- keyed_shard: the shard of an actor's count that this connection takes room in.
CREATE OR REPLACE FUNCTION keyed_shard() RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$ SELECT 32::smallint $$;

-- keyed_make_room: room for p_adding more pending schedules of p_actor in the shard p_shard,
-- when that shard has none (or its caps were shared out for another limit): with every shard
-- of the actor locked, what was freed is folded in, and if the actor's count leaves room under
-- p_max, the room left is shared out again among the shards (this one gets its share and the
-- remainder). Raises the limit error otherwise.
CREATE OR REPLACE FUNCTION keyed_make_room(
    p_actor text, p_shard smallint, p_adding bigint, p_max bigint
) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    shards constant integer := keyed_shard();
    total bigint;
    free bigint;
BEGIN
    INSERT INTO keyed_counts (actor, shard)
    SELECT p_actor, s FROM generate_series(0, shards - 1) s ON CONFLICT DO NOTHING;
    PERFORM 1 FROM keyed_counts c WHERE c.actor = p_actor ORDER BY c.shard FOR UPDATE;
    WITH freed AS (DELETE FROM keyed_count_changes d WHERE d.actor = p_actor RETURNING d.delta)
    UPDATE keyed_counts c SET pending = c.pending + (SELECT coalesce(sum(delta), 0) FROM freed)
    WHERE c.actor = p_actor AND c.shard = p_shard;
    SELECT sum(c.pending) INTO total FROM keyed_counts c WHERE c.actor = p_actor;
    IF total + p_adding > p_max THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'discord_actor.keyed_limit',
            DETAIL = json_build_object('setting', 'max_schedules', 'limit', p_max,
                                       'pending', total, 'adding', p_adding, 'owner', NULL);
    END IF;
    free := p_max - total - p_adding;
    UPDATE keyed_counts c SET
        pending = c.pending + CASE WHEN c.shard = p_shard THEN p_adding ELSE 0 END,
        cap = c.pending + free / shards
              + CASE WHEN c.shard = p_shard THEN p_adding + free % shards ELSE 0 END,
        lim = p_max
    WHERE c.actor = p_actor;
END
$$;

-- keyed_take_room: room taken in the counters for what keyed_add writes: p_owners (in owner
-- order) p_owner_adding more each, p_adding more for the actor; p_freed_owners p_freed (< 0)
-- noted as changes. Raises the limit error when an owner or the actor has no room left.
CREATE OR REPLACE FUNCTION keyed_take_room(
    p_actor text, p_owners text[], p_owner_adding bigint[], p_freed_owners text[],
    p_freed bigint[], p_adding bigint, p_max bigint, p_max_per_owner bigint
) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_taken text[];
    v_held bigint;
    v_shard smallint;
BEGIN
    IF p_freed_owners IS NOT NULL THEN
        INSERT INTO keyed_owner_count_changes (actor, owner, delta)
        SELECT p_actor, o.owner, o.d FROM unnest(p_freed_owners, p_freed) AS o(owner, d);
    END IF;
    IF array_length(p_owners, 1) = 1 THEN  -- one owner: a plain statement
        IF p_max_per_owner IS NULL OR p_owner_adding[1] <= p_max_per_owner THEN
            INSERT INTO keyed_owner_counts AS k (actor, owner, pending)
            VALUES (p_actor, p_owners[1], p_owner_adding[1])
            ON CONFLICT (actor, owner) DO UPDATE SET pending = k.pending + EXCLUDED.pending
            WHERE p_max_per_owner IS NULL OR k.pending + EXCLUDED.pending <= p_max_per_owner;
            IF FOUND THEN
                v_taken := p_owners;
            END IF;
        END IF;
    ELSIF p_owners IS NOT NULL THEN
        -- One statement for all the owners with room as counted (their rows locked, in owner
        -- order, whether they have room or not).
        WITH want AS (
            SELECT o.owner, o.d FROM unnest(p_owners, p_owner_adding) AS o(owner, d)
            WHERE p_max_per_owner IS NULL OR o.d <= p_max_per_owner
            ORDER BY o.owner
        ), took AS (
            INSERT INTO keyed_owner_counts AS k (actor, owner, pending)
            SELECT p_actor, w.owner, w.d FROM want w
            ON CONFLICT (actor, owner) DO UPDATE SET pending = k.pending + EXCLUDED.pending
            WHERE p_max_per_owner IS NULL OR k.pending + EXCLUDED.pending <= p_max_per_owner
            RETURNING k.owner
        )
        SELECT array_agg(t.owner) INTO v_taken FROM took t;
    END IF;
    IF p_owners IS NOT NULL THEN
        FOR i IN 1 .. array_length(p_owners, 1) LOOP
            CONTINUE WHEN p_owners[i] = ANY (coalesce(v_taken, '{}'));
            IF p_owner_adding[i] > p_max_per_owner THEN  -- more than the limit at once
                SELECT coalesce(sum(x.n), 0) INTO v_held FROM (
                    SELECT k.pending AS n FROM keyed_owner_counts k
                    WHERE k.actor = p_actor AND k.owner = p_owners[i]
                    UNION ALL SELECT d.delta FROM keyed_owner_count_changes d
                    WHERE d.actor = p_actor AND d.owner = p_owners[i]) x;
            ELSE
                -- Full as counted: fold in what was freed (the row is locked by the attempt
                -- above, so no one else folds this owner's changes meanwhile).
                WITH freed AS (
                    DELETE FROM keyed_owner_count_changes d
                    WHERE d.actor = p_actor AND d.owner = p_owners[i] RETURNING d.delta
                )
                UPDATE keyed_owner_counts k
                SET pending = k.pending + (SELECT coalesce(sum(f.delta), 0) FROM freed f)
                WHERE k.actor = p_actor AND k.owner = p_owners[i]
                RETURNING k.pending INTO v_held;
            END IF;
            IF v_held + p_owner_adding[i] > p_max_per_owner THEN
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'discord_actor.keyed_limit',
                    DETAIL = json_build_object('setting', 'max_schedules_per_owner',
                        'limit', p_max_per_owner, 'pending', v_held,
                        'adding', p_owner_adding[i], 'owner', p_owners[i]);
            END IF;
            UPDATE keyed_owner_counts k SET pending = k.pending + p_owner_adding[i]
            WHERE k.actor = p_actor AND k.owner = p_owners[i];
        END LOOP;
    END IF;
    -- The actor: room in this connection's shard, else shared out again.
    IF p_adding < 0 THEN
        INSERT INTO keyed_count_changes (actor, delta) VALUES (p_actor, p_adding);
    ELSIF p_adding > 0 THEN
        v_shard := pg_backend_pid() % keyed_shard();
        UPDATE keyed_counts c SET pending = c.pending + p_adding
        WHERE c.actor = p_actor AND c.shard = v_shard AND c.lim = p_max
          AND c.pending + p_adding <= c.cap;
        IF NOT FOUND THEN
            PERFORM keyed_make_room(p_actor, v_shard, p_adding, p_max);
        END IF;
    END IF;
END
$$;

-- keyed_again: the error of keyed.sql's add_new_keyed when a counter has no room as counted
-- (its insert is undone; keyed_add then folds what was freed and decides).
CREATE OR REPLACE FUNCTION keyed_again() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'discord_actor.keyed_again';
END
$$;

-- keyed_add: write keyed schedules of p_actor (the arrays: one element per schedule) in the
-- caller's transaction, all or none, checking the actor's limits; one row per key given, with
-- what became of it: 'added' (new, or armed again after it ran or was removed), 'replaced'
-- (pending with another definition, and p_replace) or 'unchanged' (pending with this one).
-- A key given twice: the last one counts. p_max_per_owner NULL: no limit per owner. p_notify:
-- the channel to notify (NULL: none). Errors, writing nothing: P0001 'discord_actor.keyed_limit'
-- with the limit as JSON in its detail; P0001 'discord_actor.keyed_conflict' with the keys
-- pending with another definition (and not p_replace) as a JSON array in its detail; P0002,
-- no row of the actor; 40001, a key of these that was there is gone (call again).
--
-- New keys are inserted first, by key, the unique index deciding between concurrent adds of
-- one key; only keys that are there already are locked and looked at.
CREATE OR REPLACE FUNCTION keyed_add(
    p_actor text, p_keys text[], p_schedules jsonb[], p_hashes text[],
    p_next_runs timestamptz[], p_due timestamptz[], p_payloads jsonb[], p_channels bigint[],
    p_owners text[], p_replace boolean, p_max bigint, p_max_per_owner bigint, p_notify text
) RETURNS TABLE (key text, change text)
LANGUAGE plpgsql SET search_path FROM CURRENT SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_actor_found boolean;
    v_given bigint;
    v_added text[];
    v_adding bigint;
    v_owners text[];
    v_owner_adding bigint[];
    v_added_set jsonb;
    v_rewritten_set jsonb;
    v_conflicts text[];
    v_unchanged text[];
    v_rearmed text[];
    v_replaced text[];
    v_rewritten bigint[];
    v_found bigint;
    v_freed_owners text[];
    v_freed bigint[];
BEGIN
    -- keyed_add counts its own rows: the triggers only set counted.
    PERFORM set_config('discord_actor.keyed_add', 'on', true);
    IF array_length(p_keys, 1) = 1 THEN  -- Schedules.add: plain statements, cheaper to run
        INSERT INTO tasks (actor, key, schedule, schedule_hash, max_instances, max_attempts,
                           next_run, due_at, payload, channel_id, owner, counted)
        SELECT p_actor, p_keys[1], p_schedules[1], p_hashes[1], a.max_instances, a.max_attempts,
               p_next_runs[1], p_due[1], p_payloads[1], p_channels[1], p_owners[1],
               p_next_runs[1] IS NOT NULL
        FROM tasks a WHERE a.actor = p_actor AND a.key IS NULL
        ON CONFLICT (actor, key) WHERE key IS NOT NULL DO NOTHING;
        GET DIAGNOSTICS v_given = ROW_COUNT;
        IF v_given = 1 THEN
            v_actor_found := true;
            v_added := p_keys;
            v_added_set := jsonb_build_object(p_keys[1], true);
            v_adding := (p_next_runs[1] IS NOT NULL)::int;
            IF v_adding = 1 AND p_owners[1] IS NOT NULL THEN
                v_owners := p_owners;
                v_owner_adding := ARRAY[1];
            END IF;
        ELSE
            v_actor_found := EXISTS (SELECT FROM tasks a WHERE a.actor = p_actor AND a.key IS NULL);
            v_adding := 0;
        END IF;
        v_given := 1;
    ELSE
        WITH v AS (
            SELECT DISTINCT ON (u.key) u.*
            FROM unnest(p_keys, p_schedules, p_hashes, p_next_runs, p_due, p_payloads, p_channels,
                        p_owners) WITH ORDINALITY
                 AS u(key, schedule, hash, next_run, due_at, payload, channel_id, owner, n)
            ORDER BY u.key, u.n DESC
        ), a AS (
            SELECT a.max_instances, a.max_attempts FROM tasks a
            WHERE a.actor = p_actor AND a.key IS NULL
        ), ins AS (
            INSERT INTO tasks (actor, key, schedule, schedule_hash, max_instances, max_attempts,
                               next_run, due_at, payload, channel_id, owner, counted)
            SELECT p_actor, v.key, v.schedule, v.hash, a.max_instances, a.max_attempts,
                   v.next_run, v.due_at, v.payload, v.channel_id, v.owner, v.next_run IS NOT NULL
            FROM v CROSS JOIN a ORDER BY v.key
            ON CONFLICT (actor, key) WHERE key IS NOT NULL DO NOTHING
            RETURNING tasks.key, tasks.owner, tasks.counted
        ), own AS (
            SELECT i.owner, count(*) AS d FROM ins i WHERE i.counted AND i.owner IS NOT NULL
            GROUP BY i.owner
        )
        SELECT EXISTS (SELECT FROM a), (SELECT count(*) FROM v),
               (SELECT array_agg(i.key) FROM ins i),
               (SELECT jsonb_object_agg(i.key, true) FROM ins i),
               (SELECT count(*) FILTER (WHERE i.counted) FROM ins i),
               (SELECT array_agg(o.owner ORDER BY o.owner) FROM own o),
               (SELECT array_agg(o.d ORDER BY o.owner) FROM own o)
        INTO v_actor_found, v_given, v_added, v_added_set, v_adding, v_owners, v_owner_adding;
    END IF;
    IF NOT v_actor_found THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('no row of actor %s', p_actor);
    END IF;
    IF coalesce(array_length(v_added, 1), 0) < v_given THEN
        -- Keys that are there: locked by key, then read afresh.
        v_added_set := coalesce(v_added_set, '{}');
        PERFORM 1 FROM tasks t WHERE t.actor = p_actor AND t.key = ANY (p_keys)
          AND t.key IS NOT NULL AND NOT v_added_set ? t.key ORDER BY t.key FOR UPDATE;
        WITH v AS (
            SELECT DISTINCT ON (u.key) u.key, u.hash, u.next_run, u.owner, u.n
            FROM unnest(p_keys, p_hashes, p_next_runs, p_owners) WITH ORDINALITY
                 AS u(key, hash, next_run, owner, n)
            WHERE NOT v_added_set ? u.key
            ORDER BY u.key, u.n DESC
        ), c AS MATERIALIZED (
            SELECT v.key, v.n, o.id, o.counted AS was, o.owner AS was_owner, v.owner,
                   o.counted AND o.schedule_hash <> v.hash AND NOT p_replace AS conflict,
                   NOT o.counted OR o.schedule_hash <> v.hash AS writes,
                   -- pending once written: a slot, or a run in flight (its retries go)
                   v.next_run IS NOT NULL OR o.running > 0 AS counts
            FROM v JOIN tasks o ON o.actor = p_actor AND o.key = v.key AND o.key IS NOT NULL
        ), owner_changes AS MATERIALIZED (
            SELECT x.owner, sum(x.d)::bigint AS d FROM (
                SELECT o.owner, o.d FROM unnest(v_owners, v_owner_adding) AS o(owner, d)
                UNION ALL
                SELECT c.was_owner, -1 FROM c WHERE c.writes AND c.was AND c.was_owner IS NOT NULL
                UNION ALL
                SELECT c.owner, 1 FROM c WHERE c.writes AND c.counts AND c.owner IS NOT NULL
            ) x GROUP BY x.owner HAVING sum(x.d) <> 0
        )
        SELECT (SELECT count(*) FROM c),
               (SELECT array_agg(c.key ORDER BY c.n) FROM c WHERE c.conflict),
               (SELECT array_agg(c.key ORDER BY c.n) FROM c WHERE NOT c.writes),
               (SELECT array_agg(c.key ORDER BY c.n) FROM c WHERE c.writes AND NOT c.was),
               (SELECT array_agg(c.key ORDER BY c.n) FROM c WHERE c.writes AND c.was),
               (SELECT array_agg(c.id) FROM c WHERE c.writes),
               (SELECT jsonb_object_agg(c.key, true) FROM c WHERE c.writes),
               v_adding + (SELECT coalesce(sum(c.counts::int - c.was::int), 0) FROM c WHERE c.writes),
               (SELECT array_agg(o.owner ORDER BY o.owner) FROM owner_changes o WHERE o.d > 0),
               (SELECT array_agg(o.d ORDER BY o.owner) FROM owner_changes o WHERE o.d > 0),
               (SELECT array_agg(o.owner) FROM owner_changes o WHERE o.d < 0),
               (SELECT array_agg(o.d) FROM owner_changes o WHERE o.d < 0)
        INTO v_found, v_conflicts, v_unchanged, v_rearmed, v_replaced, v_rewritten,
             v_rewritten_set, v_adding,
             v_owners, v_owner_adding, v_freed_owners, v_freed;
        IF v_found < v_given - coalesce(array_length(v_added, 1), 0) THEN
            RAISE EXCEPTION USING ERRCODE = '40001',  -- deleted by retention meanwhile
                MESSAGE = 'a keyed schedule of these keys went meanwhile';
        END IF;
        IF v_conflicts IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'discord_actor.keyed_conflict',
                DETAIL = to_json(v_conflicts);
        END IF;
        IF v_rewritten IS NOT NULL THEN
            -- A retry of an old definition has nothing left to retry.
            DELETE FROM retries q WHERE q.task_id = ANY (v_rewritten);
            -- A key written again is armed afresh (its history stays).
            UPDATE tasks t SET
                schedule = v.schedule, schedule_hash = v.hash, next_run = v.next_run,
                due_at = v.due_at, payload = v.payload, channel_id = v.channel_id,
                owner = v.owner, removed_at = NULL, manual_at = NULL,
                paused = false, paused_reason = NULL, paused_at = NULL,
                consecutive_failures = 0, updated_at = now(),
                counted = v.next_run IS NOT NULL OR t.running > 0
            FROM (SELECT DISTINCT ON (u.key) u.*
                  FROM unnest(p_keys, p_schedules, p_hashes, p_next_runs, p_due, p_payloads,
                              p_channels, p_owners) WITH ORDINALITY
                       AS u(key, schedule, hash, next_run, due_at, payload, channel_id, owner, n)
                  ORDER BY u.key, u.n DESC) v
            WHERE v_rewritten_set ? v.key AND t.actor = p_actor AND t.key = v.key
              AND t.key IS NOT NULL;
        END IF;
    END IF;
    PERFORM keyed_take_room(p_actor, v_owners, v_owner_adding, v_freed_owners, v_freed,
                            v_adding, p_max, p_max_per_owner);
    IF p_notify IS NOT NULL AND (v_added IS NOT NULL OR v_rearmed IS NOT NULL
                                 OR v_replaced IS NOT NULL) THEN
        PERFORM pg_notify(p_notify, '');  -- something is due before the servers' next look
    END IF;
    PERFORM set_config('discord_actor.keyed_add', 'off', true);
    IF v_given = 1 THEN  -- one key: no statement to run
        key := p_keys[1];
        change := CASE WHEN v_added IS NOT NULL OR v_rearmed IS NOT NULL THEN 'added'
                       WHEN v_replaced IS NOT NULL THEN 'replaced' ELSE 'unchanged' END;
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT k, 'added'::text FROM unnest(v_added) k
        UNION ALL SELECT k, 'added' FROM unnest(v_rearmed) k
        UNION ALL SELECT k, 'replaced' FROM unnest(v_replaced) k
        UNION ALL SELECT k, 'unchanged' FROM unnest(v_unchanged) k;
END
$$;

-- keyed_fold_counts: what runs and removals freed, folded into the counters (retention does it
-- at every pass, so that the change rows stay few). Locks as an add does: owners, then shards.
CREATE OR REPLACE FUNCTION keyed_fold_counts() RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    folded bigint := 0;
    v_n bigint;
    actors text[];
    owner_actors text[];
    owner_names text[];
BEGIN
    SELECT array_agg(x.actor ORDER BY x.actor, x.owner), array_agg(x.owner ORDER BY x.actor, x.owner)
    INTO owner_actors, owner_names
    FROM (SELECT DISTINCT d.actor, d.owner FROM keyed_owner_count_changes d) x;
    IF owner_actors IS NOT NULL THEN
        INSERT INTO keyed_owner_counts (actor, owner)
        SELECT * FROM unnest(owner_actors, owner_names) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM keyed_owner_counts k
        WHERE (k.actor, k.owner) IN (SELECT * FROM unnest(owner_actors, owner_names))
        ORDER BY k.actor, k.owner FOR UPDATE;
        WITH freed AS (
            DELETE FROM keyed_owner_count_changes d
            WHERE (d.actor, d.owner) IN (SELECT * FROM unnest(owner_actors, owner_names))
            RETURNING d.actor, d.owner, d.delta
        ), sums AS (
            SELECT f.actor, f.owner, sum(f.delta) AS s, count(*) AS n FROM freed f
            GROUP BY f.actor, f.owner
        ), applied AS (
            UPDATE keyed_owner_counts k SET pending = k.pending + s.s
            FROM sums s WHERE k.actor = s.actor AND k.owner = s.owner
        )
        SELECT coalesce(sum(s.n), 0) INTO v_n FROM sums s;
        folded := folded + v_n;
        -- An owner with nothing pending keeps no row (an add makes it again).
        DELETE FROM keyed_owner_counts k
        WHERE (k.actor, k.owner) IN (SELECT * FROM unnest(owner_actors, owner_names))
          AND k.pending = 0;
    END IF;
    SELECT array_agg(DISTINCT d.actor ORDER BY d.actor) INTO actors FROM keyed_count_changes d;
    FOR i IN 1 .. coalesce(array_length(actors, 1), 0) LOOP
        INSERT INTO keyed_counts (actor, shard) VALUES (actors[i], 0) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM keyed_counts c WHERE c.actor = actors[i] ORDER BY c.shard FOR UPDATE;
        WITH freed AS (
            DELETE FROM keyed_count_changes d WHERE d.actor = actors[i] RETURNING d.delta
        ), applied AS (
            UPDATE keyed_counts c SET pending = c.pending + (SELECT coalesce(sum(f.delta), 0) FROM freed f)
            WHERE c.actor = actors[i] AND c.shard = 0
        )
        SELECT count(*) INTO v_n FROM freed;
        folded := folded + v_n;
    END LOOP;
    RETURN folded;
END
$$;
