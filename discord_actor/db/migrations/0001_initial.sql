-- discord-actor schema, version 1.
-- Applied with search_path set to the configured schema, inside one transaction,
-- under an advisory lock (see discord_actor/db/migrations.py).

-- One row per running process. A process renews heartbeat_at; when it stops doing so for
-- longer than the lease, its running runs are marked abandoned by any other process.
CREATE TABLE instances (
    id            text PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    lease_seconds double precision NOT NULL
);

-- One row per actor. Holds everything the scheduler needs: the normalized schedule and its
-- hash (to notice config changes), the next slot, a pending manual trigger, the number of runs
-- in flight, the circuit breaker and the actor's durable state.
CREATE TABLE tasks (
    id                   bigserial PRIMARY KEY,
    actor                text NOT NULL UNIQUE,
    enabled              boolean NOT NULL DEFAULT true,
    removed_at           timestamptz,             -- gone from the config; history kept
    schedule             jsonb NOT NULL,
    schedule_hash        text NOT NULL,
    max_instances        integer NOT NULL DEFAULT 1,
    max_attempts         integer NOT NULL DEFAULT 1,  -- retry.attempts, for recovering abandoned runs
    next_run             timestamptz,             -- next slot; NULL = no more slots
    due_at               timestamptz,             -- next_run plus jitter
    running              integer NOT NULL DEFAULT 0,  -- runs in flight, for max_instances
    manual_at            timestamptz,             -- pending manual trigger (coalesced)
    paused               boolean NOT NULL DEFAULT false,
    paused_reason        text,
    paused_at            timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_run_id          bigint,
    last_run_at          timestamptz,
    last_status          text,
    state                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per run attempt. The unique key makes a duplicate run of a slot impossible.
CREATE TABLE runs (
    id              bigserial PRIMARY KEY,
    task_id         bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    scheduled_for   timestamptz NOT NULL,
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'startup', 'manual', 'retry', 'catch_up')),
    attempt         integer NOT NULL DEFAULT 1,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out',
                                                    'cancelled', 'abandoned', 'skipped')),
    instance_id     text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    duration_ms     double precision,
    error_type      text,
    error_message   text,
    error_traceback text,
    posted          jsonb NOT NULL DEFAULT '[]'::jsonb,
    UNIQUE (task_id, scheduled_for, attempt)
);

-- Retries waiting for their time: attempt N + 1 of a slot whose attempt N failed.
CREATE TABLE retries (
    task_id       bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    scheduled_for timestamptz NOT NULL,
    attempt       integer NOT NULL,
    retry_at      timestamptz NOT NULL,
    PRIMARY KEY (task_id, scheduled_for, attempt)
);

CREATE INDEX runs_running ON runs (instance_id) WHERE status = 'running';
CREATE INDEX runs_task_started ON runs (task_id, started_at DESC);
CREATE INDEX runs_finished ON runs (finished_at);
