"""Whether ``[http]`` may start as configured, and the operators' token: what ``discord-actor
run`` checks before anything starts. Kept apart from the server so that checking costs no
import of aiohttp's server and Jinja2 (13 MB) when ``[http]`` is off.
"""

from __future__ import annotations

import os

from ..config.model import Config, is_loopback
from ..errors import DiscordActorError

__all__ = ["AddressInUse", "HttpUnavailable", "exposed_without_token", "http_token"]


class HttpUnavailable(DiscordActorError):
    """The HTTP endpoint cannot start: its address is taken or invalid, or it would be open to
    the network without a token. The message says which key to change."""


class AddressInUse(HttpUnavailable):
    """Another process listens on ``[http]``'s address already (a second server of the same
    project, most likely): the runtime goes on without HTTP and says so."""


def http_token(config: Config) -> str | None:
    """The operators' token from the variable named by ``http.token_env`` (never logged)."""
    return (os.environ.get(config.http.token_env) or "").strip() or None


def exposed_without_token(config: Config) -> str | None:
    """Why ``[http]`` must not start as configured (a non-loopback host without a token)."""
    cfg = config.http
    if not cfg.enabled or is_loopback(cfg.host) or http_token(config) is not None:
        return None
    return (
        f"http.host = {cfg.host!r} in {config.path} listens beyond this machine, and "
        f"${cfg.token_env} (http.token_env) is not set: set it to a long random token (e.g. "
        "the output of 'openssl rand -hex 32'), which every request must then carry, or set "
        'http.host = "127.0.0.1"'
    )
