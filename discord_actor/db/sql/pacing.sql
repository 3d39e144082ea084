-- Rate budgets shared by the processes of a bot (discord_actor/db/pacing.py).

-- name: reserve_slots
-- Reserve $2 slots $3 seconds apart in budget $1, after those reserved already and never in
-- the past; returns in how many seconds the first one is, by the database's clock.
INSERT INTO {rate_budgets} AS b (bucket, reserved_until)
VALUES ($1, clock_timestamp() + make_interval(secs => $2::int * $3::float8))
ON CONFLICT (bucket) DO UPDATE
   SET reserved_until = greatest(b.reserved_until, clock_timestamp())
                        + make_interval(secs => $2::int * $3::float8)
RETURNING extract(epoch FROM reserved_until - clock_timestamp())::float8
          - $2::int * $3::float8 AS first_in
