"""The example reminders actor (actors/reminders.py): its time parser, and /remind, /reminders
list and /reminders cancel end to end with a real discord.py bot against the fake Discord, a
real PostgreSQL and the runtime on the real clock, across a restart of the bot."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from servers import spawn_run_in, wait_for_text

from discord_actor.bot import ActorBot, create_bot
from discord_actor.config import ActorConfig, Config, load_config
from discord_actor.db import Database
from discord_actor.plugins import LoadedActor, load_actors, make_importable
from discord_actor.testing.fake_discord import FakeDiscord, FakeInteraction, FakeMessage, FakeUser
from discord_actor.testing.harness import make_config

REPO = Path(__file__).resolve().parents[1]
LOADING = 128  # a deferred answer ("the bot is thinking")


def reminders_module() -> ModuleType:
    make_importable(REPO / "actors")
    return importlib.import_module("reminders")


# ---------------------------------------------------------------------------- the time parser

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("text", "after"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("90s", timedelta(seconds=90)),
        ("1w", timedelta(weeks=1)),
        (" 1H 5M ", timedelta(hours=1, minutes=5)),
    ],
)
def test_durations_count_from_now(text: str, after: timedelta) -> None:
    assert reminders_module().parse_when(text, NOW) == NOW + after


def test_a_time_of_day_is_its_next_occurrence_in_utc_or_the_given_zone() -> None:
    parse_when = reminders_module().parse_when
    assert parse_when("14:30", NOW) == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    assert parse_when("9:05", NOW) == datetime(2026, 1, 6, 9, 5, tzinfo=UTC)  # tomorrow's
    assert parse_when("12:00", NOW) == datetime(2026, 1, 6, 12, 0, tzinfo=UTC)  # now: tomorrow
    berlin = ZoneInfo("Europe/Berlin")  # 13:00 there
    due = parse_when("13:30", NOW, "Europe/Berlin")
    assert due == datetime(2026, 1, 5, 13, 30, tzinfo=berlin)
    assert due.astimezone(UTC) == datetime(2026, 1, 5, 12, 30, tzinfo=UTC)


def test_an_iso_date_time_in_the_given_zone_unless_it_has_an_offset() -> None:
    parse_when = reminders_module().parse_when
    assert parse_when("2026-03-01T09:00", NOW) == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert parse_when("2026-03-01 09:00", NOW, "America/New_York") == datetime(
        2026, 3, 1, 14, 0, tzinfo=UTC
    )
    assert parse_when("2026-03-01T09:00+01:00", NOW, "Asia/Tokyo") == datetime(
        2026, 3, 1, 8, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("text", "zone", "message"),
    [
        ("soon", None, "cannot read 'soon' as a time: give a duration (10m, 1h30m"),
        ("10", None, "cannot read '10' as a time"),
        ("", None, "cannot read '' as a time"),
        ("25:00", None, "cannot read '25:00'"),
        ("0m", None, "'0m' is no time at all"),
        ("400d", None, "'400d' is too far ahead: at most 366 days"),
        ("2026-01-05T11:59", None,
         "2026-01-05T11:59 is in the past (it is now 2026-01-05 12:00 UTC)"),
        ("2026-01-05T12:30", "Europe/Berlin",
         "is in the past (it is now 2026-01-05 13:00 Europe/Berlin)"),
        ("2030-01-01T00:00", None, "too far ahead"),
        ("14:30", "Mars/Base", "unknown time zone 'Mars/Base': give an IANA name"),
    ],
)
def test_what_cannot_be_a_reminder_time_says_why(text: str, zone: str | None, message: str) -> None:
    module = reminders_module()
    with pytest.raises(module.BadTime) as e:
        module.parse_when(text, NOW, zone)
    assert message in str(e.value)


# ---------------------------------------------------------------------------- end to end


def shipped_entry() -> ActorConfig:
    """The reminders actor as the example actor_server.toml configures it."""
    config = load_config(REPO / "actor_server.toml", environ={})
    return config.actor("reminders")


def test_the_example_config_runs_reminders_only_by_keyed_schedules() -> None:
    entry = shipped_entry()
    assert (entry.schedule.type, entry.platform, entry.channel_id) == ("none", "discord", None)
    assert entry.allowed_mentions == ("users",)
    assert entry.max_schedules_per_owner == 25


class Reminders:
    """The fake Discord, the configuration, and bots started and stopped on one database."""

    def __init__(self, fake: FakeDiscord, config: Config) -> None:
        self.fake = fake
        self.config = config
        self.actors: dict[str, LoadedActor] = load_actors(config)  # the real module

    @asynccontextmanager
    async def bot(self) -> AsyncIterator[ActorBot]:
        bot = create_bot(self.config, self.actors, guild_ready_timeout=0.05)
        assert isinstance(bot, ActorBot)
        async with self.fake.connected(bot):
            yield bot

    async def run(self, user: FakeUser, name: str, options: dict[str, Any], **kw: Any) -> str:
        """``user`` runs a command; what they see (ephemeral, checked), as text."""
        interaction = await self.fake.inject_command(name, options, user=user, **kw)
        await self.fake.wait_until(
            lambda: interaction.original is not None
            and not interaction.original.flags & LOADING,
            what=f"the answer to /{name}",
        )
        message = interaction.original
        assert message is not None and message.ephemeral, message
        parts = [message.content] + [e.get("description", "") for e in message.embeds]
        return "\n".join(parts)

    async def choices(self, user: FakeUser, typed: str) -> list[dict[str, Any]]:
        interaction: FakeInteraction = await self.fake.inject_command(
            "reminders cancel", {"id": typed}, user=user, focused="id"
        )
        await interaction.wait_response()
        return interaction.choices


@pytest.fixture
async def reminders(
    fake_discord: FakeDiscord, database: Database
) -> AsyncIterator[Reminders]:
    """The shipped reminders entry with a limit of 3 per user, on the test database."""
    from dataclasses import replace

    entry = replace(shipped_entry(), max_schedules_per_owner=3)
    config = make_config(database.config, [entry], path=REPO / "actor_server.toml")
    yield Reminders(fake_discord, config)


def posts(fake: FakeDiscord) -> list[FakeMessage]:
    """What the bot posted by itself (not its answers to commands)."""
    return [m for m in fake.sent_messages() if by_itself(m)]


def by_itself(message: FakeMessage) -> bool:
    return message.source == "rest"


def stamps(text: str) -> list[int]:
    """The Discord timestamps (<t:UNIX:f>) in an answer."""
    return [int(s) for s in re.findall(r"<t:(\d+):f>", text)]


async def test_remind_survives_a_restart_and_pings_only_its_user_once(
    reminders: Reminders, database: Database
) -> None:
    fake = reminders.fake
    standup = fake.add_channel(fake.guild, "standup")
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    mods = fake.add_role(fake.guild, "mods")
    async with reminders.bot():
        before = time.time()
        said = await reminders.run(
            alice, "remind", {"in": "2s", "text": "stand up"}, channel_id=standup.id
        )
        assert "I will remind you <t:" in said and ":R>) in this channel: stand up" in said
        (due,) = stamps(said)
        assert int(before) + 1 <= due <= time.time() + 3
        key = re.findall(r"`(r:\d+)`", said)[0]
        sneaky = f"@everyone <@&{mods.id}> <@{alice.id}> lunch"
        bob_said = await reminders.run(
            bob, "remind", {"in": "2s", "text": sneaky}, channel_id=standup.id
        )
        bob_key = re.findall(r"`(r:\d+)`", bob_said)[0]
        dropped = await reminders.run(alice, "remind", {"in": "2s", "text": "never mind"})
        dropped_key = re.findall(r"`(r:\d+)`", dropped)[0]
        assert "Cancelled reminder" in await reminders.run(
            alice, "reminders cancel", {"id": dropped_key}
        )
        listed = await reminders.run(alice, "reminders list", {})
        assert f"`{key}` <t:{due}:f>" in listed and "stand up" in listed
        assert dropped_key not in listed and "lunch" not in listed  # bob's is bob's
    assert posts(fake) == []  # the bot stopped before anything was due

    async with reminders.bot():  # a new bot and runtime on the same database
        posted = await fake.wait_for_message(
            channel_id=standup.id, content=f"<@{alice.id}> stand up", timeout=10,
            predicate=by_itself,
        )
        assert posted.mention_user_ids == [alice.id]
        allowed = posted.allowed_mentions or {}
        assert allowed.get("parse") == [] and not allowed.get("replied_user")
        assert [int(u) for u in allowed["users"]] == [alice.id] and "roles" not in allowed
        pinged = await fake.wait_for_message(
            channel_id=standup.id, timeout=10, predicate=by_itself
        )
        assert pinged.content == f"<@{bob.id}> {sneaky}"
        assert (pinged.mention_user_ids, pinged.mention_role_ids) == ([bob.id], [])
        assert pinged.mention_everyone is False
        await asyncio.sleep(1.5)  # the cancelled one was due with them: it never comes
        assert sorted(m.content for m in posts(fake)) == sorted(
            [posted.content, pinged.content]
        )
        assert "You have no pending reminders" in await reminders.run(
            alice, "reminders list", {}
        )
    rows = await database.pool.fetch(
        f'SELECT t.key, r.status, r.posted FROM "{database.schema}".runs r'
        f' JOIN "{database.schema}".tasks t ON t.id = r.task_id ORDER BY r.id'
    )
    assert sorted(r["key"] for r in rows) == sorted([key, bob_key])
    assert {r["status"] for r in rows} == {"succeeded"}
    assert {json.loads(r["posted"])[0]["channel_id"] for r in rows} == {standup.id}


async def test_remind_in_dms_and_in_the_channel_when_dms_are_closed(
    reminders: Reminders,
) -> None:
    fake = reminders.fake
    standup = fake.add_channel(fake.guild, "standup")
    alice, carol = fake.add_user("alice"), fake.add_user("carol")
    carol.accepts_dms = False
    async with reminders.bot():
        said = await reminders.run(
            alice, "remind", {"in": "1s", "text": "stretch", "dm": True}, channel_id=standup.id
        )
        assert "in your direct messages: stretch" in said
        await reminders.run(
            carol, "remind", {"in": "1s", "text": "water", "dm": True}, channel_id=standup.id
        )
        in_dm = await fake.wait_for_message(content="Reminder: stretch", timeout=10,
                                            predicate=by_itself)
        fallback = await fake.wait_for_message(channel_id=standup.id, timeout=10,
                                               predicate=by_itself)
    assert in_dm.channel_id == fake.dm_channels[alice.id].id and in_dm.guild_id is None
    assert fallback.content == f"<@{carol.id}> water (your direct messages are closed to me)"
    assert fallback.mention_user_ids == [carol.id]
    assert len(posts(fake)) == 2


async def test_cancel_list_ownership_limit_and_bad_input(reminders: Reminders) -> None:
    fake = reminders.fake
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with reminders.bot():
        run = reminders.run
        later = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
        keys = []
        for when, text in [("2d", "water the plants"), ("1h", "call mum"), (later, "renew")]:
            said = await run(alice, "remind", {"in": when, "text": text})
            keys.append(re.findall(r"`(r:\d+)`", said)[0])
        refused = await run(alice, "remind", {"in": "5m", "text": "one too many"})
        assert refused == (
            "You already have 3 pending reminders, as many as allowed: cancel one with"
            " `/reminders cancel` first."
        )
        listed = await run(alice, "reminders list", {})
        order = [listed.index(k) for k in (keys[1], keys[0], keys[2])]
        assert order == sorted(order)  # soonest first
        assert "one too many" not in listed

        # Only alice's own, in the autocomplete too.
        assert [c["value"] for c in await reminders.choices(alice, "")] == [
            keys[1], keys[0], keys[2]
        ]
        assert [c["value"] for c in await reminders.choices(alice, "plants")] == [keys[0]]
        assert await reminders.choices(bob, "") == []
        assert "is not yours: you can cancel only your own" in await run(
            bob, "reminders cancel", {"id": keys[0]}
        )
        assert "There is no pending reminder `r:42`" in await run(
            bob, "reminders cancel", {"id": "42"}
        )
        assert "You have no pending reminders" in await run(bob, "reminders list", {})

        cancelled = await run(alice, "reminders cancel", {"id": keys[0]})
        assert cancelled.startswith(f"Cancelled reminder `{keys[0]}` (water the plants), due <t:")
        assert "There is no pending reminder" in await run(
            alice, "reminders cancel", {"id": keys[0]}
        )
        assert keys[0] not in await run(alice, "reminders list", {})
        # room again for one
        assert "I will remind you" in await run(alice, "remind", {"in": "5m", "text": "ok"})

        bad = {
            "soon": "Sorry, cannot read 'soon' as a time: give a duration (10m, 1h30m, 2d, 90s)",
            "2020-01-01T00:00": "Sorry, 2020-01-01T00:00 is in the past",
        }
        for when, message in bad.items():
            assert (await run(bob, "remind", {"in": when, "text": "x"})).startswith(message)
        assert "unknown time zone 'Moon/Base'" in await run(
            bob, "remind", {"in": "14:30", "text": "x", "timezone": "Moon/Base"}
        )
        assert await run(bob, "remind", {"in": "5m", "text": "x" * 1001}) == (
            "That text is 1001 characters long; a reminder holds at most 1000."
        )
        assert "You have no pending reminders" in await run(bob, "reminders list", {})
    assert posts(fake) == []


# ------------------------------------------------------------------------------- the docs


def page_section(page: str, heading: str) -> str:
    """``heading``'s section of ``docs/<page>``, up to the next heading of its level or above
    (``#`` lines inside code blocks are comments, not headings)."""
    lines = (REPO / "docs" / page).read_text().split("\n")
    start = lines.index(heading)
    level = len(heading.split(" ", 1)[0])
    fenced = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        fenced ^= line.startswith("```")
        marks = len(line) - len(line.lstrip("#"))
        if not fenced and 0 < marks <= level and line[marks : marks + 1] == " ":
            break
    else:
        end = len(lines)
    return "\n".join(lines[start:end])


def squeezed(text: str) -> str:
    """Lines without their indentation, to find an indented excerpt in its file."""
    return "\n".join(line.strip() for line in text.strip().splitlines())


def test_the_docs_quote_the_example_exactly() -> None:
    section = page_section("discord.md", "## Slash commands from actor modules")
    module = squeezed((REPO / "actors" / "reminders.py").read_text())
    excerpts = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(excerpts) == 2
    for excerpt in excerpts:
        assert squeezed(excerpt) in module, excerpt
    (entry,) = [b for b in re.findall(r"```toml\n(.*?)```", section, re.S) if "reminders" in b]
    assert entry in (REPO / "actor_server.toml").read_text()


@pytest.mark.slow
def test_the_keyed_schedules_first_project_runs_as_shown(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    """Its files as docs/keyed-schedules.md shows them, ``discord-actor run`` for a few
    seconds."""
    import os
    import signal

    section = page_section("keyed-schedules.md", "## A first project")
    files = dict(re.findall(r"```(?:python|toml)\n# (\S+)\n(.*?)```", section, re.S))
    assert set(files) == {"actor_server.toml", "actors/digest.py", "actors/planner.py"}
    for path, body in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    with (tmp_path / "actor_server.toml").open("a") as f:  # this test's schema
        f.write(f'\n[database]\nschema = "{db_schema}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DISCORD_"))}
    env |= {"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "out.txt"
    proc = spawn_run_in(tmp_path, env, log)
    try:  # r:1 is due 5 s after the start
        wait_for_text(log, "r:1: once #1", time.monotonic() + 30)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 0, out
    posts = [line.split(" ", 1)[1] for line in out.splitlines() if "[digest]" in line]
    assert posts[:2] == ["[digest] feed:9: feed #1", "[digest] r:1: once #1"], out
    for key in ("feed:9", "r:1", "guild:7"):
        assert f"pending: {key}, next run" in out
    assert "Traceback" not in out
