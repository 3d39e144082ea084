"""Runs whose actor code misbehaves: values PostgreSQL refuses, huge errors, swallowed
cancellations, leaked connections. On a real PostgreSQL."""

from __future__ import annotations

import json
import logging

import pytest

from discord_actor import RunContext, actor
from discord_actor.db import Database
from discord_actor.storable import MAX_ERROR_MESSAGE, MAX_TRACEBACK
from discord_actor.testing.harness import run_actor_once


@pytest.mark.parametrize(
    ("value", "said"),
    [(float("nan"), "ctx.state['v'] (nan)"), ("a\x00b", "ctx.state['v'] (a NUL character)")],
)
async def test_state_postgresql_refuses_fails_the_run_naming_the_key(
    database: Database, value: object, said: str
) -> None:
    @actor
    async def odd_state(ctx: RunContext) -> None:
        ctx.state["v"] = value

    run = await run_actor_once(database, odd_state, state={"before": 1})
    assert run.status == "failed"
    assert run.error_type == "StateNotSerializable"
    assert said in (run.error_message or "")
    assert run.state == {"before": 1}


async def test_nul_in_a_post_or_an_error_is_stored_replaced(database: Database) -> None:
    @actor
    async def nul_post(ctx: RunContext) -> None:
        await ctx.post("a \x00 b")

    run = await run_actor_once(database, nul_post, name="nul_post")
    assert run.status == "succeeded"
    assert run.posted[0]["content"] == "a \ufffd b"

    @actor
    async def nul_error(ctx: RunContext) -> None:
        raise RuntimeError("bad \x00 byte")

    run = await run_actor_once(database, nul_error, name="nul_error")
    assert (run.status, run.error_type) == ("failed", "RuntimeError")
    assert run.error_message == "bad \ufffd byte"


async def test_the_log_line_says_what_was_stored(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    @actor
    async def surrogate(ctx: RunContext) -> None:
        await ctx.post("a lone surrogate \ud800, which jsonb refuses")

    with caplog.at_level(logging.INFO, logger="discord_actor.runtime"):
        run = await run_actor_once(database, surrogate)
    assert (run.status, run.error_type) == ("failed", "RecordError")
    said = [r.getMessage() for r in caplog.records if f"run {run.id} of" in r.getMessage()]
    assert not [m for m in said if "succeeded" in m], said
    assert [m for m in said if "failed" in m], said


async def test_error_texts_are_capped(database: Database) -> None:
    @actor
    async def verbose(ctx: RunContext) -> None:
        raise RuntimeError("E" * 20_000_000 + "the end")

    run = await run_actor_once(database, verbose)
    row = await database.pool.fetchrow(
        f"SELECT error_message, error_traceback FROM {database.schema}.runs WHERE id = $1", run.id
    )
    message, tb = row["error_message"], row["error_traceback"]
    assert len(message) <= MAX_ERROR_MESSAGE and len(tb) <= MAX_TRACEBACK
    assert "characters cut …]" in message and message.endswith("the end")
    assert message.startswith("EEEE") and "RuntimeError" in tb
    assert len(json.dumps(dict(row))) < 2 * (MAX_ERROR_MESSAGE + MAX_TRACEBACK)
