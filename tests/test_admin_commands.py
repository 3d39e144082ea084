"""The /actors slash commands and Discord alerts: a real discord.py bot against the fake Discord,
a real PostgreSQL, and a runtime stepped with a fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
import pytest
from discord.ext import commands

from discord_actor import Interval, Once, RunContext, actor
from discord_actor.admin import (
    REFUSAL,
    ActorsCommands,
    DiscordAlerts,
    format_alert,
    sync_commands,
)
from discord_actor.clock import FakeClock
from discord_actor.config import Config, DiscordConfig, ScheduleConfig
from discord_actor.db import Database
from discord_actor.db.store import Outcome, Store
from discord_actor.runtime import Alert
from discord_actor.testing.fake_discord import FakeDiscord, FakeInteraction, FakeUser
from discord_actor.testing.harness import ActorHarness, actor_config, make_config

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
EPHEMERAL = 64
ADMIN_LOG = "discord_actor.admin"


def every(seconds: float) -> ScheduleConfig:
    return ScheduleConfig(type="interval", timezone="UTC", seconds=seconds)


@actor
async def digest(ctx: RunContext) -> None:
    await ctx.post("digest")


@actor
async def flaky(ctx: RunContext) -> None:
    raise RuntimeError("feed unreachable")


@dataclass
class World:
    fake: FakeDiscord
    bot: commands.Bot
    harness: ActorHarness
    config: Config
    group: ActorsCommands
    #: has a role in admin_role_ids, but no Discord permission: a server admin gave that role
    #: access to /actors in Server Settings -> Integrations, which the fake does not model,
    #: so their commands are injected with check_permissions=False
    operator: FakeUser
    #: a Discord administrator (Discord offers them /actors) who is not an operator
    intruder: FakeUser


@pytest.fixture
async def world(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot, database: Database
) -> AsyncIterator[World]:
    """Three actors with some history, and /actors synced to the fake for the owner and ops."""
    fake = fake_discord
    ops = fake.add_role(fake.guild, "Actor ops")
    moderators = fake.add_role(fake.guild, "Moderators", administrator=True)
    operator = fake.add_user("olivia", roles=[ops])
    intruder = fake.add_user("mallory", roles=[moderators])
    nine = ScheduleConfig(type="cron", timezone="UTC", expression="0 9 * * *")
    actors = [
        (digest, actor_config("digest", schedule=every(3600))),
        (flaky, actor_config("flaky", schedule=every(3600))),
        (digest, actor_config("reminder", schedule=nine)),
    ]
    async with ActorHarness(database, actors, clock=FakeClock(START)) as h:
        await h.tick()  # digest succeeds, flaky fails; reminder's first slot is tomorrow
        await h.tick(3600)  # again
        config = replace(
            h.config,
            discord=DiscordConfig(owner_ids=(fake.owner.id,), admin_role_ids=(ops.id,)),
        )
        group = ActorsCommands(h.store, config)
        fake_discord_bot.tree.add_command(group)
        await sync_commands(fake_discord_bot.tree, config)
        yield World(fake, fake_discord_bot, h, config, group, operator, intruder)


async def answer(
    fake: FakeDiscord, name: str, options: dict[str, Any] | None = None, **kw: Any
) -> FakeInteraction:
    """Run a command and wait until its answer (the original response) is final."""
    interaction = await fake.inject_command(name, options, **kw)
    await interaction.wait_response()
    await fake.wait_until(
        lambda: interaction.original is not None and not interaction.original.flags & 128,
        what="final answer",
    )
    return interaction


def text(interaction: FakeInteraction) -> str:
    """What the user sees: content and embed title, description, footer."""
    message = interaction.original
    assert message is not None
    parts = [message.content]
    for embed in message.embeds:
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts.append((embed.get("footer") or {}).get("text", ""))
    return "\n".join(parts)


async def task(store: Store, name: str) -> dict[str, Any]:
    row = await store.operator.task(name)
    assert row is not None
    return dict(row)


# ---------------------------------------------------------------------------- registration


async def test_sync_registers_the_group_for_administrators_per_guild_or_globally(
    fake_discord: FakeDiscord,
    fake_discord_bot: commands.Bot,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    second = fake.add_guild("Second Guild")
    store = Store(database.pool, database.schema)
    base = replace(
        make_config(database.config), discord=DiscordConfig(owner_ids=(fake.owner.id,))
    )
    missing_guild = 424242  # the bot is not in it: logged and skipped, the others still sync
    per_guild = replace(
        base,
        discord=replace(base.discord, command_guild_ids=(missing_guild, fake.guild.id, second.id)),
    )
    bot.tree.add_command(ActorsCommands(store, per_guild))
    with caplog.at_level(logging.WARNING, logger=ADMIN_LOG):
        await sync_commands(bot.tree, per_guild)
    assert None not in fake.commands  # nothing global when guilds are configured
    for guild in (fake.guild.id, second.id):
        registered = fake.commands[guild]["1:actors"]
        assert registered["default_member_permissions"] == "8"  # administrator
        assert registered["contexts"] == [0]  # guild only
    assert any(str(missing_guild) in r.getMessage() for r in caplog.records)

    await sync_commands(bot.tree, base)  # no command_guild_ids: globally
    registered = fake.commands[None]["1:actors"]
    assert registered["default_member_permissions"] == "8"
    assert registered["dm_permission"] is False and registered["contexts"] == [0]
    subcommands = {o["name"]: o for o in registered["options"]}
    assert list(subcommands) == ["list", "history", "run", "pause", "resume"]
    for name in ("history", "run", "pause", "resume"):
        actor_option = subcommands[name]["options"][0]
        assert (actor_option["name"], actor_option["required"]) == ("actor", True)
        assert actor_option["autocomplete"] is True


# ---------------------------------------------------------------------------- operators


async def test_owner_and_admin_role_operate_actors_in_the_database(world: World) -> None:
    fake, h, store = world.fake, world.harness, world.harness.store
    as_operator: dict[str, Any] = {"user": world.operator, "check_permissions": False}

    # pause, by the owner, with a reason
    paused = await answer(fake, "actors pause", {"actor": "flaky", "reason": "feed is down"})
    assert paused.original is not None and paused.original.ephemeral
    assert "Paused `flaky`: feed is down" in text(paused)
    row = await task(store, "flaky")
    where = f"via Discord, guild {fake.guild.id} channel {fake.channel.id}"
    owner = f"{fake.owner.username} (id {fake.owner.id})"
    assert (row["paused"], row["paused_reason"]) == (
        True, f"feed is down; paused by {owner} {where}"
    )
    assert row["consecutive_failures"] == 2

    # a paused actor is not triggered: the answer says so and nothing changes
    refused = await answer(fake, "actors run", {"actor": "flaky"}, **as_operator)
    assert "is paused (feed is down; paused by" in text(refused)
    assert "/actors resume flaky" in text(refused)
    assert (await task(store, "flaky"))["manual_at"] is None

    # resume, by a member with an admin role: unpaused, failures reset
    resumed = await answer(fake, "actors resume", {"actor": "flaky"}, **as_operator)
    assert "Resumed `flaky`" in text(resumed) and resumed.original is not None
    assert resumed.original.ephemeral
    row = await task(store, "flaky")
    assert (row["paused"], row["paused_reason"], row["consecutive_failures"]) == (False, None, 0)

    # pause without a reason records who did it
    await answer(fake, "actors pause", {"actor": "reminder"}, **as_operator)
    assert (await task(store, "reminder"))["paused_reason"] == (
        f"paused by olivia (id {world.operator.id}) {where}"
    )

    # run: a manual trigger that the runtime then runs
    triggered = await answer(fake, "actors run", {"actor": "digest"}, **as_operator)
    assert "Triggered `digest`" in text(triggered)
    assert (await task(store, "digest"))["manual_at"] is not None
    again = await answer(fake, "actors run", {"actor": "digest"})
    assert "already triggered" in text(again)
    runs = await h.tick()
    assert [(r.actor, r.trigger, r.status) for r in runs] == [("digest", "manual", "succeeded")]
    assert (await task(store, "digest"))["manual_at"] is None

    # a typo gets a suggestion, and changes nothing
    typo = await answer(fake, "actors pause", {"actor": "digets"})
    assert "Unknown actor `digets`; did you mean `digest`?" in text(typo)
    assert not (await task(store, "digest"))["paused"]
    assert all(i.original is not None and i.original.ephemeral for i in fake.interactions)


async def test_everyone_else_is_refused_nothing_changes_and_it_is_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    fake, store = world.fake, world.harness.store
    bob = fake.add_user("bob")  # no permissions at all
    before = [dict(r) for r in await store.operator.status()]
    attempts: list[tuple[FakeUser, str, dict[str, Any], bool]] = [
        (world.intruder, "actors pause", {"actor": "digest", "reason": "mine now"}, True),
        (world.intruder, "actors resume", {"actor": "flaky"}, True),
        (world.intruder, "actors run", {"actor": "digest"}, True),
        (world.intruder, "actors list", {}, True),
        (world.intruder, "actors history", {"actor": "flaky"}, True),
        # A server admin may open /actors to everyone in Integrations; still refused here.
        (bob, "actors pause", {"actor": "digest"}, False),
    ]
    with caplog.at_level(logging.WARNING, logger=ADMIN_LOG):
        for user, name, options, offered in attempts:
            refused = await answer(
                fake, name, options, user=user, check_permissions=None if offered else False
            )
            assert refused.original is not None and refused.original.ephemeral
            assert refused.original.content == REFUSAL
            assert refused.original.embeds == []
    assert [dict(r) for r in await store.operator.status()] == before
    warnings = [r for r in caplog.records if r.name == ADMIN_LOG and r.levelno == logging.WARNING]
    assert len(warnings) == len(attempts)
    for record, (user, name, _, _) in zip(warnings, attempts, strict=True):
        assert f"refused /{name} " in record.getMessage()
        assert f"id {user.id}" in record.getMessage()
    # Autocomplete tells outsiders nothing.
    completion = await fake.inject_command(
        "actors pause", {"actor": ""}, user=world.intruder, focused="actor"
    )
    await completion.wait_response()
    assert completion.choices == []


async def test_autocomplete_lists_actors_filtered_by_what_was_typed(world: World) -> None:
    fake = world.fake
    await world.harness.store.operator.pause("reminder", "quiet week")

    async def choices(typed: str, **kw: Any) -> list[tuple[str, str]]:
        interaction = await fake.inject_command(
            "actors run", {"actor": typed}, focused="actor", **kw
        )
        await interaction.wait_response()
        return [(c["name"], c["value"]) for c in interaction.choices]

    assert await choices("") == [
        ("digest", "digest"),
        ("flaky", "flaky"),
        ("reminder (paused)", "reminder"),
    ]
    # case-insensitive; names starting with it first, then names containing it
    assert await choices("D") == [("digest", "digest"), ("reminder (paused)", "reminder")]
    assert await choices("re") == [("reminder (paused)", "reminder")]
    assert await choices("gest") == [("digest", "digest")]  # anywhere in the name
    assert await choices("fl", user=world.operator, check_permissions=False) == [
        ("flaky", "flaky")
    ]
    assert await choices("nothing like it") == []


async def test_autocomplete_offers_at_most_25_names(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot, database: Database
) -> None:
    cfgs = [actor_config(f"actor{i:02d}", schedule=every(3600)) for i in range(30)]
    async with ActorHarness(database, [(digest, c) for c in cfgs]) as h:
        config = replace(h.config, discord=DiscordConfig(owner_ids=(fake_discord.owner.id,)))
        fake_discord_bot.tree.add_command(ActorsCommands(h.store, config))
        await sync_commands(fake_discord_bot.tree, config)
        interaction = await fake_discord.inject_command(
            "actors pause", {"actor": "actor"}, focused="actor"
        )
        await interaction.wait_response()
        assert [c["value"] for c in interaction.choices] == [f"actor{i:02d}" for i in range(25)]


# ---------------------------------------------------------------------------- list, history


async def test_list_and_history_show_the_stored_state(world: World) -> None:
    fake, store = world.fake, world.harness.store
    await store.operator.pause("reminder", "quiet week")

    listed = await answer(fake, "actors list")
    shown = text(listed)
    assert "3 actors · 1 paused · 1 failing" in shown
    lines: dict[str, list[str]] = {}
    for line in shown.splitlines():
        if line.strip():
            lines.setdefault(line.split()[0], line.split())  # the table row, not the notes
    assert lines["digest"][1:5] == ["active", "2026-01-05", "14:00", "succeeded"]
    assert lines["digest"][-1] == "0"
    assert lines["flaky"][1:5] == ["active", "2026-01-05", "14:00", "failed"]
    assert lines["flaky"][-1] == "2"
    assert lines["reminder"][1:5] == ["paused", "2026-01-06", "09:00", "-"]
    assert "reminder paused: quiet week" in shown
    assert "/actors resume NAME" in shown

    history = await answer(fake, "actors history", {"actor": "flaky", "limit": 5})
    shown = text(history)
    runs = await store.operator.history("flaky", 5)
    assert len(runs) == 2 and "flaky: last 2 runs" in shown
    for run in runs:
        row = next(line for line in shown.splitlines() if line.startswith(f"{run['id']} "))
        assert row.split()[3:5] == ["failed", "schedule"]
        assert f"run {run['id']}: RuntimeError: feed unreachable" in shown
    assert "STARTED (UTC)" in shown and "DURATION" in shown

    one = await answer(fake, "actors history", {"actor": "digest", "limit": 1})
    assert "digest: last 1 run" in text(one) and "succeeded" in text(one)
    none_yet = await answer(fake, "actors history", {"actor": "reminder"})
    assert "No runs of `reminder` are recorded yet" in text(none_yet)
    unknown = await answer(fake, "actors history", {"actor": "flakey"})
    assert "did you mean `flaky`?" in text(unknown)


async def test_list_counts_keyed_schedules_and_history_names_their_keys(world: World) -> None:
    h = world.harness  # its clock is at START + 1 h
    await h.schedules.add("digest", key="guild:7", schedule=Once(at=START + timedelta(hours=1.5)))
    await h.schedules.add("digest", key="guild:8", schedule=Once(at=START + timedelta(days=1)))
    await h.schedules.add("flaky", key="feed:1", schedule=Interval(seconds=86400),
                          payload={"url": "https://example.com/feed"})

    shown = text(await answer(world.fake, "actors list"))
    header = next(line for line in shown.splitlines() if line.startswith("ACTOR"))
    assert header.split()[-2:] == ["KEYED", "FAILS"]
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.strip()}
    assert (rows["digest"][-2], rows["flaky"][-2], rows["reminder"][-2]) == ("2", "1", "0")

    await h.tick(1800)  # guild:7 is due; digest's own next slot is at START + 2 h
    shown = text(await answer(world.fake, "actors history", {"actor": "digest"}))
    header = next(line for line in shown.splitlines() if line.startswith("RUN"))
    assert header.split()[:3] == ["RUN", "KEY", "STARTED"]
    runs = await h.store.operator.history("digest", 10)
    assert [r["key"] for r in runs] == ["guild:7", None, None]
    keyed, configured = runs[0], runs[1]
    row = next(line for line in shown.splitlines() if line.startswith(f"{keyed['id']} "))
    assert row.split()[1] == "guild:7"
    row = next(line for line in shown.splitlines() if line.startswith(f"{configured['id']} "))
    assert row[header.index("KEY"):header.index("STARTED")].strip() == ""  # the configured one
    rows = {line.split()[0]: line.split() for line in
            text(await answer(world.fake, "actors list")).splitlines() if line.strip()}
    assert rows["digest"][-2] == "1"  # guild:7 ran: one left


async def test_list_shows_an_actor_whose_setup_failed_as_broken(world: World) -> None:
    await world.harness.store.configuration.record_setup(
        {"reminder": "OSError: no credentials"}, []
    )
    shown = text(await answer(world.fake, "actors list"))
    row = next(line for line in shown.splitlines() if line.startswith("reminder "))
    assert row.split()[1] == "broken"
    assert "reminder broken: setup() failed: OSError: no credentials" in shown
    alert = format_alert(Alert.setup_failed("reminder", OSError("no credentials")))
    assert "Actor `reminder` is broken: its setup() failed" in alert
    assert "OSError: no credentials" in alert


async def test_list_of_many_actors_fits_discords_limits_with_the_rest_attached(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot, database: Database
) -> None:
    once = ScheduleConfig(type="once", timezone="UTC", at=datetime(2027, 1, 1, tzinfo=UTC))
    cfgs = [actor_config(f"actor_with_a_long_name_{i:03d}", schedule=once) for i in range(150)]
    async with ActorHarness(database, [(digest, c) for c in cfgs]) as h:
        config = replace(h.config, discord=DiscordConfig(owner_ids=(fake_discord.owner.id,)))
        fake_discord_bot.tree.add_command(ActorsCommands(h.store, config))
        await sync_commands(fake_discord_bot.tree, config)
        listed = await answer(fake_discord, "actors list")  # the fake enforces the limits
    message = listed.original
    assert message is not None and message.ephemeral
    description = message.embeds[0]["description"]
    assert len(description) <= 4096 and description.endswith("more lines in actors.txt\n```")
    assert "150 actors" in message.embeds[0]["title"]
    assert message.attachment_names == ["actors.txt"]
    full = message.attachments[0].data.decode()
    assert all(f"actor_with_a_long_name_{i:03d}" in full for i in range(150))


async def test_slow_work_is_deferred_and_errors_are_answered(world: World) -> None:
    fake = world.fake
    world.group.reply_within = 0  # as if the database were slow: "thinking..." first
    deferred = await answer(fake, "actors list")
    assert deferred.response is not None and deferred.response["type"] == 5
    assert deferred.original is not None and deferred.original.ephemeral
    assert "3 actors" in text(deferred)

    # A database that does not answer: "thinking...", then a clear message, not a hang.
    world.group.reply_within, world.group.command_timeout = 0.05, 0.3
    store = world.harness.store
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(f'SELECT 1 FROM "{store.schema}".tasks FOR UPDATE')  # blocks UPDATEs
        stuck = await answer(fake, "actors pause", {"actor": "digest"})
    assert stuck.response is not None and stuck.response["type"] == 5
    assert "/actors pause did not finish within 0.3 s" in text(stuck)

    world.group.reply_within, world.group.command_timeout = 2.0, 30.0
    world.group.store = Store(store.pool, "no_such_schema")
    failed = await answer(fake, "actors run", {"actor": "digest"})
    assert "/actors run failed: UndefinedTableError" in text(failed)


# ---------------------------------------------------------------------------- alerts


async def test_circuit_breaker_posts_an_alert_to_the_alert_channel(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot, database: Database
) -> None:
    fake = fake_discord
    alerts_channel = fake.add_channel(fake.guild, "alerts")

    @actor
    async def broken(ctx: RunContext) -> None:
        raise RuntimeError("always fails, tell @everyone")

    cfg = actor_config("broken", schedule=every(60), max_consecutive_failures=2)
    sink = DiscordAlerts(fake_discord_bot, alerts_channel.id)
    async with ActorHarness(database, [(broken, cfg)], clock=FakeClock(START), alerts=sink) as h:
        first = await h.tick()
        second = await h.tick(60)
        assert [r.status for r in first + second] == ["failed", "failed"]
        message = await fake.wait_for_message(channel_id=alerts_channel.id)
        assert (await task(h.store, "broken"))["paused"]
    run_id = second[0].id
    assert "`broken` was paused by the circuit breaker after 2 consecutive failures" in (
        message.content
    )
    assert "RuntimeError: always fails, tell @everyone" in message.content
    assert f"(run {run_id})" in message.content
    assert "/actors resume broken" in message.content
    assert "discord-actor resume broken" in message.content
    assert message.allowed_mentions == {"parse": []} and not message.mention_everyone
    assert not message.ephemeral
    # one alert: the first failure is not worth one, the second trips the breaker
    assert len(fake.sent_messages(alerts_channel.id)) == 1


def an_alert(paused: bool = False) -> Alert:
    outcome = Outcome("failed", "ValueError", "bad input", max_consecutive_failures=5)
    return Alert("digest", 7, outcome, 3, paused)


async def test_alerts_wait_for_the_bot_to_connect(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    bot = commands.Bot(
        command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05
    )
    sending = asyncio.create_task(DiscordAlerts(bot, fake.channel.id)(an_alert()))
    for _ in range(3):
        await asyncio.sleep(0)  # let the alert start: it waits, the bot has not even logged in
    assert not sending.done() and not fake.sent_messages()
    async with fake.connected(bot):
        await asyncio.wait_for(sending, 5)
        message = await fake.wait_for_message(channel_id=fake.channel.id)
    assert "`digest` failed 3 times in a row" in message.content
    assert "ValueError: bad input" in message.content and "(run 7)" in message.content
    assert "pauses it after 5 consecutive failures" in message.content


async def test_alerts_never_raise_into_the_runtime(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot, caplog: pytest.LogCaptureFixture
) -> None:
    never_started = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    with caplog.at_level(logging.WARNING, logger=ADMIN_LOG):
        await DiscordAlerts(never_started, 1, ready_timeout=0.05)(an_alert(paused=True))
        await DiscordAlerts(fake_discord_bot, 987654321)(an_alert(paused=True))  # no channel
    messages = [r.getMessage() for r in caplog.records if r.name == ADMIN_LOG]
    assert len(messages) == 2
    assert "not connected to Discord within 0.05 s" in messages[0]
    assert "NotFound" in messages[1] and "channel 987654321" in messages[1]
    assert not fake_discord.sent_messages()
