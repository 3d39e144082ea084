-- discord-actor schema, version 2: the scheduler asks PostgreSQL for what is due soon instead of
-- keeping a copy of every task in memory. These indexes make that question cost what is due,
-- not how many tasks there are.

-- Scheduled slots (due_at is the slot plus its jitter) of tasks that may run.
CREATE INDEX tasks_due ON tasks (due_at) WHERE enabled AND NOT paused AND removed_at IS NULL;

-- Pending manual triggers: few at any time.
CREATE INDEX tasks_manual ON tasks (manual_at) WHERE manual_at IS NOT NULL;

-- Retries by the time they are due.
CREATE INDEX retries_due ON retries (retry_at);
