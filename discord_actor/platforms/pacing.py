"""Pacing posts under Discord's limits: the global one of the bot's token, shared by all the
bot's processes, and each channel's message bucket.

Discord takes 50 requests in any second per bot token (``discord.requests_per_second``) and
answers more with a global 429; discord.py only backs off once those have arrived. Here every
post waits for a slot first: slots are ``1 / rate`` seconds apart, at 92 % of the limit, and
reserved a few at a time from the database all the processes share (``db.pacing``), so that
two processes never get the same moment and a post costs no round trip of its own. What
counts is when a request leaves: a slot that this process reaches too late (its event loop was
busy) is given up rather than used, since a late request bunches up with the next ones.

Every other request with the bot's token waits for a slot too, at the moment it leaves
(``RequestGate``, an aiohttp trace on the bot's HTTP session): discord.py's own retries (of a
5xx, of a 429), alerts, and what actors ask of ``ctx.client``. Interaction responses and
webhooks, which carry no bot token, are exempt, as on Discord.

A channel takes about 5 messages per 5 s; its posts leave no faster than that, first in first
out, so that discord.py never waits on a channel's bucket holding a slot of the global one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp

log = logging.getLogger("discord_actor.platforms.pacing")

#: the share of Discord's limit posts use: room for the bot's other requests and for jitter
MARGIN = 0.92
#: slots reserved at most in one round trip to the database
MAX_BATCH = 10
#: slots are reserved at most this far ahead: a process that dies, or posts that give up,
#: waste no more of the budget than that
HORIZON_SECONDS = 0.25
#: a slot reached later than this is given up (its request would bunch up with the next)
LATE_SECONDS = 0.04
#: slots a request gives up at most: on an event loop that is late at every wake-up, the next
#: slot is used however late, rather than a request never leaving
MAX_LATE = 2
#: a channel's messages per window (Discord's bucket is 5 per 5 s; a little slower here, so
#: that jitter between this process and Discord never crowds a window)
CHANNEL_MESSAGES = 5
CHANNEL_WINDOW = 5.25

#: reserves ``count`` slots ``spacing`` seconds apart; returns in how many seconds the first is
Reserve = Callable[[int, float], Awaitable[float]]


class GlobalPacer:
    """Slots for one bot token's requests, reserved through ``reserve`` (None: this process
    alone, by its own clock)."""

    def __init__(self, requests_per_second: int, reserve: Reserve | None = None) -> None:
        self.rate = requests_per_second * MARGIN
        self.spacing = 1.0 / self.rate
        self._reserve = reserve
        self._slots: deque[float] = deque()  # loop times, in order
        self._queued = 0  # posts waiting for a slot of their own
        self._fetching: asyncio.Future[None] | None = None
        self._local_until = 0.0  # the end of the slots made by this process alone
        self._horizon = 0.0  # the last slot this process holds (loop time)
        self._warned = False
        #: slots used, and given up (reached too late)
        self.used = 0
        self.late = 0
        #: round trips to the database that reserved slots
        self.reservations = 0

    async def acquire(self) -> None:
        """Wait for this request's slot; return when it may leave."""
        loop = asyncio.get_running_loop()
        self._queued += 1
        popped = False
        late = 0
        try:
            while True:
                while not self._slots:
                    await self._refill()
                at = self._slots.popleft()
                if not popped:
                    popped = True
                    self._queued -= 1
                delay = at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if loop.time() - at <= LATE_SECONDS or late >= MAX_LATE:
                    self.used += 1
                    return
                late += 1
                self.late += 1
                self._queued += 1  # back in the queue for another slot
                popped = False
        finally:
            if not popped:
                self._queued -= 1

    async def _refill(self) -> None:
        """One reservation at a time, for as many posts as are waiting (up to ``MAX_BATCH``)."""
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        loop = asyncio.get_running_loop()
        ahead = self._horizon - loop.time() - HORIZON_SECONDS
        if ahead > 0:  # enough reserved for now: reserve the next ones nearer their time
            await asyncio.sleep(ahead)
        count = max(1, min(MAX_BATCH, self._queued - len(self._slots)))
        first: float | None = None
        if self._reserve is not None:
            try:
                first_in = await self._reserve(count, self.spacing)
                # From when the answer arrived: a little late rather than early.
                first = loop.time() + first_in
                self.reservations += 1
                self._warned = False
            except Exception as e:  # the database is away: pace this process alone
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "could not reserve Discord request slots in the database (%s: %s);"
                        " pacing this process alone meanwhile",
                        type(e).__name__,
                        e,
                    )
        if first is None:
            first = max(loop.time(), self._local_until)
            self._local_until = first + count * self.spacing
        self._slots.extend(first + i * self.spacing for i in range(count))
        self._horizon = max(self._horizon, first + (count - 1) * self.spacing)


#: set by a post that took its slot already: its first request does not take another
_PREPAID: contextvars.ContextVar[bool] = contextvars.ContextVar("prepaid", default=False)


class RequestGate:
    """Makes every request with the bot token that leaves the client's HTTP session wait for a
    slot of ``pacer`` (an aiohttp ``on_request_start`` trace, awaited before the request is
    sent), but the first request of a post that took its own (``prepaid``)."""

    def __init__(self, pacer: GlobalPacer) -> None:
        self.pacer = pacer
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._on_request_start)
        self.trace.on_request_end.append(self._on_request_end)
        self.trace.freeze()
        #: requests that waited here (not counting those of posts, which waited before)
        self.gated = 0
        #: 429s Discord answered, by ``X-RateLimit-Scope`` (``user`` when it names none)
        self.rate_limited: Counter[str] = Counter()

    async def _on_request_start(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        if not params.headers.get("Authorization", "").startswith("Bot "):
            return  # interaction responses, webhooks, the gateway: not in the global limit
        if _PREPAID.get():
            _PREPAID.set(False)  # this request's slot was taken; a retry of it takes another
            return
        self.gated += 1
        await self.pacer.acquire()

    async def _on_request_end(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        if params.response.status == 429:
            self.rate_limited[params.response.headers.get("X-RateLimit-Scope", "user")] += 1

    def install(self, http: Any) -> bool:
        """Add the trace to discord.py's ``HTTPClient``: to its live session, and to those it
        makes later (``http_trace``), in place of another gate's; False if this discord.py
        keeps its session where this cannot see it (posts are paced then, the bot's other
        requests are not)."""
        old: RequestGate | None = getattr(http, "discord_actor_gate", None)
        if getattr(http, "http_trace", None) in (None, old and old.trace):
            http.http_trace = self.trace
        http.discord_actor_gate = self
        session = getattr(http, "_HTTPClient__session", None)
        if not isinstance(session, aiohttp.ClientSession):
            return http.http_trace is self.trace  # the session made at login will have it
        traces = session.trace_configs
        if old is not None and old.trace in traces:
            traces.remove(old.trace)
        if self.trace not in traces:
            traces.append(self.trace)
        return True

    @staticmethod
    def prepaid() -> contextvars.Token[bool]:
        """The next request of this task has its slot already (reset with the token)."""
        return _PREPAID.set(True)

    @staticmethod
    def reset(token: contextvars.Token[bool]) -> None:
        _PREPAID.reset(token)


class ChannelPacer:
    """Each channel's posts: at most ``messages`` in any ``window`` seconds, in order."""

    def __init__(self, messages: int = CHANNEL_MESSAGES, window: float = CHANNEL_WINDOW) -> None:
        self.messages = messages
        self.window = window
        self._sent: dict[int, deque[float]] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def lock(self, channel_id: int) -> asyncio.Lock:
        """Held from the wait for the channel's turn until its request left (first in, first
        out: ``asyncio.Lock`` wakes its waiters in order)."""
        found = self._locks.get(channel_id)
        if found is None:
            found = self._locks[channel_id] = asyncio.Lock()
        return found

    async def wait_turn(self, channel_id: int) -> None:
        """Until another message may leave to ``channel_id`` (called holding its lock)."""
        sent = self._sent.get(channel_id)
        while sent is not None and len(sent) >= self.messages:
            wait = sent[0] + self.window - time.monotonic()
            if wait <= 0:
                sent.popleft()
                continue
            await asyncio.sleep(wait)

    def left(self, channel_id: int) -> None:
        """A message to ``channel_id`` left now."""
        now = time.monotonic()
        if len(self._sent) > 4096:
            self.forget_idle()
        sent = self._sent.setdefault(channel_id, deque())
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        sent.append(now)

    def forget_idle(self) -> None:
        """Drop the channels with nothing in their window and nobody waiting (memory)."""
        horizon = time.monotonic() - self.window
        for channel_id in [c for c, s in self._sent.items() if not s or s[-1] <= horizon]:
            lock = self._locks.get(channel_id)
            if lock is None or not lock.locked():
                self._sent.pop(channel_id, None)
                self._locks.pop(channel_id, None)
