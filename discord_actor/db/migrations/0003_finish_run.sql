-- discord-actor schema, version 3: a run's outcome recorded by one function, finish_run.
-- Its one definition lives in sql/functions.sql, applied after the migrations at every start,
-- so that no migration carries a copy of it. A database migrated to this version by an earlier
-- release got an older form of it here, which 0005 drops.
SELECT 1;
