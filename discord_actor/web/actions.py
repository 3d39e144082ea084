"""The operator actions both front ends offer (pause, resume, trigger), through the operations
layer, named after who asked over which way in (the JSON API or the dashboard).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..operations import iso
from .site import operations

ACTIONS = ("pause", "resume", "trigger")


async def perform(
    request: web.Request, name: str, action: str, reason: str | None, *, via: str
) -> dict[str, Any]:
    """Pause, resume or trigger through the operations layer; what happened, as JSON."""
    from ..db.records import Operator

    by = Operator("the holder of the HTTP token", f"{via} from {request.remote or 'unknown'}")
    ops = operations(request)
    if action == "pause":
        paused = await ops.pause(name, reason, by)
        return {
            "actor": name,
            "action": "pause",
            "paused": True,
            "reason": paused.reason,
            "was_paused": paused.was_paused,
        }
    if action == "resume":
        resumed = await ops.resume(name, by)
        return {
            "actor": name,
            "action": "resume",
            "paused": False,
            "was_paused": resumed.was_paused,
            "next_run": iso(resumed.next_run, resumed.timezone),
        }
    triggered = await ops.trigger(name, by)
    return {"actor": name, "action": "trigger", "already_pending": triggered.already_pending}
