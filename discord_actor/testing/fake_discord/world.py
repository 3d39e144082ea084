"""``FakeWorld``: what the fake Discord holds (users, guilds, channels, roles, messages,
commands), how it changes (each change dispatched to the gateway as Discord would), what it
recorded, and waiting for any of it.

``FakeDiscord`` (``server``) is this world served over HTTP, with the controls tests use; the
REST handlers and the HTTP front read and change the world through this class only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from .commands import CommandRegistry
from .errors import ApiError
from .gateway import Gateway, GatewaySession
from .limits import DiscordLimits, RequestCounts
from .models import (
    ADMINISTRATOR,
    API_PREFIX,
    CHANNEL_DM,
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
    WorldEvent,
    as_id,
    normalize_embed,
    now_utc,
    resolve_mentions,
)

log = logging.getLogger(__name__)

#: what ``FakeWorld.listen`` calls with each ``WorldEvent``
Listener = Callable[[WorldEvent], None]


class FakeWorld:
    """The state of a fake Discord and every change to it; the options of the whole fake.

    The world starts with the bot, an owner (named ``owner_name``), ``guild`` and its
    ``channel``.
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
        owner_name: str = "owner",
        limits: DiscordLimits | None = None,
        nonce_seconds: float = 300.0,
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
        #: Discord's global and per-channel limits, enforced when given (None: only the
        #: per-route ``rate_limit``, as before)
        self.limits = limits
        #: how long a message's ``nonce`` (sent with ``enforce_nonce``) returns that message
        self.nonce_seconds = nonce_seconds
        #: 429s by scope and invalid requests (401, 403, 429 but shared), as Discord counts them
        self.counts = RequestCounts()
        #: draws the requests a ``Fault`` with a ``fraction`` hits (seed it to repeat a run)
        self.random = random.Random(0)
        self._nonces: dict[tuple[int, str], tuple[float, FakeMessage]] = {}
        #: messages asked for again under a nonce they were created with (answered, not made)
        self.nonce_replays = 0
        self.port = 0

        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        #: each user's direct-message channel with the bot, once opened
        self.dm_channels: dict[int, FakeChannel] = {}
        #: every message: sent by the bot (REST, interaction, follow-up) or injected
        self.messages: list[FakeMessage] = []
        self._message_by_id: dict[int, FakeMessage] = {}
        self._returned: set[int] = set()  # by wait_for_message
        self.interactions: list[FakeInteraction] = []
        self.interaction_by_id: dict[int, FakeInteraction] = {}
        self.interaction_by_token: dict[str, FakeInteraction] = {}
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self._changed = asyncio.Event()
        self._listeners: list[Listener] = []

        self.command_registry = CommandRegistry(self.ids, self.application_id)
        self.gateway = Gateway(self)

        self.bot_user = FakeUser(self.application_id, "FakeBot", bot=True)
        self.users[self.bot_user.id] = self.bot_user
        self.owner = self.add_user(owner_name, guild=None)
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
        channel_id: int | None = None,
    ) -> FakeChannel:
        """A channel of ``guild``; ``channel_id`` gives it that id (one that a configuration
        names, so that posts to it arrive) instead of a new one."""
        found = self.get_guild(as_id(guild))
        if channel_id is not None and channel_id in self.channels:
            raise ValueError(f"channel {channel_id} exists already")
        channel = FakeChannel(
            self.ids.next() if channel_id is None else channel_id,
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
        found = self.get_guild(as_id(guild))
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
        found = self.get_guild(as_id(guild))
        member = FakeMember(self.users[as_id(user)], found.id, [as_id(r) for r in roles], nick)
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
        found = self.get_guild(as_id(guild))
        member = found.members[as_id(user)]
        member.roles = [as_id(r) for r in roles]
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

    def open_dm(self, user_id: int) -> FakeChannel:
        """The bot's DM channel with the user (``POST /users/@me/channels``): the same
        channel every time, as on Discord."""
        user = self.users.get(user_id)
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        channel = self.dm_channels.get(user_id)
        if channel is None:
            channel = FakeChannel(
                self.ids.next(), 0, user.username, type=CHANNEL_DM, recipient_id=user_id
            )
            self.dm_channels[user_id] = self.channels[channel.id] = channel
        return channel

    def dm_refusal(self, channel: FakeChannel) -> ApiError | None:
        """Why Discord refuses the bot's message in a DM channel: the user closed DMs, or
        shares no server with the bot (403, 50007); None when it is taken."""
        user = self.users[channel.recipient_id or 0]
        shares_a_guild = any(
            user.id in g.members and self.bot_user.id in g.members for g in self.guilds.values()
        )
        if user.accepts_dms and shares_a_guild:
            return None
        return ApiError(403, 50007, "Cannot send messages to this user")

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

    def message_by_nonce(self, author: FakeUser, nonce: str) -> FakeMessage | None:
        """The message ``author`` created with ``nonce`` within ``nonce_seconds``, if any."""
        found = self._nonces.get((author.id, nonce))
        if found is None or time.monotonic() - found[0] > self.nonce_seconds:
            return None
        return found[1]

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
            guild_id=None if channel.is_dm else channel.guild_id,
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
        nonce = body.get("nonce")
        if nonce is not None:
            message.nonce = str(nonce)
            if body.get("enforce_nonce"):
                self._nonces[(author.id, str(nonce))] = (time.monotonic(), message)
        if interaction is not None:
            message.type = 20 if source == "interaction" else message.type
            message.webhook_id = message.application_id = self.application_id
            message.interaction_id = interaction.id
        self.messages.append(message)
        self._message_by_id[message.id] = message
        channel.last_message_id = message.id
        self._announce("MESSAGE_CREATE", message)
        self._tell(WorldEvent("message", message))
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
        self._announce("MESSAGE_UPDATE", message)
        self._tell(WorldEvent("edit", message))
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
        self._tell(WorldEvent("delete", message))
        self.notify()

    def _announce(self, event: str, message: FakeMessage) -> None:
        """MESSAGE_CREATE or MESSAGE_UPDATE to the gateway (ephemeral messages stay private)."""
        if not message.ephemeral:
            self.gateway.dispatch(
                event,
                self._message_event(message),
                guild_id=message.guild_id,
                intent=INTENT_GUILD_MESSAGES,
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
        self._tell(WorldEvent("commands", scope=scope, commands=tuple(result)))
        self.notify()
        return result

    # ------------------------------------------------------------------ listening

    def listen(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback`` with every ``WorldEvent`` as it happens (in the event loop, inside
        the request that caused it); returns the function that stops it."""
        self._listeners.append(callback)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return stop

    def _tell(self, event: WorldEvent) -> None:
        """A listener's failure is logged: it must not turn the bot's request into a 500."""
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("fake Discord: listener %r failed on %s", callback, event.kind)
    # ------------------------------------------------------------------ waiting

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

