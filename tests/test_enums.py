"""The enums and the database agree: ``RunStatus`` and ``Trigger`` hold exactly the values the
runs table's CHECK constraints allow, read from a migrated database, so neither can change alone;
and a member reads, prints and serializes as the string stored."""

from __future__ import annotations

import json
import logging
import re

from discord_actor.db import Database
from discord_actor.enums import RunStatus, Trigger
from discord_actor.operations import RUN_STATUSES


async def check_constraint_values(database: Database, table: str) -> dict[str, list[str]]:
    """The values each CHECK constraint of ``table`` allows, by the one column it checks."""
    rows = await database.pool.fetch(
        """
        SELECT a.attname AS col, pg_get_constraintdef(c.oid) AS def
          FROM pg_constraint c
          JOIN pg_class t ON t.oid = c.conrelid
          JOIN pg_namespace n ON n.oid = t.relnamespace
          JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (c.conkey)
         WHERE c.contype = 'c' AND n.nspname = $1 AND t.relname = $2
        """,
        database.schema,
        table,
    )
    # e.g. CHECK ((status = ANY (ARRAY['running'::text, 'succeeded'::text, ...])))
    return {r["col"]: re.findall(r"'([^']*)'::text", r["def"]) for r in rows}


async def test_the_enums_hold_what_the_runs_table_allows(database: Database) -> None:
    allowed = await check_constraint_values(database, "runs")
    assert sorted(allowed["status"]) == sorted(RunStatus)
    assert sorted(allowed["trigger"]) == sorted(Trigger)
    assert RUN_STATUSES == tuple(RunStatus) and all(type(s) is str for s in RUN_STATUSES)


def test_a_member_is_its_stored_string() -> None:
    assert RunStatus("timed_out") is RunStatus.TIMED_OUT and RunStatus.TIMED_OUT == "timed_out"
    assert f"{RunStatus.TIMED_OUT} {Trigger.CATCH_UP:>9}" == "timed_out  catch_up"
    line = logging.LogRecord("x", logging.INFO, "", 0, "run (%s)", (Trigger.MANUAL,), None)
    assert line.getMessage() == "run (manual)" and str(Trigger.MANUAL) == "manual"
    assert json.dumps({"status": RunStatus.FAILED}) == '{"status": "failed"}'
    assert {"failed": 1}[RunStatus.FAILED] == 1  # hashes as the string
