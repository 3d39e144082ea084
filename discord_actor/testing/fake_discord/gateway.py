"""Discord's gateway v10 as the fake serves it: sessions, sequence numbers, resume and faults.

Each websocket connection has a writer task fed by a queue, so events, closes and aborts go out
in the order the test asked for them. Every dispatched event is also kept in its session's log:
a RESUME replays what the client missed, whether or not it was ever written to a socket.
Frames are plain JSON text; the ``compress=zlib-stream`` query discord.py asks for is ignored
(discord.py only inflates binary frames, and reads text frames as they are).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .models import JSON, PRIVILEGED_INTENTS, FakeGuild, FakeUser, GatewayFrame

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

EventData = JSON | Callable[["GatewaySession"], JSON | None]


class GatewayWorld(Protocol):
    """What the gateway reads from the world it serves (``world.FakeWorld``): who may connect,
    and what READY and member chunks describe. The world dispatches its changes here."""

    token: str
    heartbeat_ms: int
    privileged_intents: int
    application_id: int
    bot_user: FakeUser
    guilds: dict[int, FakeGuild]

    @property
    def resume_gateway_url(self) -> str: ...

    @property
    def application_flags(self) -> int: ...

    def notify(self) -> None: ...


@dataclass
class GatewaySession:
    id: str
    shard: tuple[int, int] | None
    intents: int
    seq: int = 0
    log: list[JSON] = field(default_factory=list)
    connection: GatewayConnection | None = None
    ended: bool = False
    resumes: int = 0

    def sees_guild(self, guild_id: int | None) -> bool:
        if guild_id is None or self.shard is None:
            return True
        shard_id, count = self.shard
        return (guild_id >> 22) % count == shard_id

    @property
    def shard_id(self) -> int | None:
        return None if self.shard is None else self.shard[0]


@dataclass
class GatewayConnection:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    path: str
    queue: asyncio.Queue[tuple[str, Any, asyncio.Future[None] | None]] = field(
        default_factory=asyncio.Queue
    )
    session: GatewaySession | None = None
    open: bool = True
    close_code: int | None = None


class Gateway:
    """Websocket endpoint plus the controls tests use to misbehave like Discord does."""

    def __init__(self, fake: GatewayWorld) -> None:
        self.fake = fake
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: dict[int, GatewayConnection] = {}
        self.frames: list[GatewayFrame] = []
        self.heartbeats = 0
        self.ack_heartbeats = True
        self.identify_close_codes: list[int] = []
        #: URL path of every accepted connection ("/" first, "/resume" for resume_gateway_url)
        self.connected_paths: list[str] = []
        self._ids = itertools.count(1)
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ connection handling

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await self._accepting.wait()  # gateway_down() holds new connections here
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(next(self._ids), ws, request, request.path)
        self.connections[conn.id] = conn
        self.connected_paths.append(request.path)
        writer = asyncio.create_task(self._writer(conn))
        self._tasks.add(writer)
        try:
            if (
                request.query.get("v", "10") != "10"
                or request.query.get("encoding", "json") != "json"
            ):
                self.close(conn, 4012, "the fake speaks gateway v10 with encoding=json only")
            else:
                self.send(conn, {"op": HELLO, "d": {"heartbeat_interval": self.fake.heartbeat_ms}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.close(conn, 4002, "binary frames are not supported")
        finally:
            closed_by_client = conn.close_code is None
            conn.open = False
            conn.close_code = conn.close_code or ws.close_code
            self.connections.pop(conn.id, None)
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
                # A client that says goodbye with 1000/1001 ends its session (Discord's rule).
                if closed_by_client and ws.close_code in (1000, 1001):
                    session.ended = True
            self._record("close", conn, None, d=conn.close_code)
            conn.queue.put_nowait(("stop", None, None))
        return ws

    async def _writer(self, conn: GatewayConnection) -> None:
        try:
            while True:
                kind, value, done = await conn.queue.get()
                try:
                    if kind == "stop":
                        return
                    if not conn.open or conn.ws.closed:
                        continue
                    if kind == "frame":
                        await conn.ws.send_str(json.dumps(value))
                        self._record("send", conn, value)
                    elif kind == "close":
                        code, reason = value
                        conn.close_code = code
                        await conn.ws.close(code=code, message=reason.encode())
                    elif kind == "abort":
                        conn.close_code = 1006
                        transport = conn.request.transport
                        if transport is not None:
                            transport.abort()
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("gateway connection %s: %s", conn.id, exc)
                finally:
                    if done is not None and not done.done():
                        done.set_result(None)
        finally:
            self._tasks.discard(asyncio.current_task())

    def send(self, conn: GatewayConnection, frame: JSON) -> None:
        """Queue ``frame`` (with Discord's four keys); it is recorded once actually written."""
        conn.queue.put_nowait(("frame", {"t": None, "s": None, "d": None, **frame}, None))

    def close(self, conn: GatewayConnection, code: int, reason: str = "") -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.queue.put_nowait(("close", (code, reason), done))
        return done

    def abort(self, conn: GatewayConnection) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.queue.put_nowait(("abort", None, done))
        return done

    def _record(
        self, direction: str, conn: GatewayConnection, frame: JSON | None, d: Any = None
    ) -> None:
        session = conn.session.id if conn.session else None
        if frame is None:
            self.frames.append(GatewayFrame(direction, conn.id, None, d=d, session_id=session))
        else:
            self.frames.append(
                GatewayFrame(
                    direction,
                    conn.id,
                    frame.get("op"),
                    frame.get("t"),
                    frame.get("s"),
                    frame.get("d"),
                    session,
                )
            )
        self.fake.notify()

    # ------------------------------------------------------------------ client payloads

    def _on_text(self, conn: GatewayConnection, text: str) -> None:
        try:
            frame = json.loads(text)
            op = frame["op"]
        except (ValueError, KeyError, TypeError):
            self.close(conn, 4002, "Error while decoding payload.")
            return
        data = frame.get("d")
        shown = dict(frame)
        if isinstance(data, dict) and "token" in data:
            shown["d"] = {**data, "token": "<redacted>"}
        self._record("recv", conn, shown)
        if op == HEARTBEAT:
            self.heartbeats += 1
            if self.ack_heartbeats:
                self.send(conn, {"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            self._identify(conn, data or {})
        elif op == RESUME:
            self._resume(conn, data or {})
        elif conn.session is None:
            self.close(conn, 4003, "Not authenticated.")
        elif op in (PRESENCE, VOICE_STATE):
            pass
        elif op == REQUEST_MEMBERS:
            self._members_chunk(conn, data or {})
        else:
            self.close(conn, 4001, "Unknown opcode.")

    def _identify(self, conn: GatewayConnection, data: JSON) -> None:
        fake = self.fake
        if conn.session is not None:
            self.close(conn, 4005, "Already authenticated.")
            return
        if data.get("token") != fake.token:
            self.close(conn, 4004, "Authentication failed.")
            return
        if self.identify_close_codes:
            self.close(conn, self.identify_close_codes.pop(0), "Injected by the test.")
            return
        shard: tuple[int, int] | None = None
        if data.get("shard") is not None:
            shard_id, count = (int(x) for x in data["shard"])
            if not 0 <= shard_id < count:
                self.close(conn, 4010, "Invalid shard.")
                return
            shard = (shard_id, count)
        intents = data.get("intents")
        if not isinstance(intents, int):
            self.close(conn, 4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~fake.privileged_intents:
            self.close(conn, 4014, "Disallowed intent(s).")
            return
        for old in self.sessions.values():
            if old.shard == shard:
                old.ended = True
        session = GatewaySession(secrets.token_hex(16), shard, intents)
        self.sessions[session.id] = session
        self._attach(conn, session)
        guilds = [g for g in fake.guilds.values() if session.sees_guild(g.id)]
        ready: JSON = {
            "v": 10,
            "user": fake.bot_user.private_payload(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": fake.resume_gateway_url,
            "application": {"id": str(fake.application_id), "flags": fake.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        self._emit(session, "READY", ready)
        for guild in guilds:
            self._emit(session, "GUILD_CREATE", guild.create_payload())

    def _resume(self, conn: GatewayConnection, data: JSON) -> None:
        if conn.session is not None:
            self.close(conn, 4005, "Already authenticated.")
            return
        if data.get("token") != self.fake.token:
            self.close(conn, 4004, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or session.ended:
            self.send(conn, {"op": INVALID_SESSION, "d": False})
            return
        old = session.connection
        if old is not None and old is not conn:
            self.close(old, 4000, "Session resumed elsewhere.")
        self._attach(conn, session)
        session.resumes += 1
        last = int(data.get("seq") or 0)
        for frame in session.log:
            if frame["s"] > last:
                self.send(conn, frame)
        self._emit(session, "RESUMED", {"_trace": ["fake-discord"]})

    def _members_chunk(self, conn: GatewayConnection, data: JSON) -> None:
        guild = self.fake.guilds.get(int(data.get("guild_id") or 0))
        if guild is None or conn.session is None:
            return
        payload: JSON = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in guild.members.values()],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            payload["nonce"] = data["nonce"]
        self._emit(conn.session, "GUILD_MEMBERS_CHUNK", payload)

    def _attach(self, conn: GatewayConnection, session: GatewaySession) -> None:
        conn.session = session
        session.connection = conn

    def _emit(self, session: GatewaySession, event: str, data: JSON) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.log.append(frame)
        conn = session.connection
        if conn is not None and conn.open:
            self.send(conn, frame)

    # ------------------------------------------------------------------ server side

    def dispatch(
        self, event: str, data: EventData, *, guild_id: int | None = None, intent: int = 0
    ) -> int:
        """Send ``event`` to every live session that would receive it; returns how many.

        ``data`` may be a function of the session (e.g. to blank message content for
        sessions without the message content intent); returning None skips that session.
        """
        count = 0
        for session in self.sessions.values():
            if session.ended or not session.sees_guild(guild_id):
                continue
            if intent and not session.intents & intent:
                continue
            payload = data(session) if callable(data) else data
            if payload is not None:
                self._emit(session, event, payload)
                count += 1
        return count

    def live_connections(self, shard_id: int | None = None) -> list[GatewayConnection]:
        return [
            conn
            for conn in self.connections.values()
            if conn.open
            and conn.session is not None
            and (shard_id is None or conn.session.shard_id == shard_id)
        ]

    def send_op(self, op: int, data: Any, shard_id: int | None = None) -> int:
        conns = self.live_connections(shard_id)
        for conn in conns:
            self.send(conn, {"op": op, "d": data})
        return len(conns)

    def hold(self) -> None:
        self._accepting.clear()

    def release(self) -> None:
        self._accepting.set()

    async def shutdown(self) -> None:
        self.release()
        done = [
            self.close(conn, 1001, "Fake Discord is stopping.")
            for conn in self.connections.values()
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*done), 2.0)
        for task in list(self._tasks):
            task.cancel()
