"""Where an actor's posts go: Discord, the console (dry run), or nowhere."""

from __future__ import annotations

from typing import Any, Protocol

from ..actor import Posted
from ..config.model import ActorConfig


class Platform(Protocol):
    name: str

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        """Deliver one post for ``actor`` and describe what was delivered."""
        ...


class PostingNotSupported(RuntimeError):
    """Raised when an actor on the ``none`` platform tries to post."""
