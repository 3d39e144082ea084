-- discord-actor schema, version 9: the actors' own scheduled slots apart from keyed schedules'.
--
-- A burst of keyed schedules (10,000 reminders due at one instant) filled the due window's read
-- of scheduled slots, and an actor's own next slot, a second later, waited behind all of it.
-- The scheduler reads the two apart, each through an index of its own, and claims the actors'
-- own slots first.
CREATE INDEX tasks_own_due ON tasks (due_at)
    WHERE key IS NULL AND enabled AND NOT paused AND removed_at IS NULL;
CREATE INDEX tasks_keyed_due ON tasks (due_at)
    WHERE key IS NOT NULL AND enabled AND NOT paused AND removed_at IS NULL;
