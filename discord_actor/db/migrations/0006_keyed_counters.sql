-- discord-actor schema, version 6: counters of the pending keyed schedules, per actor and per
-- owner, so that an add checks max_schedules and max_schedules_per_owner without counting the
-- pending rows and without making every add of an actor wait for the one before.
--
-- tasks.counted says whether a keyed row is counted as pending: the {pending} of sql/common.sql
-- (a slot, a trigger, a run in flight or a retry left, and not removed), set by the add that
-- writes the row and kept by triggers on tasks and retries (sql/functions.sql) whatever changes
-- it then: a run, a retry used up, a removal, retention, the recovery of a dead process's runs.
--
-- keyed_counts: an actor's count of pending keyed schedules, in shards (rows) so that adds
-- from several connections do not wait on one row. Each shard has a cap, and the caps of an
-- actor add up to its max_schedules (lim, the limit they were shared out for): an add takes
-- room in its connection's shard with one conditional UPDATE; only when that shard is full
-- does it lock every shard of the actor and share out what is left (keyed_make_room).
--
-- keyed_owner_counts: one row per (actor, owner), so that adds for distinct owners do not wait
-- on each other.
--
-- What a run or a removal frees is written to keyed_count_changes and
-- keyed_owner_count_changes (a row each, inserted: nothing waits on a counter row there) and
-- folded into the counters by the add that needs the room and by retention. A counter is its
-- rows plus its changes not yet folded.
ALTER TABLE tasks ADD COLUMN counted boolean NOT NULL DEFAULT false;

CREATE TABLE keyed_counts (
    actor   text NOT NULL,
    shard   smallint NOT NULL,
    pending bigint NOT NULL DEFAULT 0,
    cap     bigint NOT NULL DEFAULT 0,
    lim     bigint,               -- the max_schedules the caps were shared out for
    PRIMARY KEY (actor, shard)
) WITH (  -- a few rows, each updated by every add: room on each page for their new versions,
          -- and vacuumed often
    fillfactor = 20, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000
);

CREATE TABLE keyed_owner_counts (
    actor   text NOT NULL,
    owner   text NOT NULL,
    pending bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (actor, owner)
) WITH (fillfactor = 70);

CREATE TABLE keyed_count_changes (
    actor text NOT NULL,
    delta integer NOT NULL
);

CREATE TABLE keyed_owner_count_changes (
    actor text NOT NULL,
    owner text NOT NULL,
    delta integer NOT NULL
);
CREATE INDEX keyed_owner_count_changes_owner ON keyed_owner_count_changes (actor, owner);

-- The counters of the rows there are now (this transaction holds the rows it marks).
UPDATE tasks t SET counted = true
WHERE t.key IS NOT NULL AND t.removed_at IS NULL
  AND (t.next_run IS NOT NULL OR t.running > 0 OR t.manual_at IS NOT NULL
       OR EXISTS (SELECT 1 FROM retries p WHERE p.task_id = t.id));

INSERT INTO keyed_counts (actor, shard, pending)
SELECT actor, 0, count(*) FROM tasks WHERE key IS NOT NULL AND counted GROUP BY actor;

INSERT INTO keyed_owner_counts (actor, owner, pending)
SELECT actor, owner, count(*) FROM tasks
WHERE key IS NOT NULL AND counted AND owner IS NOT NULL GROUP BY actor, owner;

-- The triggers' functions are defined in sql/functions.sql, which is applied in this same
-- transaction after the migrations: these placeholders only let the triggers be created here.
CREATE FUNCTION keyed_count_task() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE FUNCTION keyed_count_retry() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;

-- Only keyed_add (and add_new_keyed) inserts keyed rows, with counted set and counted, so an
-- insert needs no trigger (a trigger's WHEN is read again by every statement that fires it). A
-- row inserted otherwise (by a process of an older version, during an upgrade) is counted by
-- its first update, the claim of its first run.

-- A keyed row changed, unless it stays pending by its own columns with the same owner (a slot
-- claimed or advanced, a run finished with a slot left: the scheduler's every run).
CREATE TRIGGER keyed_count_update BEFORE UPDATE ON tasks FOR EACH ROW
WHEN (NEW.key IS NOT NULL AND NOT (OLD.counted AND NEW.counted AND NEW.removed_at IS NULL
      AND (NEW.next_run IS NOT NULL OR NEW.running > 0 OR NEW.manual_at IS NOT NULL)
      AND OLD.owner IS NOT DISTINCT FROM NEW.owner))
EXECUTE FUNCTION keyed_count_task();

CREATE TRIGGER keyed_count_delete AFTER DELETE ON tasks FOR EACH ROW
WHEN (OLD.key IS NOT NULL AND OLD.counted)
EXECUTE FUNCTION keyed_count_task();

-- A retry added or taken: a once waiting for its retry is pending by that alone.
CREATE TRIGGER keyed_count_retry AFTER INSERT OR DELETE ON retries FOR EACH ROW
EXECUTE FUNCTION keyed_count_retry();
