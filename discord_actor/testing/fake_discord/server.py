"""``FakeDiscord``: the server, its world, what it recorded, and the controls tests use."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import quote

from aiohttp import web

from .commands import CommandRegistry, FakeDiscordError, build_options, may_use
from .front import API_PREFIX, HttpFront, fault_matches
from .gateway import INVALID_SESSION, RECONNECT, Gateway, GatewaySession
from .models import (
    ADMINISTRATOR,
    CHANNEL_TEXT,
    DEFAULT_EVERYONE_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    JSON,
    PRIVILEGED_INTENTS,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    Fault,
    GatewayFrame,
    RecordedRequest,
    Snowflakes,
    normalize_embed,
    now_utc,
    resolve_mentions,
)
from .rest import ApiError, RestApi

if TYPE_CHECKING:
    import discord

log = logging.getLogger(__name__)

__all__ = ["FakeDiscord", "FakeDiscordError", "point_discord_py_at"]

ClientT = TypeVar("ClientT", bound="discord.Client")


@contextlib.contextmanager
def point_discord_py_at(api_url: str, gateway_url: str) -> Iterator[None]:
    """Send discord.py's REST and gateway traffic to other addresses, restoring them after.

    discord.py has no option for this: the REST base is ``discord.http.Route.BASE`` (webhooks
    and interaction callbacks use it too) and the gateway is the ``yarl.URL`` class attribute
    ``DiscordWebSocket.DEFAULT_GATEWAY`` (used at first connect and after INVALID_SESSION).
    """
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


def _as_id(value: Any) -> int:
    return int(value.id) if hasattr(value, "id") else int(value)


class FakeDiscord:
    """A wire-level Discord (REST API v10 + gateway v10) on 127.0.0.1 for the real discord.py.

    Use as ``async with FakeDiscord() as fake:``; ``fake.connected(client)`` runs a client
    against it. The world starts with the bot, an owner, ``fake.guild`` and ``fake.channel``.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        heartbeat_interval_ms: int = 41_250,
        shard_count: int = 1,
        privileged_intents: int = PRIVILEGED_INTENTS,
        rate_limit: tuple[int, float] = (50, 1.0),
        check_permissions: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.ids = Snowflakes()
        self.application_id = self.ids.next()
        encoded = base64.b64encode(str(self.application_id).encode()).decode().rstrip("=")
        self.token = token or f"{encoded}.fake.{secrets.token_urlsafe(27)}"
        self.heartbeat_ms = heartbeat_interval_ms
        self.shard_count = shard_count
        self.privileged_intents = privileged_intents
        self.rate_limit = rate_limit
        self.check_permissions = check_permissions
        self.host = host
        self.port = 0

        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        #: every message: sent by the bot (REST, interaction, follow-up) or injected
        self.messages: list[FakeMessage] = []
        self._message_by_id: dict[int, FakeMessage] = {}
        self._returned: set[int] = set()
        self.interactions: list[FakeInteraction] = []
        self.interaction_by_id: dict[int, FakeInteraction] = {}
        self.interaction_by_token: dict[str, FakeInteraction] = {}
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self._changed = asyncio.Event()

        self.command_registry = CommandRegistry(self.ids, self.application_id)
        self.rest = RestApi(self)
        self.front = HttpFront(self)
        self.gateway = Gateway(self)
        self._runner: web.AppRunner | None = None

        self.bot_user = FakeUser(self.application_id, "FakeBot", bot=True)
        self.users[self.bot_user.id] = self.bot_user
        self.owner = self.add_user("owner", guild=None)
        self.guild = self.add_guild("Fake Guild", owner=self.owner)
        self.channel = next(iter(self.guild.channels.values()))

    # ------------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What to put in ``discord.http.Route.BASE`` (or the ``api_base_url`` setting)."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/resume"

    @property
    def application_flags(self) -> int:
        flags = 0
        if self.privileged_intents & INTENT_GUILD_PRESENCES:
            flags |= 1 << 12
        if self.privileged_intents & INTENT_GUILD_MEMBERS:
            flags |= 1 << 14
        if self.privileged_intents & INTENT_MESSAGE_CONTENT:
            flags |= 1 << 18
        return flags

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self.gateway.handle)
        app.router.add_get("/resume", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self.front.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        log.debug("fake Discord listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self.gateway.shutdown()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def patch_discord_py(self) -> contextlib.AbstractContextManager[None]:
        """Point discord.py at this fake until the returned context manager exits."""
        return point_discord_py_at(self.api_url, self.gateway_url)

    @contextlib.asynccontextmanager
    async def connected(
        self,
        client: ClientT,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (test-helper deadline)
        fast_identify: bool = True,
    ) -> AsyncIterator[ClientT]:
        """Run ``client.start(token)`` against the fake until ready; close it on exit.

        ``fast_identify`` replaces ``before_identify_hook`` (discord.py sleeps 5 s before
        every re-IDENTIFY) with one that does not wait. Errors from ``start`` (LoginFailure,
        ConnectionClosed) are raised here, before or after the body.
        """

        async def no_wait(shard_id: int | None, *, initial: bool = False) -> None:
            return None

        if fast_identify:
            setattr(client, "before_identify_hook", no_wait)  # noqa: B010 (it is a method)
        loop = asyncio.get_running_loop()
        with self.patch_discord_py():
            task = asyncio.create_task(client.start(self.token), name="fake-discord-client")
            deadline = loop.time() + timeout
            while not client.is_ready():
                if task.done():
                    await client.close()
                    await task  # raises what start() raised
                    raise FakeDiscordError("the client stopped before it was ready")
                if loop.time() > deadline:
                    task.cancel()
                    await client.close()
                    raise TimeoutError(f"the client was not ready after {timeout} s")
                await asyncio.sleep(0.01)
            error: BaseException | None = None
            try:
                yield client
            finally:
                await client.close()
                done, _ = await asyncio.wait({task}, timeout=10)
                if not done:
                    task.cancel()
                elif not task.cancelled():
                    error = task.exception()
            if error is not None:
                raise error

    # ------------------------------------------------------------------ the world

    def add_user(
        self,
        username: str,
        *,
        bot: bool = False,
        guild: FakeGuild | int | str | None = "default",
        roles: Iterable[FakeRole | int] = (),
        global_name: str | None = None,
    ) -> FakeUser:
        """A new user, by default a member of ``fake.guild`` with ``roles``."""
        user = FakeUser(self.ids.next(), username, bot=bot, global_name=global_name)
        self.users[user.id] = user
        if guild == "default":
            guild = self.guild
        if guild is not None and not isinstance(guild, str):
            self.add_member(guild, user, roles=roles)
        return user

    def add_guild(self, name: str, *, owner: FakeUser | None = None) -> FakeGuild:
        """A guild with @everyone, a #general text channel, the bot and the owner as members."""
        owner = owner or self.owner
        guild = FakeGuild(self.ids.next(), name, owner.id)
        guild.roles[guild.id] = FakeRole(
            guild.id, guild.id, "@everyone", permissions=DEFAULT_EVERYONE_PERMISSIONS
        )
        self.guilds[guild.id] = guild
        self.add_channel(guild, "general", dispatch=False)
        self.add_member(guild, self.bot_user, dispatch=False)
        self.add_member(guild, owner, dispatch=False)
        self.gateway.dispatch("GUILD_CREATE", guild.create_payload(), guild_id=guild.id)
        return guild

    def add_channel(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        type: int = CHANNEL_TEXT,
        topic: str | None = None,
        parent_id: int | None = None,
        dispatch: bool = True,
    ) -> FakeChannel:
        found = self.get_guild(_as_id(guild))
        channel = FakeChannel(
            self.ids.next(),
            found.id,
            name,
            type=type,
            topic=topic,
            parent_id=parent_id,
            position=len(found.channels),
        )
        found.channels[channel.id] = channel
        self.channels[channel.id] = channel
        if dispatch:
            self.gateway.dispatch(
                "CHANNEL_CREATE", channel.payload(), guild_id=found.id, intent=INTENT_GUILDS
            )
        return channel

    def add_role(
        self,
        guild: FakeGuild | int,
        name: str,
        *,
        permissions: int = 0,
        administrator: bool = False,
    ) -> FakeRole:
        found = self.get_guild(_as_id(guild))
        role = FakeRole(
            self.ids.next(),
            found.id,
            name,
            permissions=permissions | (ADMINISTRATOR if administrator else 0),
            position=len(found.roles),
        )
        found.roles[role.id] = role
        self.gateway.dispatch(
            "GUILD_ROLE_CREATE",
            {"guild_id": str(found.id), "role": role.payload()},
            guild_id=found.id,
            intent=INTENT_GUILDS,
        )
        return role

    def add_member(
        self,
        guild: FakeGuild | int,
        user: FakeUser | int,
        *,
        roles: Iterable[FakeRole | int] = (),
        nick: str | None = None,
        dispatch: bool = True,
    ) -> FakeMember:
        found = self.get_guild(_as_id(guild))
        member = FakeMember(self.users[_as_id(user)], found.id, [_as_id(r) for r in roles], nick)
        found.members[member.user.id] = member
        if dispatch:
            self.gateway.dispatch(
                "GUILD_MEMBER_ADD",
                {**member.payload(), "guild_id": str(found.id)},
                guild_id=found.id,
                intent=INTENT_GUILD_MEMBERS,
            )
        return member

    def set_roles(
        self, guild: FakeGuild | int, user: FakeUser | int, roles: Iterable[FakeRole | int]
    ) -> FakeMember:
        """Change a member's roles (sends GUILD_MEMBER_UPDATE)."""
        found = self.get_guild(_as_id(guild))
        member = found.members[_as_id(user)]
        member.roles = [_as_id(r) for r in roles]
        self.gateway.dispatch(
            "GUILD_MEMBER_UPDATE",
            {**member.payload(), "guild_id": str(found.id)},
            guild_id=found.id,
            intent=INTENT_GUILD_MEMBERS,
        )
        return member

    def get_guild(self, guild_id: int) -> FakeGuild:
        guild = self.guilds.get(guild_id)
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    def get_channel(self, channel_id: int) -> FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def application_payload(self) -> JSON:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "",
            "type": None,
            "bot": self.bot_user.payload(),
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": self.application_flags,
            "flags_new": str(self.application_flags),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": self.owner.payload(),
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": ["bot", "applications.commands"],
            "tags": [],
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
            "integration_types_config": {"0": {}},
        }

    # ------------------------------------------------------------------ messages

    def find_message(self, message_id: int) -> FakeMessage | None:
        message = self._message_by_id.get(message_id)
        return None if message is None or message.deleted else message

    def message_payload(self, message: FakeMessage) -> JSON:
        return message.payload(self.users)

    def new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str,
        description: str | None = None,
    ) -> FakeAttachment:
        attachment_id = self.ids.next()
        url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        return FakeAttachment(attachment_id, filename, data, content_type, url, description)

    def create_message(
        self,
        channel_id: int,
        author: FakeUser,
        body: JSON,
        attachments: list[FakeAttachment] | None = None,
        *,
        source: str = "rest",
        interaction: FakeInteraction | None = None,
    ) -> FakeMessage:
        """Record a message and dispatch MESSAGE_CREATE (ephemeral ones stay private)."""
        channel = self.get_channel(channel_id)
        reference = body.get("message_reference")
        replied = None
        if reference and (target := self.find_message(int(reference.get("message_id", 0)))):
            replied = target.author.id
        content = body.get("content") or ""
        users, roles, everyone = resolve_mentions(content, body.get("allowed_mentions"), replied)
        message = FakeMessage(
            id=self.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=content,
            embeds=[normalize_embed(embed) for embed in body.get("embeds") or []],
            attachments=attachments or [],
            components=list(body.get("components") or []),
            allowed_mentions=body.get("allowed_mentions"),
            mention_user_ids=users,
            mention_role_ids=roles,
            mention_everyone=everyone,
            flags=int(body.get("flags") or 0),
            tts=bool(body.get("tts")),
            type=19 if reference else 0,
            message_reference=reference,
            source=source,
            request=body,
        )
        if interaction is not None:
            message.type = 20 if source == "interaction" else message.type
            message.webhook_id = message.application_id = self.application_id
            message.interaction_id = interaction.id
        self.messages.append(message)
        self._message_by_id[message.id] = message
        channel.last_message_id = message.id
        if not message.ephemeral:
            self.gateway.dispatch(
                "MESSAGE_CREATE",
                self._message_event(message),
                guild_id=message.guild_id,
                intent=INTENT_GUILD_MESSAGES,
            )
        self.notify()
        return message

    def edit_message(
        self, message: FakeMessage, body: JSON, attachments: list[FakeAttachment] | None
    ) -> FakeMessage:
        if "content" in body:
            message.content = body["content"] or ""
        if "embeds" in body:
            message.embeds = [normalize_embed(e) for e in body["embeds"] or []]
        if "components" in body:
            message.components = list(body["components"] or [])
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        if attachments is not None:
            message.attachments = attachments
        if "flags" in body and body["flags"] is not None:
            message.flags = (int(body["flags"]) & ~FLAG_EPHEMERAL) | (
                message.flags & FLAG_EPHEMERAL
            )
        message.flags &= ~FLAG_LOADING
        users, roles, everyone = resolve_mentions(message.content, message.allowed_mentions)
        message.mention_user_ids, message.mention_role_ids = users, roles
        message.mention_everyone = everyone
        message.edited_timestamp = now_utc()
        message.edits.append(body)
        if not message.ephemeral:
            self.gateway.dispatch(
                "MESSAGE_UPDATE",
                self._message_event(message),
                guild_id=message.guild_id,
                intent=INTENT_GUILD_MESSAGES,
            )
        self.notify()
        return message

    def delete_message(self, message: FakeMessage) -> None:
        message.deleted = True
        if not message.ephemeral:
            data: JSON = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if message.guild_id is not None:
                data["guild_id"] = str(message.guild_id)
            self.gateway.dispatch(
                "MESSAGE_DELETE", data, guild_id=message.guild_id, intent=INTENT_GUILD_MESSAGES
            )
        self.notify()

    def _message_event(self, message: FakeMessage) -> Callable[[GatewaySession], JSON]:
        """MESSAGE_CREATE/UPDATE data, blanked for sessions without the content intent."""
        data = self.message_payload(message)
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
            member = self.guilds[message.guild_id].members.get(message.author.id)
            if member is not None:
                data["member"] = {k: v for k, v in member.payload().items() if k != "user"}
        visible = message.author.id == self.bot_user.id or self.bot_user.id in (
            message.mention_user_ids
        )

        def for_session(session: GatewaySession) -> JSON:
            if visible or session.intents & INTENT_MESSAGE_CONTENT:
                return data
            return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

        return for_session

    def sent_messages(self, channel_id: int | None = None) -> list[FakeMessage]:
        """Messages the bot created (REST, interaction responses, follow-ups), oldest first."""
        return [
            m
            for m in self.messages
            if m.author.id == self.bot_user.id
            and (channel_id is None or m.channel_id == channel_id)
        ]

    # ------------------------------------------------------------------ commands

    @property
    def commands(self) -> dict[int | None, dict[str, JSON]]:
        """Registered application commands by scope (None = global, else a guild id)."""
        return self.command_registry.scopes

    def overwrite_commands(self, scope: int | None, commands: list[Any]) -> list[JSON]:
        result = self.command_registry.overwrite(scope, commands)
        self.notify()
        return result

    # ------------------------------------------------------------------ injection

    async def inject_message(
        self,
        content: str,
        *,
        author: FakeUser | int | None = None,
        channel_id: int | None = None,
        embeds: list[JSON] | None = None,
    ) -> FakeMessage:
        """A user (default: the owner) posts ``content``; the bot gets MESSAGE_CREATE."""
        user = self.users[_as_id(author)] if author is not None else self.owner
        channel = self.get_channel(channel_id or self.channel.id)
        if user.id not in self.guilds[channel.guild_id].members:
            raise FakeDiscordError(f"{user.username} is not a member of guild {channel.guild_id}")
        body: JSON = {"content": content, "embeds": embeds or []}
        return self.create_message(channel.id, user, body, source="user")

    async def inject_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: FakeUser | int | None = None,
        roles: Iterable[FakeRole | int] | None = None,
        channel_id: int | None = None,
        focused: str | None = None,
        locale: str = "en-US",
        check_permissions: bool | None = None,
    ) -> FakeInteraction:
        """A user (default: the owner) runs ``/name`` (``"group sub"`` for subcommands).

        The command must be registered (synced) for the channel's guild or globally; option
        types come from that registration. ``roles`` overrides the member's roles for this
        interaction. With ``focused`` it is an autocomplete interaction (type 4) for that
        option instead. Discord hides commands whose ``default_member_permissions`` the user
        lacks; the fake refuses to deliver those unless ``check_permissions=False``.
        """
        invoker = self.users[_as_id(user)] if user is not None else self.owner
        channel = self.get_channel(channel_id or self.channel.id)
        guild = self.guilds[channel.guild_id]
        member = guild.members.get(invoker.id)
        if member is None:
            raise FakeDiscordError(f"{invoker.username} is not a member of {guild.name}")
        role_ids = [_as_id(r) for r in roles] if roles is not None else list(member.roles)
        path = name.split()
        command = self.command_registry.find(path[0], guild.id)
        if command is None:
            raise FakeDiscordError(
                f"/{path[0]} is not registered for guild {guild.id} or globally (registered: "
                f"{self.command_registry.names()}); sync the command tree first"
            )
        permissions = guild.permissions_of(invoker.id, role_ids)
        checking = self.check_permissions if check_permissions is None else check_permissions
        if checking and not may_use(command, permissions):
            raise FakeDiscordError(
                f"Discord would not offer /{name} to {invoker.username}: it lacks the "
                f"default_member_permissions {command['default_member_permissions']}; pass "
                "check_permissions=False to deliver it anyway"
            )
        built, resolved = build_options(command, path, options or {}, focused, guild, self.users)
        interaction_id = self.ids.next()
        token = f"aW50ZXJhY3Rpb24.{interaction_id}.{secrets.token_urlsafe(24)}"
        data: JSON = {"id": command["id"], "name": path[0], "type": 1, "options": built}
        if resolved:
            data["resolved"] = resolved
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        kind = 2 if focused is None else 4
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(channel.id),
            "channel": {**channel.payload(), "permissions": str(permissions)},
            "member": {
                **member.payload(),
                "roles": [str(r) for r in role_ids],
                "permissions": str(permissions),
            },
            "locale": locale,
            "app_permissions": str(guild.permissions_of(self.bot_user.id)),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        interaction = FakeInteraction(
            interaction_id, token, kind, name, invoker, guild.id, channel.id, payload
        )
        interaction._future()
        self.interactions.append(interaction)
        self.interaction_by_id[interaction_id] = interaction
        self.interaction_by_token[token] = interaction
        self.gateway.dispatch("INTERACTION_CREATE", payload, guild_id=guild.id)
        self.notify()
        return interaction

    async def invoke_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (a test helper's deadline)
        **kw: Any,
    ) -> JSON:
        """``inject_command`` and wait for the bot's callback body."""
        interaction = await self.inject_command(name, options, **kw)
        return await interaction.wait_response(timeout)

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        pattern: str,
        status: int = 500,
        *,
        count: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        code: int = 0,
        message: str | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """The next ``count`` requests matching ``pattern`` get ``status`` instead.

        ``pattern`` is a glob over ``"METHOD /path"`` (path without ``/api/v10``), e.g.
        ``"POST /channels/*/messages"``, or a route template such as
        ``"POST /channels/{channel_id}/messages"``; without a method it matches any method.
        A 429 carries ``retry_after`` (and ``is_global``) like Discord's.
        """
        fault = Fault(pattern, status, count, retry_after, is_global, code, message, delay)
        self.faults.append(fault)
        return fault

    def rate_limit_next(
        self, pattern: str, *, count: int = 1, retry_after: float = 0.05, is_global: bool = False
    ) -> Fault:
        return self.fail_next(
            pattern, 429, count=count, retry_after=retry_after, is_global=is_global
        )

    def disconnect_next(self, pattern: str, *, count: int = 1) -> Fault:
        """The next ``count`` matching requests lose their connection without an answer."""
        self.faults.append(fault := Fault(pattern, 0, count, disconnect=True))
        return fault

    def delay_next(self, pattern: str, seconds: float, *, count: int = 1) -> Fault:
        """The next ``count`` matching requests are answered normally, ``seconds`` late."""
        self.faults.append(fault := Fault(pattern, 0, count, delay=seconds))
        return fault

    def requests_matching(self, pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose ``"METHOD /path"`` or route template match ``pattern``."""
        return [r for r in self.requests if fault_matches(pattern, r.method, r.path, r.route)]

    # ------------------------------------------------------------------ gateway controls

    def dispatch(self, event: str, data: JSON, *, guild_id: int | None = None) -> int:
        """Send any gateway event to connected (or resumable) sessions; returns how many."""
        count = self.gateway.dispatch(event, data, guild_id=guild_id)
        self.notify()
        return count

    async def close_gateway(
        self, code: int = 4000, *, shard_id: int | None = None, reason: str = ""
    ) -> None:
        """Close the bot's gateway sockets with ``code`` (4000 → discord.py resumes)."""
        conns = self.gateway.live_connections(shard_id)
        await asyncio.gather(*(self.gateway.close(c, code, reason) for c in conns))

    async def drop_gateway(self, *, shard_id: int | None = None) -> None:
        """Cut the gateway TCP connections without a close frame."""
        conns = self.gateway.live_connections(shard_id)
        await asyncio.gather(*(self.gateway.abort(c) for c in conns))

    async def send_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send RECONNECT (op 7); discord.py closes and resumes."""
        self.gateway.send_op(RECONNECT, None, shard_id)

    async def invalidate_session(
        self, *, resumable: bool = False, shard_id: int | None = None
    ) -> None:
        """Send INVALID_SESSION (op 9); unless resumable, the session is gone for good."""
        for conn in self.gateway.live_connections(shard_id):
            if not resumable and conn.session is not None:
                conn.session.ended = True
        self.gateway.send_op(INVALID_SESSION, resumable, shard_id)

    async def request_heartbeat(self, *, shard_id: int | None = None) -> None:
        """Ask for an immediate heartbeat (op 1), as Discord sometimes does."""
        self.gateway.send_op(1, None, shard_id)

    def reject_next_identify(self, close_code: int = 4004) -> None:
        """Close the next IDENTIFY with ``close_code`` (4004 auth failed, 4014 intents...)."""
        self.gateway.identify_close_codes.append(close_code)

    @contextlib.asynccontextmanager
    async def gateway_down(self, *, close_code: int | None = 4000) -> AsyncIterator[None]:
        """The gateway is unreachable inside the block: sockets are closed with
        ``close_code`` (cut if None) and new connections wait until the block ends. Events
        dispatched meanwhile are kept for the RESUME. REST keeps working.
        """
        self.gateway.hold()
        try:
            if close_code is None:
                await self.drop_gateway()
            else:
                await self.close_gateway(close_code)
            yield
        finally:
            self.gateway.release()

    @property
    def gateway_frames(self) -> list[GatewayFrame]:
        return self.gateway.frames

    @property
    def heartbeats(self) -> int:
        return self.gateway.heartbeats

    @property
    def sessions(self) -> list[GatewaySession]:
        return list(self.gateway.sessions.values())

    # ------------------------------------------------------------------ waiting and checks

    def notify(self) -> None:
        """Wake every ``wait_until`` (called whenever something was recorded)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 (test-helper deadline)
        what: str = "condition",
    ) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake Discord: no {what} within {timeout} s")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def wait_for_message(
        self,
        *,
        channel_id: int | None = None,
        content: str | None = None,
        predicate: Callable[[FakeMessage], bool] | None = None,
        author_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (test-helper deadline)
    ) -> FakeMessage:
        """The oldest matching message not yet returned by this method.

        By default only messages from the bot count; ``author_id`` picks another author.
        ``content`` matches exactly. Successive calls return successive messages.
        """
        author = self.bot_user.id if author_id is None else author_id

        def find() -> FakeMessage | None:
            for message in self.messages:
                if (
                    message.id not in self._returned
                    and message.author.id == author
                    and (channel_id is None or message.channel_id == channel_id)
                    and (content is None or message.content == content)
                    and (predicate is None or predicate(message))
                ):
                    self._returned.add(message.id)
                    return message
            return None

        where = f" in channel {channel_id}" if channel_id else ""
        result: FakeMessage = await self.wait_until(find, timeout=timeout, what=f"message{where}")
        return result

    async def wait_for_frame(
        self,
        *,
        op: int | None = None,
        event: str | None = None,
        direction: str = "recv",
        since: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109 (test-helper deadline)
    ) -> GatewayFrame:
        """The first gateway frame at index >= ``since`` matching op/event and direction."""

        def find() -> GatewayFrame | None:
            for frame in self.gateway.frames[since:]:
                if (
                    frame.direction == direction
                    and (op is None or frame.op == op)
                    and (event is None or frame.t == event)
                ):
                    return frame
            return None

        frame: GatewayFrame = await self.wait_until(
            find, timeout=timeout, what=f"gateway frame op={op} event={event} ({direction})"
        )
        return frame

    def take_unknown_requests(self) -> list[RecordedRequest]:
        """Return and forget the unknown requests (for tests that provoke them on purpose)."""
        taken, self.unknown_requests = self.unknown_requests, []
        return taken

    def assert_no_unknown_requests(self) -> None:
        if self.unknown_requests:
            listed = "\n  ".join(str(r) for r in self.unknown_requests)
            raise AssertionError(
                f"fake Discord got {len(self.unknown_requests)} request(s) it does not "
                f"implement (404 sent):\n  {listed}"
            )
