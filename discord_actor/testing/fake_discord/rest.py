"""Discord's REST API v10 as the fake serves it: routing, request parsing and the handlers.

Handlers return ``(status, body)`` or raise ``ApiError``; the HTTP front (``front``) wraps them with
authentication, injected faults, rate-limit headers and recording.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from .errors import ApiError, form_error, unknown
from .models import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    JSON,
    FakeAttachment,
    FakeInteraction,
    FakeMessage,
)

if TYPE_CHECKING:
    from .world import FakeWorld

Reply = tuple[int, Any]


@dataclass
class Upload:
    """A ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    data: bytes
    content_type: str


@dataclass
class ApiRequest:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    json: Any = None
    uploads: list[Upload] = field(default_factory=list)

    def snowflake(self, name: str) -> int:
        return int(self.params[name])

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


Handler = Callable[[ApiRequest], Awaitable[Reply]]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    auth: bool
    regex: re.Pattern[str]

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


def compile_template(template: str) -> re.Pattern[str]:
    """``/channels/{channel_id}`` → a regex; ids are digits, tokens anything but ``/``."""
    pattern = ""
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
        pattern += re.escape(literal)
        if name:
            part = r"[^/]+" if name.endswith("token") else r"\d+"
            pattern += f"(?P<{name}>{part})"
    return re.compile(f"^{pattern}$")


async def parse_body(request: web.Request) -> tuple[Any, list[Upload]]:
    """JSON body, or multipart/form-data with ``payload_json`` and ``files[n]``."""
    if request.content_type == "multipart/form-data":
        payload: Any = None
        uploads: list[Upload] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif match := re.fullmatch(r"files\[(\d+)\]", part.name):
                name = part.filename or f"file{match.group(1)}"
                sent_type = part.headers.get("Content-Type", "application/octet-stream")
                ctype = mimetypes.guess_type(name)[0] or sent_type
                data = bytes(await part.read(decode=False))
                uploads.append(Upload(int(match.group(1)), name, data, ctype))
        return payload, uploads
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None


EMBED_LIMITS = {"title": 256, "description": 4096}


def validate_message(body: JSON, uploads: list[Upload], *, editing: bool = False) -> None:
    """The checks Discord makes on a message body that a bot can plausibly fail."""
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise form_error("content", "STRING_TYPE_CONVERT", "Could not interpret as string.")
    if isinstance(content, str) and len(content) > 2000:
        raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            text = embed.get(key) or ""
            total += len(text)
            if len(text) > limit:
                raise form_error(
                    f"embeds.{i}.{key}",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {limit} or fewer in length.",
                )
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise form_error(f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer.")
        for f in fields:
            total += len(f.get("name") or "") + len(f.get("value") or "")
        total += len((embed.get("footer") or {}).get("text") or "")
        total += len((embed.get("author") or {}).get("name") or "")
    if total > 6000:
        raise form_error(
            "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
        )
    has_something = any(
        body.get(key) for key in ("content", "embeds", "components", "sticker_ids", "poll")
    )
    if not editing and not has_something and not uploads:
        raise ApiError(400, 50006, "Cannot send an empty message")


class RestApi:
    """The route table and handlers; state lives in the world (``FakeWorld``)."""

    def __init__(self, fake: FakeWorld) -> None:
        self.fake = fake
        self.routes: list[Route] = []
        add = self._add
        add("GET", "/users/@me", self.get_me)
        add("GET", "/users/{user_id}", self.get_user)
        add("POST", "/users/@me/channels", self.create_dm)
        add("GET", "/oauth2/applications/@me", self.get_application)
        add("GET", "/applications/@me", self.get_application)
        add("GET", "/gateway", self.get_gateway, auth=False)
        add("GET", "/gateway/bot", self.get_gateway_bot)
        add("GET", "/guilds/{guild_id}", self.get_guild)
        add("GET", "/guilds/{guild_id}/channels", self.get_guild_channels)
        add("GET", "/guilds/{guild_id}/roles", self.get_guild_roles)
        add("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member)
        add("GET", "/channels/{channel_id}", self.get_channel)
        add("POST", "/channels/{channel_id}/typing", self.typing)
        add("GET", "/channels/{channel_id}/messages", self.list_messages)
        add("POST", "/channels/{channel_id}/messages", self.create_message)
        add("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message)
        add("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message)
        add("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message)
        for scope in ("", "/guilds/{guild_id}"):
            path = "/applications/{application_id}" + scope + "/commands"
            add("GET", path, self.get_commands)
            add("PUT", path, self.put_commands)
        add(
            "POST",
            "/interactions/{interaction_id}/{interaction_token}/callback",
            self.interaction_callback,
            auth=False,
        )
        webhook = "/webhooks/{webhook_id}/{webhook_token}"
        add("POST", webhook, self.create_followup, auth=False)
        for suffix in ("/messages/@original", "/messages/{message_id}"):
            add("GET", webhook + suffix, self.get_webhook_message, auth=False)
            add("PATCH", webhook + suffix, self.edit_webhook_message, auth=False)
            add("DELETE", webhook + suffix, self.delete_webhook_message, auth=False)

    def _add(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        self.routes.append(Route(method, template, handler, auth, compile_template(template)))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.method == method and (m := route.regex.match(path)):
                return route, m.groupdict()
        return None

    # ---------------------------------------------------------------- users and application

    async def get_me(self, req: ApiRequest) -> Reply:
        return 200, self.fake.bot_user.private_payload()

    async def get_user(self, req: ApiRequest) -> Reply:
        user = self.fake.users.get(req.snowflake("user_id"))
        if user is None:
            raise unknown("User", 10013)
        return 200, user.payload()

    async def create_dm(self, req: ApiRequest) -> Reply:
        body = req.json if isinstance(req.json, dict) else {}
        try:
            recipient = int(body.get("recipient_id", ""))
        except (TypeError, ValueError):
            raise form_error(
                "recipient_id", "NUMBER_TYPE_COERCE", "Value is not snowflake."
            ) from None
        channel = self.fake.open_dm(recipient)
        return 200, channel.dm_payload(self.fake.users[recipient])

    async def get_application(self, req: ApiRequest) -> Reply:
        return 200, self.fake.application_payload()

    async def get_gateway(self, req: ApiRequest) -> Reply:
        return 200, {"url": self.fake.gateway_url}

    async def get_gateway_bot(self, req: ApiRequest) -> Reply:
        return 200, {
            "url": self.fake.gateway_url,
            "shards": self.fake.shard_count,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    # ---------------------------------------------------------------- guilds and channels

    async def get_guild(self, req: ApiRequest) -> Reply:
        return 200, self.fake.get_guild(req.snowflake("guild_id")).payload()

    async def get_guild_channels(self, req: ApiRequest) -> Reply:
        guild = self.fake.get_guild(req.snowflake("guild_id"))
        return 200, [channel.payload() for channel in guild.channels.values()]

    async def get_guild_roles(self, req: ApiRequest) -> Reply:
        guild = self.fake.get_guild(req.snowflake("guild_id"))
        return 200, [role.payload() for role in guild.roles.values()]

    async def get_member(self, req: ApiRequest) -> Reply:
        guild = self.fake.get_guild(req.snowflake("guild_id"))
        member = guild.members.get(req.snowflake("user_id"))
        if member is None:
            raise unknown("Member", 10007)
        return 200, member.payload()

    async def get_channel(self, req: ApiRequest) -> Reply:
        channel = self.fake.get_channel(req.snowflake("channel_id"))
        if channel.is_dm:
            return 200, channel.dm_payload(self.fake.users[channel.recipient_id or 0])
        return 200, channel.payload()

    async def typing(self, req: ApiRequest) -> Reply:
        self.fake.get_channel(req.snowflake("channel_id"))
        return 204, None

    # ---------------------------------------------------------------- channel messages

    def _channel_message(self, req: ApiRequest) -> FakeMessage:
        channel = self.fake.get_channel(req.snowflake("channel_id"))
        message = self.fake.find_message(req.snowflake("message_id"))
        if message is None or message.channel_id != channel.id:
            raise unknown("Message", 10008)
        return message

    async def list_messages(self, req: ApiRequest) -> Reply:
        channel = self.fake.get_channel(req.snowflake("channel_id"))
        limit = max(1, min(100, int(req.query.get("limit", "50"))))
        live = sorted(
            (m for m in self.fake.messages if m.channel_id == channel.id and not m.deleted),
            key=lambda m: m.id,
        )
        if "before" in req.query:
            chosen = [m for m in live if m.id < int(req.query["before"])][-limit:]
        elif "after" in req.query:
            chosen = [m for m in live if m.id > int(req.query["after"])][:limit]
        elif "around" in req.query:
            pivot = int(req.query["around"])
            older = [m for m in live if m.id <= pivot][-(limit - limit // 2) :]
            newer = [m for m in live if m.id > pivot][: limit // 2]
            chosen = older + newer
        else:
            chosen = live[-limit:]
        return 200, [self.fake.message_payload(m) for m in reversed(chosen)]

    async def create_message(self, req: ApiRequest) -> Reply:
        channel = self.fake.get_channel(req.snowflake("channel_id"))
        body = req.json if isinstance(req.json, dict) else {}
        validate_message(body, req.uploads)
        if channel.is_dm and (refusal := self.fake.dm_refusal(channel)) is not None:
            raise refusal
        nonce = body.get("nonce")
        if nonce is not None and len(str(nonce)) > 25:
            raise form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if nonce is not None and body.get("enforce_nonce"):
            existing = self.fake.message_by_nonce(self.fake.bot_user, str(nonce))
            if existing is not None:  # Discord answers with the message it made already
                self.fake.nonce_replays += 1
                return 200, self.fake.message_payload(existing)
        message = self.fake.create_message(
            channel.id,
            self.fake.bot_user,
            body,
            self.attachments_for(body, req.uploads, channel.id),
        )
        return 200, self.fake.message_payload(message)

    async def get_message(self, req: ApiRequest) -> Reply:
        return 200, self.fake.message_payload(self._channel_message(req))

    async def edit_message(self, req: ApiRequest) -> Reply:
        message = self._channel_message(req)
        if message.author.id != self.fake.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        return 200, self.fake.message_payload(self._apply_edit(message, req))

    async def delete_message(self, req: ApiRequest) -> Reply:
        self.fake.delete_message(self._channel_message(req))
        return 204, None

    def attachments_for(
        self,
        body: JSON,
        uploads: list[Upload],
        channel_id: int,
        keep: list[FakeAttachment] | None = None,
    ) -> list[FakeAttachment]:
        """Attachments of a new or edited message: kept ones by id, then the uploaded files."""
        entries = {str(entry.get("id")): entry for entry in body.get("attachments") or []}
        kept_by_id = {str(a.id): a for a in keep or []}
        result = [kept_by_id[key] for key in entries if key in kept_by_id]
        for upload in uploads:
            entry = entries.get(str(upload.index), {})
            filename = entry.get("filename") or upload.filename
            result.append(
                self.fake.new_attachment(
                    channel_id, filename, upload.data, upload.content_type, entry.get("description")
                )
            )
        return result

    def _apply_edit(self, message: FakeMessage, req: ApiRequest) -> FakeMessage:
        body = req.json if isinstance(req.json, dict) else {}
        validate_message(body, req.uploads, editing=True)
        attachments = None
        if "attachments" in body or req.uploads:
            keep = message.attachments if "attachments" in body else []
            attachments = self.attachments_for(body, req.uploads, message.channel_id, keep)
            if "attachments" not in body:
                attachments = message.attachments + attachments
        return self.fake.edit_message(message, body, attachments)

    # ---------------------------------------------------------------- application commands

    def _command_scope(self, req: ApiRequest) -> int | None:
        if req.snowflake("application_id") != self.fake.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in req.params:
            return None
        return self.fake.get_guild(req.snowflake("guild_id")).id

    async def get_commands(self, req: ApiRequest) -> Reply:
        scope = self._command_scope(req)
        return 200, list(self.fake.commands.get(scope, {}).values())

    async def put_commands(self, req: ApiRequest) -> Reply:
        scope = self._command_scope(req)
        if not isinstance(req.json, list):
            raise form_error("_root", "LIST_TYPE_CONVERT", "Must be an array.")
        return 200, self.fake.overwrite_commands(scope, req.json)

    # ---------------------------------------------------------------- interactions

    async def interaction_callback(self, req: ApiRequest) -> Reply:
        interaction = self.fake.interaction_by_id.get(req.snowflake("interaction_id"))
        if interaction is None or interaction.token != req.params["interaction_token"]:
            raise unknown("interaction", 10062)
        if interaction.responses:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = req.json if isinstance(req.json, dict) else {}
        kind = body.get("type")
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}[interaction.type]
        if kind not in allowed:
            raise form_error(
                "type", "BASE_TYPE_CHOICES", f"Value must be one of {sorted(allowed)}."
            )
        data = body.get("data") or {}
        message = None
        if kind in (4, 5):
            if kind == 4:
                validate_message(data, req.uploads)
                flags = int(data.get("flags") or 0) & FLAG_EPHEMERAL
            else:
                data = {"content": ""}
                flags = FLAG_LOADING | (
                    int((body.get("data") or {}).get("flags") or 0) & FLAG_EPHEMERAL
                )
            message = self.fake.create_message(
                interaction.channel_id,
                self.fake.bot_user,
                {**data, "flags": flags},
                self.attachments_for(data, req.uploads, interaction.channel_id),
                source="interaction",
                interaction=interaction,
            )
            interaction.original = message
        interaction._record_response(body)
        self.fake.notify()
        if not req.flag("with_response"):
            return 204, None
        result: JSON = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "activity_instance_id": None,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message.ephemeral),
            }
        }
        if message is not None:
            result["interaction"]["response_message_id"] = str(message.id)
        if kind == 4 and message is not None:
            result["resource"] = {"type": 4, "message": self.fake.message_payload(message)}
        return 200, result

    def _webhook_interaction(self, req: ApiRequest) -> FakeInteraction:
        interaction = self.fake.interaction_by_token.get(req.params["webhook_token"])
        if interaction is None or req.snowflake("webhook_id") != self.fake.application_id:
            raise unknown("Webhook", 10015)
        return interaction

    async def create_followup(self, req: ApiRequest) -> Reply:
        interaction = self._webhook_interaction(req)
        if not interaction.responses:
            raise unknown("Webhook", 10015)  # Discord's answer before the initial response
        body = req.json if isinstance(req.json, dict) else {}
        validate_message(body, req.uploads)
        body = {**body, "flags": int(body.get("flags") or 0) & FLAG_EPHEMERAL}
        message = self.fake.create_message(
            interaction.channel_id,
            self.fake.bot_user,
            body,
            self.attachments_for(body, req.uploads, interaction.channel_id),
            source="followup",
            interaction=interaction,
        )
        interaction.followups.append(message)
        if not req.flag("wait"):
            return 204, None
        return 200, self.fake.message_payload(message)

    def _webhook_message(self, req: ApiRequest) -> FakeMessage:
        interaction = self._webhook_interaction(req)
        if "message_id" not in req.params:
            message = interaction.original
        else:
            wanted = req.snowflake("message_id")
            candidates = [interaction.original, *interaction.followups]
            message = next((m for m in candidates if m is not None and m.id == wanted), None)
        if message is None or message.deleted:
            raise unknown("Message", 10008)
        return message

    async def get_webhook_message(self, req: ApiRequest) -> Reply:
        return 200, self.fake.message_payload(self._webhook_message(req))

    async def edit_webhook_message(self, req: ApiRequest) -> Reply:
        return 200, self.fake.message_payload(self._apply_edit(self._webhook_message(req), req))

    async def delete_webhook_message(self, req: ApiRequest) -> Reply:
        self.fake.delete_message(self._webhook_message(req))
        return 204, None
