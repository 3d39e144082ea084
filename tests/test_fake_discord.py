"""The wire-level fake Discord, driven by the real discord.py client over loopback."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from discord_actor.testing.fake_discord import FakeDiscord, FakeDiscordError

READY_TIMEOUT = 0.05  # guild_ready_timeout: discord.py's wait after the last GUILD_CREATE
#: Discord's own OpenAPI description of its REST API (MIT, from Discord), beside the repository.
OPENAPI_IN_REPO = "../shared/discord-openapi/openapi.json"
OPENAPI = (Path(__file__).resolve().parents[1] / OPENAPI_IN_REPO).resolve()


def make_client(**kw: Any) -> discord.Client:
    intents = kw.pop("intents", discord.Intents.default())
    return discord.Client(intents=intents, guild_ready_timeout=READY_TIMEOUT, **kw)


# ---------------------------------------------------------------------------- connecting


async def test_login_ready_and_guild_create(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild.id)
    assert guild is not None and guild.name == "Fake Guild"
    assert guild.get_channel(fake.channel.id) is not None
    assert guild.me is not None and guild.owner_id == fake.owner.id
    assert guild.chunked  # every member came with GUILD_CREATE: no REQUEST_GUILD_MEMBERS
    sent = [f for f in fake.gateway_frames if f.direction == "send"]
    assert sent[0].op == 10  # HELLO
    assert [f.t for f in sent if f.op == 0][:2] == ["READY", "GUILD_CREATE"]
    assert [f.s for f in sent if f.op == 0][:2] == [1, 2]
    identify = await fake.wait_for_frame(op=2)
    assert identify.d["token"] == "<redacted>" and identify.d["intents"] == bot.intents.value
    ready = next(f for f in fake.gateway_frames if f.t == "READY")
    assert ready.d["resume_gateway_url"] == fake.resume_gateway_url
    assert [r.route for r in fake.requests] == [
        "GET /users/@me",
        "GET /oauth2/applications/@me",
    ]
    heartbeats = fake.heartbeats
    await fake.wait_until(lambda: fake.heartbeats > heartbeats, timeout=2, what="heartbeat")
    assert bot.latency < 1.0  # heartbeats are acknowledged


async def test_sharded_bot_asks_gateway_bot_and_identifies_each_shard(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    fake.shard_count = 2
    second = fake.add_guild("Second Guild")
    bot = commands.AutoShardedBot(
        command_prefix="!",
        intents=discord.Intents.default(),
        guild_ready_timeout=READY_TIMEOUT,
    )
    async with fake.connected(bot):
        assert bot.shard_count == 2
        assert {g.id for g in bot.guilds} == {fake.guild.id, second.id}
        assert {s.shard for s in fake.sessions if not s.ended} == {(0, 2), (1, 2)}
    assert fake.requests_matching("GET /gateway/bot")


async def test_bad_token_is_a_login_failure(fake_discord: FakeDiscord) -> None:
    client = make_client()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.start("not-the-token")
    finally:
        await client.close()
    assert fake_discord.requests[-1].status == 401


async def test_identify_rejected_with_4004_closes_for_good(fake_discord: FakeDiscord) -> None:
    fake_discord.reject_next_identify(4004)
    with pytest.raises(discord.ConnectionClosed) as caught:
        async with fake_discord.connected(make_client()):
            pass
    assert caught.value.code == 4004


async def test_disallowed_privileged_intent_is_4014(fake_discord: FakeDiscord) -> None:
    fake_discord.privileged_intents = 0
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with fake_discord.connected(make_client(intents=discord.Intents.all())):
            pass


# ---------------------------------------------------------------------------- messages


async def test_text_embed_and_file_reach_the_fake(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    channel = bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("plain text")
    embed = discord.Embed(title="Digest", description="3 new items", colour=0x00FF00)
    embed.add_field(name="top", value="item 1")
    await channel.send(embed=embed)
    sent = await channel.send(
        "with files",
        files=[
            discord.File(io.BytesIO(b"col\n1\n"), "report.csv"),
            discord.File(io.BytesIO(b"\x89PNG..."), "chart.png", description="a chart"),
        ],
    )

    text = await fake.wait_for_message(channel_id=channel.id)
    assert (text.content, text.source, text.author) == ("plain text", "rest", fake.bot_user)
    with_embed = await fake.wait_for_message(channel_id=channel.id)
    assert with_embed.embeds[0]["title"] == "Digest"
    assert with_embed.embeds[0]["fields"] == [{"name": "top", "value": "item 1", "inline": True}]
    with_files = await fake.wait_for_message(channel_id=channel.id)
    assert with_files.content == "with files"
    assert with_files.attachment_names == ["report.csv", "chart.png"]
    assert with_files.attachments[0].data == b"col\n1\n"
    assert with_files.attachments[1].description == "a chart"
    assert await sent.attachments[0].read() == b"col\n1\n"  # served back at the attachment url

    edited = await sent.edit(content="edited", attachments=[sent.attachments[1]])
    assert edited.content == "edited" and [a.filename for a in edited.attachments] == ["chart.png"]
    assert with_files.edits and with_files.edited_timestamp is not None
    history = [m.content async for m in channel.history(limit=10)]
    assert history == ["edited", "", "plain text"]
    await sent.delete()
    assert with_files.deleted


async def test_allowed_mentions_are_recorded_and_applied(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    channel = bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    ping = f"{fake.owner.mention} @everyone"
    await channel.send(ping, allowed_mentions=discord.AllowedMentions.none())
    await channel.send(ping)
    quiet = await fake.wait_for_message()
    loud = await fake.wait_for_message()
    assert quiet.allowed_mentions == {"parse": []}
    assert quiet.mention_user_ids == [] and not quiet.mention_everyone
    assert loud.mention_user_ids == [fake.owner.id] and loud.mention_everyone


async def test_message_validation_like_discord(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    channel = fake_discord_bot.get_channel(fake_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as caught:
        await channel.send("x" * 2001)
    assert caught.value.code == 50035 and "2000 or fewer" in caught.value.text
    with pytest.raises(discord.NotFound):
        await fake_discord_bot.http.send_message(
            1, params=discord.http.handle_message_parameters("x")
        )


async def test_injected_message_reaches_on_message(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    alice = fake.add_user("alice")
    waiter = bot.wait_for("message", check=lambda m: m.author.id == alice.id, timeout=5)
    injected = await fake.inject_message("hi bot", author=alice)
    message = await waiter
    assert message.content == "hi bot" and message.id == injected.id
    assert isinstance(message.author, discord.Member) and message.channel.id == fake.channel.id


async def test_message_content_needs_the_intent(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    client = make_client()  # default intents: no message_content
    async with fake.connected(client):
        plain = client.wait_for("message", timeout=5)
        await fake.inject_message("secret")
        assert (await plain).content == ""
        mention = client.wait_for("message", timeout=5)
        await fake.inject_message(f"{fake.bot_user.mention} visible")
        assert (await mention).content.endswith("visible")


async def test_world_changes_reach_a_connected_bot(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    created = bot.wait_for("guild_channel_create", timeout=5)
    channel = fake.add_channel(fake.guild, "alerts", topic="circuit breaker")
    assert (await created).id == channel.id
    role = fake.add_role(fake.guild, "Ops")
    carol = fake.add_user("carol")
    updated = bot.wait_for("member_update", timeout=5)
    fake.set_roles(fake.guild, carol, [role])
    _, after = await updated
    assert [r.id for r in after.roles if not r.is_default()] == [role.id]
    beats = fake.heartbeats
    await fake.request_heartbeat()
    await fake.wait_until(lambda: fake.heartbeats > beats, timeout=1, what="requested heartbeat")
    fetched = await bot.fetch_channel(channel.id)
    assert isinstance(fetched, discord.TextChannel) and fetched.topic == "circuit breaker"
    member = await bot.get_guild(fake.guild.id).fetch_member(carol.id)  # type: ignore[union-attr]
    assert member.name == "carol"


# ---------------------------------------------------------------------------- REST faults


async def test_429_is_retried_transparently(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    fault = fake.rate_limit_next("POST /channels/*/messages", retry_after=0.05)
    channel = fake_discord_bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("after a 429")
    assert fault.hits == 1
    assert [r.status for r in fake.requests_matching("POST /channels/*/messages")] == [429, 200]
    assert [m.content for m in fake.sent_messages()] == ["after a 429"]


async def test_global_429_then_success(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    fake.rate_limit_next("GET /channels/{channel_id}", is_global=True, retry_after=0.05)
    channel = await fake_discord_bot.fetch_channel(fake.channel.id)
    assert channel.id == fake.channel.id
    assert [r.status for r in fake.requests_matching("GET /channels/*")] == [429, 200]


async def test_500_is_retried_then_succeeds(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    fake.fail_next("POST /channels/*/messages", 500)
    channel = fake_discord_bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("after a 500")  # discord.py sleeps 1 s before its retry
    assert [r.status for r in fake.requests_matching("POST /channels/*/messages")] == [500, 200]


async def test_503_surfaces_as_discord_server_error(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    """discord.py retries only 500/502/504/524; any other 5xx raises at once."""
    fake = fake_discord
    fake.fail_next("POST /channels/*/messages", 503, count=5)
    channel = fake_discord_bot.get_channel(fake.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.DiscordServerError) as caught:
        await channel.send("lost")
    assert caught.value.status == 503
    assert fake.sent_messages() == []


@pytest.mark.skipif(
    not os.environ.get("FAKE_DISCORD_SLOW"),
    reason="5 x 500 costs 25 s of discord.py's own backoff (1+3+5+7+9 s); FAKE_DISCORD_SLOW=1",
)
async def test_persistent_500_exhausts_discord_py_retries(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake_discord.fail_next("POST /channels/*/messages", 500, count=5)
    channel = fake_discord_bot.get_channel(fake_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.DiscordServerError):
        await channel.send("lost")
    assert len(fake_discord.requests_matching("POST /channels/*/messages")) == 5


async def test_slow_answer(fake_discord: FakeDiscord, fake_discord_bot: commands.Bot) -> None:
    fake_discord.delay_next("POST /channels/{channel_id}/messages", 0.3)
    channel = fake_discord_bot.get_channel(fake_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(channel.send("slow"), 0.1)
    await fake_discord.wait_for_message(content="slow")  # it still arrives, late


async def test_connection_loss_on_rest(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake_discord.disconnect_next("POST /channels/*/messages")
    channel = fake_discord_bot.get_channel(fake_discord.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(aiohttp.ClientError):
        await channel.send("lost")
    await channel.send("fine again")
    assert [m.content for m in fake_discord.sent_messages()] == ["fine again"]


# ---------------------------------------------------------------------------- gateway faults


async def test_resume_replays_events_missed_while_down(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    session = fake.sessions[-1]
    since = len(fake.gateway_frames)
    got = bot.wait_for("message", check=lambda m: m.content == "while you were away", timeout=5)
    resumed = bot.wait_for("resumed", timeout=5)
    async with fake.gateway_down(close_code=4000):
        await fake.inject_message("while you were away")
        await asyncio.sleep(0.05)
        missed = [f for f in fake.gateway_frames[since:] if f.t == "MESSAGE_CREATE"]
        assert missed == []  # nothing was written while the gateway was down
    await got
    await resumed
    resume = await fake.wait_for_frame(op=6, since=since)
    assert resume.d["session_id"] == session.id and resume.d["seq"] < session.seq
    assert fake.gateway.connected_paths[-1] == "/resume"  # resume_gateway_url was used
    replayed = await fake.wait_for_frame(event="MESSAGE_CREATE", direction="send", since=since)
    assert replayed.session_id == session.id
    assert session.resumes == 1 and not session.ended


async def test_abrupt_drop_resumes(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    resumed = fake_discord_bot.wait_for("resumed", timeout=5)
    await fake.drop_gateway()
    await resumed
    assert fake.sessions[-1].resumes == 1


async def test_reconnect_opcode_resumes(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    since = len(fake.gateway_frames)
    resumed = fake_discord_bot.wait_for("resumed", timeout=5)
    await fake.send_reconnect()
    await resumed
    await fake.wait_for_frame(op=6, since=since)
    assert not any(f.op == 2 for f in fake.gateway_frames[since:])  # no new IDENTIFY


async def test_invalid_session_makes_a_new_session(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    old = fake.sessions[-1]
    since = len(fake.gateway_frames)
    ready = bot.wait_for("ready", timeout=5)
    await fake.invalidate_session(resumable=False)
    await ready
    await fake.wait_for_frame(op=2, since=since)  # IDENTIFY, not RESUME
    assert old.ended and fake.sessions[-1] is not old
    assert fake.gateway.connected_paths[-1] == "/"  # back to the default gateway


async def test_resumable_invalid_session_resumes(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    resumed = fake_discord_bot.wait_for("resumed", timeout=5)
    await fake.invalidate_session(resumable=True)
    await resumed


# ---------------------------------------------------------------------------- slash commands


async def test_slash_commands_sync_and_interactions(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake, bot = fake_discord, fake_discord_bot
    admins = fake.add_role(fake.guild, "Admins", administrator=True)
    alice = fake.add_user("alice", roles=[admins])
    bob = fake.add_user("bob")
    seen: list[tuple[int, list[int], str, str | None]] = []

    group = app_commands.Group(
        name="actors",
        description="Manage actors",
        default_permissions=discord.Permissions(administrator=True),
    )

    @group.command(name="pause", description="Pause an actor")
    async def pause(
        interaction: discord.Interaction, actor: str, reason: str | None = None
    ) -> None:
        assert isinstance(interaction.user, discord.Member)
        roles = [r.id for r in interaction.user.roles if not r.is_default()]
        seen.append((interaction.user.id, roles, actor, reason))
        await interaction.response.send_message(f"paused {actor}", ephemeral=True)
        await interaction.followup.send("follow-up")
        await interaction.edit_original_response(content=f"paused {actor}!")

    @pause.autocomplete("actor")
    async def actor_names(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ["digest", "reminder", "dice"]
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    @app_commands.command(name="ping", description="Pong")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content="pong")

    bot.tree.add_command(group)
    bot.tree.add_command(ping, guild=discord.Object(fake.guild.id))
    synced = await bot.tree.sync()
    guild_synced = await bot.tree.sync(guild=discord.Object(fake.guild.id))
    assert [c.name for c in synced] == ["actors"] and [c.name for c in guild_synced] == ["ping"]
    registered = fake.commands[None]["1:actors"]
    assert registered["default_member_permissions"] == "8"  # administrator, as a string
    assert registered["options"][0]["options"][0]["autocomplete"] is True
    assert [c.id for c in await bot.tree.fetch_commands()] == [synced[0].id]
    assert (await bot.tree.sync())[0].id == synced[0].id  # ids survive a re-sync

    interaction = await fake.inject_command(
        "actors pause", {"actor": "digest", "reason": "noisy"}, user=alice
    )
    body = await interaction.wait_response()
    assert (body["type"], body["data"]["content"], body["data"]["flags"]) == (
        4,
        "paused digest",
        64,
    )
    assert seen == [(alice.id, [admins.id], "digest", "noisy")]
    original = interaction.original
    assert original is not None and original.ephemeral
    await fake.wait_until(lambda: interaction.followups and original.edits)
    assert original.content == "paused digest!"
    assert [m.content for m in interaction.followups] == ["follow-up"]

    completion = await fake.inject_command("actors pause", {"actor": "di"}, focused="actor")
    await completion.wait_response()
    assert [c["value"] for c in completion.choices] == ["digest", "dice"]

    with pytest.raises(FakeDiscordError, match="default_member_permissions"):
        await fake.inject_command("actors pause", {"actor": "digest"}, user=bob)
    forced = await fake.inject_command(
        "actors pause", {"actor": "x"}, user=bob, check_permissions=False
    )
    await forced.wait_response()
    assert seen[-1][0] == bob.id
    with pytest.raises(FakeDiscordError, match="not registered"):
        await fake.inject_command("nope")

    deferred = await fake.inject_command("ping")
    assert (await deferred.wait_response())["type"] == 5
    await fake.wait_until(lambda: deferred.original and deferred.original.content == "pong")
    assert deferred.original is not None and not deferred.original.flags & 128  # not loading


async def test_bad_command_definitions_are_rejected(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    http = fake_discord_bot.http
    app = fake_discord.application_id
    with pytest.raises(discord.HTTPException) as caught:
        await http.bulk_upsert_global_commands(app, [{"name": "Upper", "description": "x"}])
    assert caught.value.code == 50035
    with pytest.raises(discord.HTTPException):
        await http.bulk_upsert_global_commands(app, [{"name": "ok", "description": ""}])


# ---------------------------------------------------------------------------- unknown routes


async def test_unknown_route_is_recorded_and_fails_the_fixture(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    fake = fake_discord
    with pytest.raises(discord.NotFound):
        await fake_discord_bot.http.request(discord.http.Route("GET", "/users/@me/guilds"))
    assert [str(r) for r in fake.unknown_requests] == ["GET /api/v10/users/@me/guilds -> 404"]
    with pytest.raises(AssertionError, match="/users/@me/guilds"):
        fake.assert_no_unknown_requests()
    fake.take_unknown_requests()  # this test provoked it on purpose


async def test_fixture_teardown_lists_unknown_requests() -> None:
    from discord_actor.testing.fake_discord.fixtures import _fake_discord

    fixture = _fake_discord()
    fake = await fixture.__anext__()
    async with aiohttp.ClientSession() as session:
        async with session.delete(fake.api_url + "/guilds/1/bans/2") as response:
            assert response.status == 404
            assert (await response.json())["message"] == "404: Not Found"
    with pytest.raises(pytest.fail.Exception, match=r"DELETE /api/v10/guilds/1/bans/2"):
        await fixture.__anext__()


# ---------------------------------------------------------------------------- the wire itself


async def test_wire_format(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    auth = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(fake.api_url + "/users/@me", headers=auth) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["Via"] == "1.1 google"
            assert int(response.headers["X-RateLimit-Limit"]) >= 1
            assert "X-RateLimit-Bucket" in response.headers
        async with session.get(fake.api_url + "/users/@me") as response:
            assert response.status == 401
        fake.rate_limit_next("GET /users/@me", retry_after=0.25, is_global=True)
        async with session.get(fake.api_url + "/users/@me", headers=auth) as response:
            assert response.status == 429 and response.headers["Via"]
            assert response.headers["X-RateLimit-Global"] == "true"
            body = await response.json()
            assert body["retry_after"] == 0.25 and body["global"] is True
        url = fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream"
        async with session.ws_connect(url) as ws:
            hello = await ws.receive()
            assert hello.type == aiohttp.WSMsgType.TEXT  # plain text despite compress=
            assert json.loads(hello.data) == {
                "op": 10,
                "d": {"heartbeat_interval": 500},
                "s": None,
                "t": None,
            }
            await ws.send_str(json.dumps({"op": 1, "d": None}))
            assert json.loads((await ws.receive()).data)["op"] == 11
            await ws.send_str(json.dumps({"op": 2, "d": {"token": "wrong", "intents": 0}}))
            closing = await ws.receive()
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4004


# ---------------------------------------------------------------------------- OpenAPI


class SchemaChecker:
    """The subset of JSON Schema Discord's OpenAPI document uses, with required-field counts."""

    TYPES: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
    }

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.counts = {"required": 0, "required_present": 0, "optional": 0, "optional_present": 0}

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            target: Any = self.spec
            for part in schema["$ref"].lstrip("#/").split("/"):
                target = target[part]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def is_type(self, value: Any, name: str) -> bool:
        if name == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        if name == "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        return isinstance(value, self.TYPES[name])

    def errors(self, value: Any, schema: dict[str, Any], where: str) -> list[str]:
        schema = self.resolve(schema)
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if schema.get("nullable"):
            types.append("null")
        if types and not any(self.is_type(value, t) for t in types):
            return [f"{where}: expected {types}, got {value!r:.80}"]
        errors: list[str] = []
        if "const" in schema and value != schema["const"]:
            errors.append(f"{where}: expected {schema['const']!r}, got {value!r}")
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{where}: {value!r} not in {schema['enum']}")
        if (
            isinstance(value, str)
            and "pattern" in schema
            and not re.search(schema["pattern"], value)
        ):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        for sub in schema.get("allOf", []):
            errors += self.errors(value, sub, where)
        for key in ("oneOf", "anyOf"):
            if key in schema:
                errors += self.any_of(value, schema[key], where)
        if isinstance(value, dict):
            errors += self.object_errors(value, schema, where)
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                errors += self.errors(item, schema["items"], f"{where}[{i}]")
        return errors

    def any_of(self, value: Any, options: list[dict[str, Any]], where: str) -> list[str]:
        """At least one branch must match (Discord's channel schemas overlap, so not "one")."""
        first: list[str] = []
        for option in options:
            saved = dict(self.counts)
            found = self.errors(value, option, where)
            if not found:
                return []
            self.counts = saved
            first = first or found
        return [f"{where}: matches no alternative, e.g. {first[:2]}"]

    def object_errors(self, value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
        errors: list[str] = []
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        for name in required:
            self.counts["required"] += 1
            if name in value:
                self.counts["required_present"] += 1
            else:
                errors.append(f"{where}: missing required {name!r}")
        for name in properties:
            if name not in required:
                self.counts["optional"] += 1
                self.counts["optional_present"] += name in value
        for name, item in value.items():
            if name in properties:
                errors += self.errors(item, properties[name], f"{where}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += self.errors(item, schema["additionalProperties"], f"{where}.{name}")
        return errors


async def collect_samples(fake: FakeDiscord) -> list[tuple[str, str, int, Any]]:
    """One real answer per route the fake serves (plus error shapes), from raw HTTP calls."""
    samples: list[tuple[str, str, int, Any]] = []
    api = fake.api_url
    auth = {"Authorization": f"Bot {fake.token}"}
    g, c, app, owner = fake.guild.id, fake.channel.id, fake.application_id, fake.owner.id

    async with aiohttp.ClientSession(headers=auth) as session:

        async def call(method: str, template: str, path: str, **kw: Any) -> Any:
            async with session.request(method, api + path, **kw) as response:
                body = await response.json() if response.status != 204 else None
                samples.append((method, template, response.status, body))
                return body

        for template, path in [
            ("/users/@me", "/users/@me"),
            ("/users/{user_id}", f"/users/{owner}"),
            ("/oauth2/applications/@me", "/oauth2/applications/@me"),
            ("/applications/@me", "/applications/@me"),
            ("/gateway", "/gateway"),
            ("/gateway/bot", "/gateway/bot"),
            ("/guilds/{guild_id}", f"/guilds/{g}"),
            ("/guilds/{guild_id}/channels", f"/guilds/{g}/channels"),
            ("/guilds/{guild_id}/roles", f"/guilds/{g}/roles"),
            ("/guilds/{guild_id}/members/{user_id}", f"/guilds/{g}/members/{owner}"),
            ("/channels/{channel_id}", f"/channels/{c}"),
        ]:
            await call("GET", template, path)
        await call("POST", "/channels/{channel_id}/typing", f"/channels/{c}/typing")
        messages = "/channels/{channel_id}/messages"
        one = messages + "/{message_id}"
        embed = {"title": "t", "description": "d", "fields": [{"name": "a", "value": "b"}]}
        first = await call("POST", messages, f"/channels/{c}/messages", json={"content": "hi"})
        form = aiohttp.FormData(quote_fields=False)
        payload = {
            "content": "file",
            "embeds": [embed],
            "attachments": [{"id": 0, "filename": "a.txt"}],
        }
        form.add_field("payload_json", json.dumps(payload), content_type="application/json")
        form.add_field("files[0]", b"abc", filename="a.txt")
        await call("POST", messages, f"/channels/{c}/messages", data=form)
        await call("GET", messages, f"/channels/{c}/messages?limit=5")
        await call("GET", one, f"/channels/{c}/messages/{first['id']}")
        await call("PATCH", one, f"/channels/{c}/messages/{first['id']}", json={"content": "ed"})
        await call("DELETE", one, f"/channels/{c}/messages/{first['id']}")
        dm = await call("POST", "/users/@me/channels", "/users/@me/channels",
                        json={"recipient_id": str(owner)})
        await call("GET", "/channels/{channel_id}", f"/channels/{dm['id']}")
        await call("POST", messages, f"/channels/{dm['id']}/messages", json={"content": "dm"})

        option = {"type": 3, "name": "actor", "description": "which", "required": True}
        command = {"name": "run", "description": "Run an actor", "options": [option]}
        for template, path in [
            ("/applications/{application_id}/commands", f"/applications/{app}/commands"),
            (
                "/applications/{application_id}/guilds/{guild_id}/commands",
                f"/applications/{app}/guilds/{g}/commands",
            ),
        ]:
            await call("PUT", template, path, json=[command])
            await call("GET", template, path)

        interaction = await fake.inject_command("run", {"actor": "digest"})
        await call(
            "POST",
            "/interactions/{interaction_id}/{interaction_token}/callback",
            f"/interactions/{interaction.id}/{interaction.token}/callback?with_response=1",
            json={"type": 4, "data": {"content": "ok"}},
        )
        hook = f"/webhooks/{app}/{interaction.token}"
        webhook = "/webhooks/{webhook_id}/{webhook_token}"
        followup = await call("POST", webhook, hook + "?wait=1", json={"content": "more"})
        for suffix, concrete in [
            ("/messages/@original", "/messages/@original"),
            ("/messages/{message_id}", f"/messages/{followup['id']}"),
        ]:
            await call("GET", webhook + suffix, hook + concrete)
            await call("PATCH", webhook + suffix, hook + concrete, json={"content": "edit"})
            await call("DELETE", webhook + suffix, hook + concrete)

        # error shapes: unknown resource, invalid body, rate limited
        await call("GET", "/channels/{channel_id}", "/channels/1")
        await call("POST", messages, f"/channels/{c}/messages", json={"content": ""})
        fake.rate_limit_next("GET /gateway/bot")
        await call("GET", "/gateway/bot", "/gateway/bot")
    return samples


def openapi_missing() -> str:
    """Why the OpenAPI check is skipped: what the spec is and where it is looked for."""
    return (
        "Discord's OpenAPI description of its REST API (Discord's own, MIT; "
        "https://github.com/discord/discord-api-spec) is not at "
        f"{OPENAPI_IN_REPO} relative to the repository ({OPENAPI}): put its openapi.json "
        "there to check the fake's answers against it"
    )


def test_openapi_skip_says_where_the_spec_comes_from() -> None:
    message = openapi_missing()
    assert "../shared/discord-openapi/openapi.json relative to the repository" in message
    assert "Discord's OpenAPI description of its REST API" in message and "MIT" in message


async def test_rest_answers_match_discord_openapi(
    fake_discord: FakeDiscord, record_property: Any
) -> None:
    if not OPENAPI.is_file():
        pytest.skip(openapi_missing())
    spec = json.loads(OPENAPI.read_text())
    checker = SchemaChecker(spec)
    samples = await collect_samples(fake_discord)

    served = {(r.method, r.template) for r in fake_discord.rest.routes}
    sampled = {(method, template) for method, template, _, _ in samples}
    assert served - sampled == set(), "every route the fake serves needs a sample here"
    problems: list[str] = []
    for method, template, status, body in samples:
        operation = spec["paths"].get(template, {}).get(method.lower())
        if operation is None:
            problems.append(f"{method} {template} is not in Discord's API")
            continue
        responses = operation["responses"]
        answer = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
        if answer is None:
            problems.append(f"{method} {template}: Discord never answers {status}")
            continue
        answer = checker.resolve(answer)
        if body is None:
            continue
        schema = answer["content"]["application/json"]["schema"]
        problems += checker.errors(body, schema, f"{method} {template} [{status}]")
    counts = checker.counts
    fraction = counts["required_present"] / counts["required"]
    optional = counts["optional_present"] / counts["optional"]
    summary = (
        f"{len(samples)} answers over {len(served)} routes: required fields "
        f"{counts['required_present']}/{counts['required']} ({fraction:.0%}), optional fields "
        f"{counts['optional_present']}/{counts['optional']} ({optional:.0%})"
    )
    record_property("openapi", summary)
    print(summary)
    assert problems == [], "\n".join(problems)
    assert fraction == 1.0


@pytest.fixture
async def spare_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


async def test_point_discord_py_at_restores(spare_fake: FakeDiscord) -> None:
    base = discord.http.Route.BASE
    with spare_fake.patch_discord_py():
        assert discord.http.Route.BASE == spare_fake.api_url
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == spare_fake.gateway_url
    assert discord.http.Route.BASE == base


# ---------------------------------------------------------------------------- typed commands


async def test_typed_commands_are_read_against_the_registered_options_and_shown(
    fake_discord: FakeDiscord, fake_discord_bot: commands.Bot
) -> None:
    """``type_command`` reads a line as a terminal user types it (a value runs to the next
    option, "10:30" inside it included; numbers, booleans, @user, #channel and choices typed),
    says what exists when a line is wrong, and ``Console`` prints what the bot answered and
    posted as a reader sees it: names for mentions, local times for timestamps."""
    from discord_actor.testing.fake_discord import Console

    fake, bot = fake_discord, fake_discord_bot
    alice = fake.add_user("alice")
    standup = fake.add_channel(fake.guild, "standup")
    got: list[dict[str, Any]] = []

    @app_commands.command(name="note", description="Write a note")
    @app_commands.choices(colour=[app_commands.Choice(name="Red", value="r"),
                                  app_commands.Choice(name="Blue", value="b")])
    async def note(interaction: discord.Interaction, text: str, colour: str, times: int = 1,
                   loud: bool = False, who: discord.Member | None = None,
                   where: discord.TextChannel | None = None) -> None:
        got.append({"text": text, "colour": colour, "times": times, "loud": loud,
                    "who": who and who.id, "where": where and where.id})
        mention = f" <@{who.id}>" if who else ""
        await interaction.response.send_message(f"noted{mention} <t:1700000000:t>",
                                                ephemeral=not loud)
        if where is not None:
            await where.send(f"note for <@{alice.id}>: {text}")

    bot.tree.add_command(note)
    await bot.tree.sync()
    out = io.StringIO()
    fake.listen(Console(fake, out, clock=lambda: 1_700_000_000.0).show)
    assert fake.command_help() == [
        "/note text:text colour:Red|Blue [times:integer] [loud:true|false] [who:@user] "
        "[where:#channel]  Write a note"
    ]

    await (await fake.type_command("/note text:stand up at 10:30 sharp colour:blue")
           ).wait_response()
    typed = await fake.type_command(
        f"/note colour:Red text:ship it times:3 loud:yes who:@alice where:<#{standup.id}>"
    )
    await typed.wait_response()
    await fake.wait_for_message(channel_id=standup.id)
    assert got == [
        {"text": "stand up at 10:30 sharp", "colour": "b", "times": 1, "loud": False,
         "who": None, "where": None},
        {"text": "ship it", "colour": "r", "times": 3, "loud": True, "who": alice.id,
         "where": standup.id},
    ]
    wrong = {
        "/nope": "no command /nope; the bot registered: /note",
        "/note colour:red txt:x": "/note has no option 'txt'; it takes text, colour, times, "
        "loud, who, where",
        "/note text:x": "/note needs colour: /note text:text colour:Red|Blue",
        "/note hello text:x colour:red": "/note: 'hello' is not an option; give name:value",
        "/note text:x colour:green": "option 'colour' is one of Red, Blue, not 'green'",
        "/note text:x colour:red times:many": "option 'times' takes integer, not 'many'",
        "/note text:x colour:red who:@carol": "option 'who': no @user '@carol' here",
        "": "no command given",
    }
    for line, message in wrong.items():
        with pytest.raises(FakeDiscordError) as e:
            await fake.type_command(line)
        assert message in str(e.value), (line, str(e.value))

    stamp = datetime.fromtimestamp(1_700_000_000).strftime("%H:%M")
    lines = [line[10:] for line in out.getvalue().splitlines()]  # without the time
    assert lines == [
        f"/note -> (only owner) noted {stamp}",
        f"/note -> #general: noted @alice {stamp}  (pings @alice)",
        "#standup  bot: note for @alice: ship it  (pings @alice)",
    ]


def test_relative_timestamps_read_as_discord_shows_them() -> None:
    from discord_actor.testing.fake_discord.console import relative

    assert [relative(s) for s in (9.2, 10, -5, 90, 7200, 3 * 86400)] == [
        "in 10 s", "in 10 s", "5 s ago", "in 1 min", "in 2 h", "in 3 days"
    ]


def test_the_standalone_fake_prints_what_it_receives(tmp_path: Path) -> None:
    """``python -m discord_actor.testing.fake_discord``: a bot pointed at the addresses it
    prints connects, registers a command and posts, and each of those is printed."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "discord_actor.testing.fake_discord", "--heartbeat-ms", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(4)]
        token = head[0].strip().removeprefix("DISCORD_TOKEN=")
        api, gateway = (line.split(" = ")[1].strip().strip("'") for line in head[1:3])
        channel_id = int(head[3].split()[-1])

        async def bot_at_work() -> None:
            from discord_actor.testing.fake_discord import point_discord_py_at

            client = commands.Bot(command_prefix="!", intents=discord.Intents.default(),
                                  guild_ready_timeout=READY_TIMEOUT)

            @client.tree.command(name="ping", description="Pong")
            async def ping(interaction: discord.Interaction) -> None:
                await interaction.response.send_message("pong")

            with point_discord_py_at(api, gateway):
                await client.login(token)
                await client.tree.sync()
                channel = await client.fetch_channel(channel_id)
                assert isinstance(channel, discord.TextChannel)
                await channel.send("hello from the bot")
                await client.close()

        asyncio.run(bot_at_work())
        printed = [proc.stdout.readline().rstrip("\n")[10:] for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert printed == ["bot registered 1 command(s) globally: /ping",
                       "#general  bot: hello from the bot"]
