"""What every handler of the API and the dashboard reads: the runtime, its operations, the
operators' token and sessions, and the page templates (``Site``), kept on the application under
``SITE``. ``server`` makes one and serves it; the handlers depend on this module, not on the
server.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from ..config.model import is_loopback
from ..operations import Operations
from .access import HttpUnavailable, exposed_without_token, http_token
from .auth import Auth

if TYPE_CHECKING:
    from ..runtime import Runtime


class Site:
    """One runtime as the HTTP handlers see it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.operations = Operations(runtime.store, runtime.config)  # one for every request
        problem = exposed_without_token(self.config)
        if problem is not None:
            raise HttpUnavailable(problem)
        self.auth = Auth(
            http_token(self.config), reads_need_token=not is_loopback(self.config.http.host)
        )
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("discord_actor.web", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, request: web.Request, template: str, **values: Any) -> web.Response:
        html = self.templates.get_template(template).render(**values)
        return web.Response(text=html, content_type="text/html")


SITE: web.AppKey[Site] = web.AppKey("site")


def operations(request: web.Request) -> Operations:
    return request.app[SITE].operations


def unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="discord-actor"'},
    )
