"""Who may read and who may act over HTTP.

One secret, the operators' token (from the variable named by ``http.token_env``). A program sends
it as ``Authorization: Bearer <token>``; a person logs in to the dashboard with it once and gets
a session cookie, and every form they send carries the session's CSRF token. Tokens are compared
in constant time. On a loopback address, reading is open (only this machine can connect); on any
other, reading needs the token too. Acting (every ``POST``) always needs it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

SESSION_COOKIE = "discord_actor_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000  # the oldest are dropped beyond this


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: float  # time.monotonic()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, so that timing does not tell how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Auth:
    """The token, the dashboard's sessions, and the checks every handler asks for."""

    def __init__(self, token: str | None, *, reads_need_token: bool) -> None:
        self.token = token
        self.reads_need_token = reads_need_token
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    # -- sessions ------------------------------------------------------------------------------

    def login(self, given: str) -> tuple[str, Session] | None:
        """A new session when ``given`` is the token; None otherwise."""
        if self.token is None or not same_secret(given.strip(), self.token):
            return None
        session_id = secrets.token_urlsafe(32)
        expires = time.monotonic() + SESSION_SECONDS
        session = Session(csrf=secrets.token_urlsafe(32), expires=expires)
        self._sessions[session_id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def logout(self, request: web.Request) -> None:
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def session(self, request: web.Request) -> Session | None:
        """The request's dashboard session, if it has a live one."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._sessions[session_id]
            return None
        return session

    # -- checks --------------------------------------------------------------------------------

    def bearer(self, request: web.Request) -> bool:
        """Whether the request carries ``Authorization: Bearer <the token>``."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return (
            self.token is not None
            and scheme.lower() == "bearer"
            and same_secret(given.strip(), self.token)
        )

    def may_read(self, request: web.Request) -> bool:
        if not self.reads_need_token or self.bearer(request):
            return True
        return self.session(request) is not None

    def may_act(self, request: web.Request, csrf: str | None) -> bool:
        """A ``POST``: the Bearer token, or a session whose CSRF token came with the form."""
        if self.bearer(request):
            return True
        session = self.session(request)
        return session is not None and csrf is not None and same_secret(csrf, session.csrf)
