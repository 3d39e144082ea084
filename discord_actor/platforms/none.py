"""For actors that only touch the database."""

from __future__ import annotations

from typing import Any

from ..actor import Posted
from ..config.model import ActorConfig
from . import PostingNotSupported


class NoPlatform:
    name = "none"

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        raise PostingNotSupported(
            f"actor {actor.name!r} has platform 'none' and cannot post;"
            ' set platform = "console" or "discord" in its config'
        )
