"""Posting to Discord through the bot's ``discord.Client``.

A post waits while the gateway is not connected (before the first READY, or while discord.py
reconnects) instead of failing: the run's own ``timeout_seconds`` bounds the wait. What Discord
reports as transient (a 5xx after discord.py's own retries, a lost connection) raises
``DiscordUnavailable``, so the attempt fails and the actor's retry policy applies (the retry
sends the post's same nonce); what it refuses (403, 404, 400) raises ``DiscordRefused`` with
what to fix, which is not retried. A channel that refused is not asked again for a while, and
posting stops before invalid requests near Discord's ban (``refusals``). 429s never surface:
discord.py waits them out. Mentions are off unless the actor's ``allowed_mentions`` allows them.
A post with ``user_id`` goes to that user's direct messages; the DM channel is opened once
(one request) and remembered.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import discord

from ..actor import Posted
from ..config.model import ActorConfig
from ..errors import DiscordActorError, NotRetried
from .pacing import ChannelPacer, GlobalPacer, RequestGate
from .refusals import Refusals

if TYPE_CHECKING:
    from ..db.pacing import RateBudgets

log = logging.getLogger("discord_actor.platforms.discord")

#: how often a waiting post looks at the gateway again
GATEWAY_POLL_SECONDS = 0.05
#: Discord's global limit per bot token unless ``discord.requests_per_second`` says otherwise
DEFAULT_REQUESTS_PER_SECOND = 50
#: how many users' DM channels are remembered (the least recently used go first)
MAX_CACHED_DM_CHANNELS = 100_000


class DiscordPostError(DiscordActorError):
    """Discord did not take a post; the message says why and what to fix."""


class DiscordUnavailable(DiscordPostError):
    """A transient failure (Discord's 5xx, a lost connection): a retry may well succeed."""


class InvalidPost(DiscordPostError, NotRetried):
    """The post itself cannot be sent (no channel or user to send to, nothing to send, a user
    id that is not one): another attempt would make the same post, so it is not retried."""


class DiscordRefused(DiscordPostError, NotRetried):
    """Discord refused the post (403 missing access or permissions, 404 unknown channel,
    50007 cannot message the user, another 4xx): another attempt would be refused too, so the
    run is not retried; the message says what to fix."""


class DiscordPlatform:
    """The ``discord`` platform: ``ctx.post()`` sends to the actor's ``channel_id``."""

    name = "discord"
    #: the runtime gives each post its nonce (``nonces.post_nonce``): a repeat is one message
    takes_nonce = True

    def __init__(self, client: discord.Client) -> None:
        self.client = client
        #: posts currently waiting for the gateway (for monitoring and tests)
        self.waiting = 0
        self._closing = False
        self._warned: set[tuple[str, str]] = set()  # (actor, mention kind): said once
        #: refused channels and the invalid answers of the last 10 minutes
        self.refusals = Refusals()
        self._said_stopped = False
        #: Discord's global limit (this process alone until ``share_budget``) and each
        #: channel's bucket
        self.pacer = GlobalPacer(DEFAULT_REQUESTS_PER_SECOND)
        self.channels = ChannelPacer()
        #: posts waiting for their channel's turn or a slot (their runs do not count towards
        #: max_concurrent_runs meanwhile), and whom to tell when one starts waiting
        self.parked = 0
        self.on_parked: Callable[[], None] | None = None
        #: the bot's other requests (discord.py's retries, alerts, ctx.client) wait too
        self.gate = RequestGate(self.pacer)
        self.gate.install(client.http)
        #: user id -> the id of the bot's DM channel with them (Discord's is the same for ever)
        self._dm_channels: OrderedDict[int, int] = OrderedDict()

    @classmethod
    def for_client(cls, client: discord.Client | None) -> Self:
        """Posts through the bot's client; without one (a dry run) the registry's stand-in,
        the console, posts instead and this is not called."""
        if client is None:
            raise ValueError("the discord platform posts through a bot: give its client")
        return cls(client)

    def share_budget(self, budgets: RateBudgets, requests_per_second: int) -> None:
        """Pace under ``requests_per_second`` together with every process of the bot, through
        the database they share (``discord.requests_per_second``; the runtime calls this)."""

        async def reserve(count: int, spacing: float) -> float:
            return await budgets.reserve(self._budget_name(), count, spacing)

        self.pacer = self.gate.pacer = GlobalPacer(requests_per_second, reserve)

    @property
    def rate_limited(self) -> dict[str, int]:
        """Discord's 429s to this process so far, by scope (``global``, ``user``, ``shared``)."""
        return dict(self.gate.rate_limited)

    def _budget_name(self) -> str:
        """The bot's budget: its id (the token's own limit), never the token."""
        bot = self.client.application_id or (self.client.user and self.client.user.id)
        return f"discord:{bot or 'bot'}"

    def close(self) -> None:
        """The bot is shutting down: posts still waiting for the gateway give up at once."""
        self._closing = True

    async def post(
        self,
        actor: ActorConfig,
        content: str | None = None,
        *,
        embed: discord.Embed | dict[str, Any] | None = None,
        embeds: Iterable[discord.Embed | dict[str, Any]] | None = None,
        file: Any = None,
        files: Iterable[Any] | None = None,
        allowed_mentions: discord.AllowedMentions | None = None,
        nonce: str | int | None = None,
        user_id: int | None = None,
        **kwargs: Any,
    ) -> Posted:
        """Send one message; other keyword arguments go to ``Messageable.send`` unchanged.

        ``user_id`` sends it to that user's direct messages instead of the actor's channel
        (Discord refuses with 50007 when the user shares no server with the bot or has closed
        DMs: not retried).

        ``nonce`` (the runtime's, derived from the post) is sent with ``enforce_nonce``:
        Discord answers a repeat within its nonce window with the message it made already,
        which counts as delivered.

        ``embed``/``embeds`` take ``discord.Embed`` objects or dicts (Discord's embed JSON);
        ``file``/``files`` take ``discord.File`` objects, ``(filename, bytes)`` pairs or paths.
        ``allowed_mentions`` can narrow the actor's configured mentions, never widen them.
        """
        if user_id is not None and (not isinstance(user_id, int) or user_id <= 0):
            raise InvalidPost(
                f"actor {actor.name!r}: ctx.post(user_id=...) takes a Discord user id (a positive"
                f" int), not {user_id!r}"
            )
        if user_id is None and actor.channel_id is None:
            raise InvalidPost(
                f"actor {actor.name!r} has no channel to post to: set actors[{actor.index}]"
                ".channel_id, give the keyed schedule one (schedules.add(..., channel_id=...)),"
                " or post to a user (ctx.post(..., user_id=...))"
            )
        all_embeds = [_embed(e) for e in _both(embed, embeds)]
        all_files = [_file(f) for f in _both(file, files)]
        text = None if content is None else str(content)
        if not text and not all_embeds and not all_files and not kwargs.get("stickers"):
            raise InvalidPost(
                f"actor {actor.name!r}: ctx.post() needs content, an embed or a file"
                " (Discord rejects empty messages)"
            )
        mentions = self.allowed_mentions(actor, allowed_mentions)
        self._warn_of_refused_mentions(actor, allowed_mentions)
        if all_embeds:
            kwargs["embeds"] = all_embeds
        if all_files:
            kwargs["files"] = all_files
        if nonce is not None:
            kwargs["nonce"] = nonce  # discord.py adds enforce_nonce
        target = _Target(actor.channel_id, user_id)
        try:
            if user_id is not None:
                self._check_refusals(actor, None)
                await self.wait_for_gateway(actor, None)
                target.channel_id = await self._dm_channel(user_id)
            assert target.channel_id is not None
            self._check_refusals(actor, target.channel_id)
            await self.wait_for_gateway(actor, target.channel_id)
            message = await self._send_paced(actor, target.channel_id, text, mentions, kwargs)
        except discord.HTTPException as e:
            error = _http_error(actor, e, target)
            if e.status in (401, 403, 429):
                self.refusals.invalid_answer()
            if e.status in (403, 404) and target.channel_id is not None:
                self.refusals.remember(target.channel_id, str(error))
            raise error from e
        except (aiohttp.ClientError, OSError) as e:
            raise DiscordUnavailable(
                f"lost the connection to Discord while actor {actor.name!r} posted to {target}"
                f" ({type(e).__name__}: {e or 'no detail'}); this attempt fails and the"
                " actor's retry policy applies"
            ) from e
        finally:
            for f in all_files:
                f.close()
        return Posted(
            platform="discord",
            channel_id=target.channel_id,
            **({} if user_id is None else {"user_id": user_id}),
            message_id=message.id,
            content=text,
            embeds=len(all_embeds),
            files=len(all_files),
        )

    async def _send_paced(
        self,
        actor: ActorConfig,
        channel_id: int,
        text: str | None,
        mentions: discord.AllowedMentions,
        kwargs: dict[str, Any],
    ) -> discord.Message:
        """Send when Discord's limits allow: the channel's turn (in order, one at a time),
        then a slot of the bot's global budget; the run is parked while it waits."""
        channel = self._channel(channel_id)
        self._park()
        waiting = True
        try:
            async with self.channels.lock(channel_id):
                await self.channels.wait_turn(channel_id)
                self._check_refusals(actor, channel_id)  # the post before met one?
                await self.pacer.acquire()
                self.parked -= 1
                waiting = False
                self.channels.left(channel_id)
                prepaid = self.gate.prepaid()  # its first request has its slot; a retry not
                try:
                    return await channel.send(text, allowed_mentions=mentions, **kwargs)
                finally:
                    self.gate.reset(prepaid)
        finally:
            if waiting:  # it gave up (cancelled, refused) before its turn
                self.parked -= 1

    async def _dm_channel(self, user_id: int) -> int:
        """The id of the bot's DM channel with the user: opened once (a request, paced like
        any other), then remembered."""
        channel_id = self._dm_channels.get(user_id)
        if channel_id is not None:
            self._dm_channels.move_to_end(user_id)
            return channel_id
        data = await self.client.http.start_private_message(user_id)
        channel_id = int(data["id"])
        self._dm_channels[user_id] = channel_id
        if len(self._dm_channels) > MAX_CACHED_DM_CHANNELS:
            self._dm_channels.popitem(last=False)
        return channel_id

    def _park(self) -> None:
        """A post starts waiting for Discord's limits: its run's place among
        ``max_concurrent_runs`` is free meanwhile, so the runtime may start another run."""
        self.parked += 1
        if self.on_parked is not None:
            self.on_parked()

    def _check_refusals(self, actor: ActorConfig, channel_id: int | None) -> None:
        """Do not ask Discord what it refused already: a channel that refused within the
        window, or anything once invalid answers reached the guard's limit."""
        reason = None if channel_id is None else self.refusals.refused(channel_id)
        if reason is not None:
            raise DiscordRefused(
                f"{reason} (not sent: channel {channel_id} refused a post less than"
                f" {self.refusals.window / 60:g} minutes ago, and asking again would count"
                " towards Discord's limit of invalid requests)"
            )
        if not self.refusals.stopped():
            self._said_stopped = False
            return
        message = (
            f"posting to Discord is stopped: {self.refusals.invalid_in_window()} invalid"
            f" requests (401, 403, 429) in the last {self.refusals.window / 60:g} minutes, and"
            " Discord bans the bot's IP address for an hour at 10,000; fix what the failed runs"
            " name (permissions, channels, the token); posting resumes as the window empties"
        )
        if not self._said_stopped:
            self._said_stopped = True
            log.error("%s", message)
        raise DiscordRefused(f"actor {actor.name!r} did not post: {message}")

    @staticmethod
    def allowed_mentions(
        actor: ActorConfig, requested: discord.AllowedMentions | None = None
    ) -> discord.AllowedMentions:
        """The configured mentions (none by default), narrowed by what the post asks for."""
        kinds = set(actor.allowed_mentions)
        policy = discord.AllowedMentions(
            everyone="everyone" in kinds,
            users="users" in kinds,
            roles="roles" in kinds,
            replied_user="users" in kinds,
        )
        if requested is None:
            return policy
        return discord.AllowedMentions(
            everyone=policy.everyone and requested.everyone,
            users=requested.users if policy.users else False,
            roles=requested.roles if policy.roles else False,
            replied_user=policy.replied_user and requested.replied_user,
        )

    def _warn_of_refused_mentions(
        self, actor: ActorConfig, requested: discord.AllowedMentions | None
    ) -> None:
        """A post that names whom to ping (``users=[...]``) while the config allows no such
        mention pings nobody: say so once per actor, since nothing fails."""
        if requested is None:
            return
        for kind, named in (("users", requested.users), ("roles", requested.roles)):
            if isinstance(named, list) and named and kind not in actor.allowed_mentions:
                if (actor.name, kind) in self._warned:
                    continue
                self._warned.add((actor.name, kind))
                log.warning(
                    "actor %s: a post names %s to ping, but its allowed_mentions does not list"
                    ' "%s", so nobody is pinged; add "%s" to actors[%d].allowed_mentions',
                    actor.name,
                    kind,
                    kind,
                    kind,
                    actor.index,
                )

    def gateway_ready(self, channel_id: int | None = None) -> bool:
        """Is the client ready and its gateway connection (the channel's shard's) open?"""
        client = self.client
        if not client.is_ready():
            return False
        if isinstance(client, discord.AutoShardedClient):
            shards = client.shards
            channel = client.get_channel(channel_id) if channel_id is not None else None
            guild = getattr(channel, "guild", None)
            if guild is not None and guild.shard_id in shards:
                return not shards[guild.shard_id].is_closed()
            return bool(shards) and not any(s.is_closed() for s in shards.values())
        ws = client.ws
        return ws is not None and ws.open

    async def wait_for_gateway(self, actor: ActorConfig, channel_id: int | None = None) -> None:
        """Wait until the gateway is connected (the channel's shard's, when known); the run's
        timeout bounds the wait."""
        if self.gateway_ready(channel_id):
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info(
            "actor %s: waiting for the Discord gateway to connect before posting"
            " (at most its timeout_seconds = %g)",
            actor.name,
            actor.timeout_seconds,
        )
        self.waiting += 1
        try:
            while not self.gateway_ready(channel_id):
                if self._closing or self.client.is_closed():
                    raise DiscordUnavailable(
                        f"actor {actor.name!r} did not post: the bot shut down while the post"
                        " waited for the Discord gateway"
                    )
                await asyncio.sleep(GATEWAY_POLL_SECONDS)
        except asyncio.CancelledError:
            log.warning(
                "actor %s: gave up waiting for the Discord gateway after %.1f s",
                actor.name,
                loop.time() - started,
            )
            raise
        finally:
            self.waiting -= 1
        log.info(
            "actor %s: the gateway is connected after %.1f s; posting",
            actor.name,
            loop.time() - started,
        )

    def _channel(self, channel_id: int) -> discord.abc.Messageable:
        channel = self.client.get_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        # Not cached (no guilds intent, a thread, a DM): post by id; Discord checks the rest.
        return self.client.get_partial_messageable(channel_id)


def _both(one: Any, many: Iterable[Any] | None) -> list[Any]:
    items = [] if one is None else [one]
    if many is not None:
        if isinstance(many, str | bytes | dict | tuple):
            raise TypeError("ctx.post(embeds=..., files=...) take a list")
        items.extend(many)
    return items


def _embed(value: Any) -> discord.Embed:
    if isinstance(value, discord.Embed):
        return value
    if isinstance(value, dict):
        return discord.Embed.from_dict(value)
    raise TypeError(
        f"ctx.post(embed=...) takes a discord.Embed or a dict, not {type(value).__name__}"
    )


def _file(value: Any) -> discord.File:
    if isinstance(value, discord.File):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        name, data = value
        if isinstance(data, bytes | bytearray | memoryview):
            return discord.File(io.BytesIO(bytes(data)), filename=name)
        if isinstance(data, io.BufferedIOBase):
            return discord.File(data, filename=name)
    if isinstance(value, str | os.PathLike):
        return discord.File(value)
    raise TypeError(
        "ctx.post(file=...) takes a discord.File, a (filename, bytes) pair or a path, not "
        f"{type(value).__name__}"
    )


class _Target:
    """Where a post goes: a channel, or a user's DM channel (known once it is opened)."""

    def __init__(self, channel_id: int | None, user_id: int | None) -> None:
        self.user_id = user_id
        self.channel_id = channel_id if user_id is None else None

    def __str__(self) -> str:
        if self.user_id is None:
            return f"channel {self.channel_id}"
        return f"user {self.user_id} (direct message)"


def _http_error(
    actor: ActorConfig, e: discord.HTTPException, target: _Target
) -> DiscordPostError:
    where = f"actor {actor.name!r} posting to {target}"
    said = f"{e.status} {e.response.reason}" + (f", error {e.code}" if e.code else "")
    if e.text and not e.text.startswith(str(e.status)):  # discord.py's stand-in for no JSON
        said += f": {e.text}"
    if isinstance(e, discord.DiscordServerError):
        return DiscordUnavailable(
            f"Discord failed ({said}) for {where}: a server-side problem, usually brief;"
            " this attempt fails and the actor's retry policy applies"
        )
    if e.code == 50007:
        return DiscordRefused(
            f"Discord refused {where} ({said}): the user does not accept direct messages from"
            " the bot (no shared server, or DMs closed); not retried"
        )
    if isinstance(e, discord.Forbidden):
        return DiscordRefused(
            f"Discord refused {where} ({said}): give the bot View Channel and Send Messages"
            " in that channel (and Embed Links, Attach Files for embeds and files); not retried"
        )
    if isinstance(e, discord.NotFound) and target.user_id is not None:
        return DiscordRefused(
            f"Discord does not know user {target.user_id} ({said}): check the user id that"
            f" actor {actor.name!r} posts to (ctx.post(..., user_id=...)); not retried"
        )
    if isinstance(e, discord.NotFound):
        return DiscordRefused(
            f"Discord does not know channel {actor.channel_id} ({said}): check"
            f" actors[{actor.index}].channel_id of {actor.name!r} (or the keyed schedule's"
            " channel_id) and that the bot is in that server; not retried"
        )
    return DiscordRefused(f"Discord rejected the post of {where} ({said}); not retried")
