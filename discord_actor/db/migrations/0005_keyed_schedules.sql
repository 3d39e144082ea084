-- discord-actor schema, version 5: schedules created at run time, per key.
--
-- An actor's configured schedule stays its row with key NULL (the *actor row*: it also holds
-- the actor-wide switches, enabled, paused and removed_at, which its keyed schedules obey). A
-- keyed schedule is a row of its own, with key set: its own slot, state, retries, circuit
-- breaker and run history, and what the caller gave it (payload, channel, owner). Its
-- ``schedule`` column holds the whole definition (with jitter and catch-up), and
-- ``schedule_hash`` that of the definition plus payload, channel and owner, so that adding the
-- same one again can be recognised as a no-op. ``removed_at`` set on a keyed row means removed
-- by the caller; its history stays until retention deletes it.
ALTER TABLE tasks
    ADD COLUMN key        text,
    ADD COLUMN payload    jsonb,
    ADD COLUMN channel_id bigint,
    ADD COLUMN owner      text;

ALTER TABLE tasks DROP CONSTRAINT tasks_actor_key;
CREATE UNIQUE INDEX tasks_actor_row ON tasks (actor) WHERE key IS NULL;
CREATE UNIQUE INDEX tasks_keyed ON tasks (actor, key) WHERE key IS NOT NULL;
-- Counting and listing an owner's schedules (the per-owner limit, /reminders list).
CREATE INDEX tasks_keyed_owner ON tasks (actor, owner) WHERE key IS NOT NULL AND owner IS NOT NULL;

-- finish_run now returns the task's key and keyed definition too (sql/functions.sql, applied
-- after the migrations): the old one, which returns fewer columns, goes first (CREATE OR
-- REPLACE cannot change what a function returns). A new database never had it.
DROP FUNCTION IF EXISTS finish_run(bigint, text, text, text, text, jsonb, jsonb, timestamptz,
                                   boolean, integer);
