"""Where an actor's posts go: Discord, the console (dry run), or nowhere."""

from __future__ import annotations

from typing import Any, Protocol

from ..actor import Posted
from ..config import ActorConfig
from .none import PostingNotSupported

__all__ = ["Platform", "PostingNotSupported"]


class Platform(Protocol):
    name: str

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        """Deliver one post for ``actor`` and describe what was delivered."""
        ...
