-- discord-actor schema, version 7: rate budgets shared by every process of a bot.
--
-- Discord's global limit (50 requests per second per bot token by default) holds for all the
-- processes of the bot together. Each process reserves request slots, a few at a time, from the
-- row of its bot: ``reserved_until`` is the end of the slots reserved so far, and a reservation
-- starts there (or now, if that has passed), so no two processes get the same moment.
CREATE TABLE rate_budgets (
    bucket         text PRIMARY KEY,
    reserved_until timestamptz NOT NULL
);
