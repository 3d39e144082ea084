"""The fake Discord's world and records, and the JSON payloads Discord would send for them.

Payload builders follow Discord's API v10 as described by its OpenAPI document (the test suite
validates the REST answers against it), so discord.py parses them exactly as it parses Discord's.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]

API_PREFIX = "/api/v10"  # the REST API's path on the fake's address

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits the fake needs to reason about.
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 53) - 1
DEFAULT_EVERYONE_PERMISSIONS = 0x0006_3584_0000_0E41 & ALL_PERMISSIONS

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Message flags.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

CHANNEL_TEXT = 0
CHANNEL_DM = 1
CHANNEL_CATEGORY = 4


def iso(moment: datetime) -> str:
    """Discord's timestamp format (ISO 8601 with offset)."""
    return moment.isoformat()


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_id(value: Any) -> int:
    """The id of a user, guild, role... given as the object or as the id."""
    return int(value.id) if hasattr(value, "id") else int(value)


class Snowflakes:
    """Increasing snowflake ids whose embedded time is now, so ``created_at`` looks right."""

    def __init__(self) -> None:
        self._last = 0
        self._increment = 0

    def next(self) -> int:
        self._increment = (self._increment + 1) & 0xFFF
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | (1 << 17) | self._increment
        self._last = value = max(value, self._last + 1)
        return value


@dataclass
class FakeUser:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None
    #: whether the user takes direct messages from the bot (off: a DM answers 403, 50007)
    accepts_dms: bool = True

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
            "public_flags": 0,
            "flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data

    def private_payload(self) -> JSON:
        """``GET /users/@me``: the user plus the fields only the account itself sees."""
        return {
            **self.payload(),
            "mfa_enabled": False,
            "locale": "en-US",
            "verified": True,
            "email": None,
            "premium_type": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": self.hoist,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"


@dataclass
class FakeChannel:
    """A guild's channel, or a direct-message channel (``CHANNEL_DM``: ``guild_id`` 0, the
    user in ``recipient_id``)."""

    id: int
    guild_id: int
    name: str
    type: int = CHANNEL_TEXT
    position: int = 0
    topic: str | None = None
    parent_id: int | None = None
    nsfw: bool = False
    last_message_id: int | None = None
    recipient_id: int | None = None

    @property
    def is_dm(self) -> bool:
        return self.type == CHANNEL_DM

    def dm_payload(self, recipient: FakeUser) -> JSON:
        """A DM channel as ``POST /users/@me/channels`` and ``GET /channels/{id}`` give it."""
        return {
            "id": str(self.id),
            "type": CHANNEL_DM,
            "flags": 0,
            "last_message_id": None if self.last_message_id is None else str(self.last_message_id),
            "recipients": [recipient.payload()],
        }

    def payload(self) -> JSON:
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "flags": 0,
            "permission_overwrites": [],
            "topic": self.topic,
            "nsfw": self.nsfw,
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "last_message_id": None if self.last_message_id is None else str(self.last_message_id),
            "rate_limit_per_user": 0,
        }


@dataclass
class FakeMember:
    user: FakeUser
    guild_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: datetime = field(default_factory=now_utc)

    def payload(self) -> JSON:
        return {
            "user": self.user.payload(),
            "roles": [str(role) for role in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(self.joined_at),
            "premium_since": None,
            "communication_disabled_until": None,
            "pending": False,
            "flags": 0,
            "mute": False,
            "deaf": False,
        }


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    application_id: int | None = None
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def permissions_of(self, user_id: int, role_ids: list[int] | None = None) -> int:
        """Base guild permissions, as Discord computes them (owner and administrator get all)."""
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        member = self.members.get(user_id)
        roles = role_ids if role_ids is not None else (member.roles if member else [])
        value = self.everyone.permissions
        for role_id in roles:
            role = self.roles.get(role_id)
            if role is not None:
                value |= role.permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def payload(self) -> JSON:
        """The guild as ``GET /guilds/{id}`` answers it (``GUILD_CREATE`` adds more)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "description": None,
            "home_header": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "features": [],
            "owner_id": str(self.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "roles": [role.payload() for role in self.roles.values()],
            "default_message_notifications": 0,
            "mfa_level": 0,
            "explicit_content_filter": 0,
            "max_presences": None,
            "max_members": 500000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "rules_channel_id": None,
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "premium_progress_bar_enabled": False,
            "nsfw": False,
            "nsfw_level": 0,
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
            "approximate_member_count": len(self.members),
            "approximate_presence_count": 0,
        }

    def create_payload(self) -> JSON:
        """``GUILD_CREATE``: the full guild with channels and every member.

        ``member_count`` equals the members sent, so discord.py considers the guild chunked.
        """
        return {
            **self.payload(),
            "unavailable": False,
            "large": False,
            "lazy": True,
            "joined_at": iso(now_utc()),
            "member_count": len(self.members),
            "channels": [
                {k: v for k, v in channel.payload().items() if k != "guild_id"}
                for channel in self.channels.values()
            ],
            "threads": [],
            "members": [member.payload() for member in self.members.values()],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }


@dataclass
class FakeAttachment:
    """A file attached to a message, with its bytes (served at ``url``)."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        return data


def normalize_embed(embed: JSON) -> JSON:
    """An embed as Discord stores it: ``type`` "rich" and every field's ``inline`` set."""
    result: JSON = {"type": "rich", **embed}
    if "fields" in embed:
        result["fields"] = [{"inline": False, **field} for field in embed["fields"] or []]
    return result


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def resolve_mentions(
    content: str, allowed: JSON | None, replied_user_id: int | None = None
) -> tuple[list[int], list[int], bool]:
    """Who a message would ping: (user ids, role ids, @everyone), honouring ``allowed_mentions``.

    Without ``allowed_mentions`` Discord parses everything, as here.
    """
    users = [int(x) for x in _USER_MENTION.findall(content)]
    roles = [int(x) for x in _ROLE_MENTION.findall(content)]
    everyone = "@everyone" in content or "@here" in content
    if allowed is None:
        pinged_users, pinged_roles, pinged_everyone = users, roles, everyone
    else:
        parse = set(allowed.get("parse") or [])
        allowed_users = {int(x) for x in allowed.get("users") or []}
        allowed_roles = {int(x) for x in allowed.get("roles") or []}
        pinged_users = [u for u in users if "users" in parse or u in allowed_users]
        pinged_roles = [r for r in roles if "roles" in parse or r in allowed_roles]
        pinged_everyone = everyone and "everyone" in parse
    if replied_user_id is not None and (allowed is None or allowed.get("replied_user", True)):
        pinged_users.append(replied_user_id)
    return list(dict.fromkeys(pinged_users)), list(dict.fromkeys(pinged_roles)), pinged_everyone


@dataclass
class FakeMessage:
    """A message as the fake recorded it: what the bot (or an injected user) sent."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    allowed_mentions: JSON | None = None
    mention_user_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    flags: int = 0
    tts: bool = False
    type: int = 0
    message_reference: JSON | None = None
    timestamp: datetime = field(default_factory=now_utc)
    edited_timestamp: datetime | None = None
    deleted: bool = False
    #: "rest" (bot via REST), "user" (injected), "interaction" (callback), "followup" (webhook)
    source: str = "rest"
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    #: the request body that created the message (payload_json for multipart), then each edit
    request: JSON = field(default_factory=dict)
    edits: list[JSON] = field(default_factory=list)
    nonce: str | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def attachment_names(self) -> list[str]:
        return [a.filename for a in self.attachments]

    def payload(self, users: dict[int, FakeUser] | None = None) -> JSON:
        users = users or {}
        data: JSON = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "author": self.author.payload(),
            "content": self.content,
            "embeds": self.embeds,
            "attachments": [a.payload() for a in self.attachments],
            "components": self.components,
            "mentions": [users[u].payload() for u in self.mention_user_ids if u in users],
            "mention_roles": [str(r) for r in self.mention_role_ids],
            "mention_everyone": self.mention_everyone,
            "pinned": False,
            "tts": self.tts,
            "timestamp": iso(self.timestamp),
            "edited_timestamp": None
            if self.edited_timestamp is None
            else iso(self.edited_timestamp),
            "flags": self.flags,
        }
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        if self.nonce is not None:
            data["nonce"] = self.nonce
        return data


@dataclass
class FakeInteraction:
    """An interaction the test injected, and everything the bot answered to it."""

    id: int
    token: str
    type: int
    name: str
    user: FakeUser
    guild_id: int | None
    channel_id: int
    payload: JSON
    #: every body POSTed to the callback endpoint (normally one)
    responses: list[JSON] = field(default_factory=list)
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    _first_response: asyncio.Future[JSON] | None = field(default=None, repr=False)

    def _future(self) -> asyncio.Future[JSON]:
        if self._first_response is None:
            self._first_response = asyncio.get_running_loop().create_future()
        return self._first_response

    def _record_response(self, body: JSON) -> None:
        self.responses.append(body)
        future = self._future()
        if not future.done():
            future.set_result(body)

    @property
    def response(self) -> JSON | None:
        """The first callback body, or None while the bot has not answered."""
        return self.responses[0] if self.responses else None

    @property
    def choices(self) -> list[JSON]:
        """Autocomplete choices the bot answered with (callback type 8)."""
        for body in self.responses:
            if body.get("type") == 8:
                return list((body.get("data") or {}).get("choices") or [])
        return []

    async def wait_response(self, timeout: float = 5.0) -> JSON:  # noqa: ASYNC109 (test-helper deadline)
        """The callback body, once the bot has posted it."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._future()), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the bot did not answer interaction /{self.name} within {timeout} s"
            ) from None


@dataclass
class RecordedRequest:
    """One HTTP request the fake answered."""

    method: str
    path: str
    query: dict[str, str]
    route: str | None
    status: int
    body: Any = None

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.method} {self.path}{'?' + query if query else ''} -> {self.status}"


@dataclass
class Fault:
    """An injected REST failure for the next ``count`` requests matching ``pattern``."""

    pattern: str
    status: int
    count: int
    retry_after: float = 0.05
    is_global: bool = False
    code: int = 0
    message: str | None = None
    delay: float = 0.0
    disconnect: bool = False
    hits: int = 0
    #: the request is carried out first (the message exists), then the fault answers it
    after_write: bool = False
    #: the share of matching requests hit (drawn from ``fake.random``), until ``count`` are
    fraction: float = 1.0

    @property
    def remaining(self) -> int:
        return self.count - self.hits


@dataclass
class GatewayFrame:
    """A gateway payload the fake received ("recv") or sent ("send"), or a close ("close")."""

    direction: str
    connection: int
    op: int | None
    t: str | None = None
    s: int | None = None
    d: Any = None
    session_id: str | None = None


@dataclass(frozen=True)
class WorldEvent:
    """Something that reached the fake, for ``FakeWorld.listen`` callbacks: a console that
    shows a bot at work needs these as they happen, not the records afterwards.

    ``kind`` is ``"message"`` (created: by the bot through REST, as an interaction answer or a
    follow-up, or injected), ``"edit"``, ``"delete"`` or ``"commands"`` (a bulk overwrite of
    ``scope``'s application commands: None is global, else a guild id).
    """

    kind: str
    message: FakeMessage | None = None
    scope: int | None = None
    commands: tuple[JSON, ...] = ()
