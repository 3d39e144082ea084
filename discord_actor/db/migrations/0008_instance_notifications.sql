-- Whether each process hears notifications (a trigger, pause or resume reaching it at once), or
-- why not: NULL when they arrive, else the reason it only polls. Shown by `status`.
ALTER TABLE instances ADD COLUMN notifications text;
