"""``FakeDiscord``: the fake's world (``world``) served over HTTP and websockets on loopback,
and the controls tests use: connecting a client, injecting messages and commands, faults,
gateway misbehaviour and checks on what was recorded."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self, TypeVar

from aiohttp import web

from .commands import (
    build_options,
    describe_commands,
    may_use,
    parse_invocation,
    typed_options,
)
from .errors import FakeDiscordError
from .front import HttpFront, fault_matches
from .gateway import INVALID_SESSION, RECONNECT, GatewaySession
from .models import (
    JSON,
    FakeInteraction,
    FakeMessage,
    FakeRole,
    FakeUser,
    Fault,
    GatewayFrame,
    RecordedRequest,
    as_id,
)
from .rest import RestApi
from .world import FakeWorld

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


class FakeDiscord(FakeWorld):
    """A wire-level Discord (REST API v10 + gateway v10) on 127.0.0.1 for the real discord.py.

    Use as ``async with FakeDiscord() as fake:``; ``fake.connected(client)`` runs a client
    against it. The world starts with the bot, an owner, ``fake.guild`` and ``fake.channel``.
    """

    _runner: web.AppRunner | None = None

    @functools.cached_property
    def rest(self) -> RestApi:
        """The REST API's routes and handlers over this world."""
        return RestApi(self)

    @functools.cached_property
    def front(self) -> HttpFront:
        """The HTTP front door: authentication, faults, rate limits, recording."""
        return HttpFront(self, self.rest)

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
        user = self.users[as_id(author)] if author is not None else self.owner
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
        invoker = self.users[as_id(user)] if user is not None else self.owner
        channel = self.get_channel(channel_id or self.channel.id)
        guild = self.guilds[channel.guild_id]
        member = guild.members.get(invoker.id)
        if member is None:
            raise FakeDiscordError(f"{invoker.username} is not a member of {guild.name}")
        role_ids = [as_id(r) for r in roles] if roles is not None else list(member.roles)
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

    async def type_command(
        self, text: str, *, user: FakeUser | int | None = None, channel_id: int | None = None
    ) -> FakeInteraction:
        """``inject_command`` of a line as a user types it: ``/remind in:10s text:stand up``.

        Options are ``name:value`` (a value runs until the next option of that command);
        numbers, booleans, ``@user``, ``#channel``, ``@role`` and choices are read as their
        types. A line that names no registered command, or a wrong option, raises
        ``FakeDiscordError`` saying what exists instead.
        """
        channel = self.get_channel(channel_id or self.channel.id)
        guild = self.guilds[channel.guild_id]
        path, values, definitions = parse_invocation(text, self.command_registry, guild.id)
        options = typed_options(definitions, values, guild, self.users)
        return await self.inject_command(path, options, user=user, channel_id=channel.id)

    def command_help(self, guild_id: int | None = None) -> list[str]:
        """One line per command the bot registered (for ``guild_id``, default ``guild``):
        what ``type_command`` accepts."""
        return describe_commands(self.command_registry, guild_id or self.guild.id)

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

    def fail_after_write(
        self, pattern: str, status: int = 502, *, count: int = 1, fraction: float = 1.0
    ) -> Fault:
        """The next ``count`` matching requests (or that ``fraction`` of them) are carried out
        (the message is created) and then answered ``status``, as when Discord's edge fails."""
        fault = Fault(pattern, status, count, after_write=True, fraction=fraction)
        self.faults.append(fault)
        return fault

    def disconnect_after_write(
        self, pattern: str, *, count: int = 1, fraction: float = 1.0
    ) -> Fault:
        """The next ``count`` matching requests (or that ``fraction`` of them) are carried out,
        then lose their connection before the answer: the client cannot know it worked."""
        fault = Fault(pattern, 0, count, disconnect=True, after_write=True, fraction=fraction)
        self.faults.append(fault)
        return fault

    @property
    def global_429s(self) -> int:
        """Global 429s answered (only ``limits`` and injected faults give them)."""
        return self.counts.rate_limited["global"]

    @property
    def invalid_requests(self) -> int:
        """401s, 403s and 429s (but ``shared``) answered: what Discord bans an IP for."""
        return self.counts.invalid

    @property
    def peak_requests_per_second(self) -> int:
        """The most bot-token requests that arrived in any second (with ``limits`` only)."""
        window = self.front.global_window
        return 0 if window is None else window.peak

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

    # ------------------------------------------------------------------ checks

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
