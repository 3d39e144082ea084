-- discord-actor schema, version 9: the actors' own scheduled slots, apart from keyed schedules.
--
-- A burst of keyed schedules (10,000 reminders due at one instant) fills the due window's read
-- of scheduled slots, and an actor's own next slot, a second later, would wait behind all of it.
-- The scheduler reads the actors' own rows (one per actor) through this index as well, and
-- claims them first.
CREATE INDEX tasks_own_due ON tasks (due_at)
    WHERE key IS NULL AND enabled AND NOT paused AND removed_at IS NULL;
