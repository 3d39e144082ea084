"""For actors that only touch the database."""

from __future__ import annotations

from typing import Any, Self

from ..actor import Posted
from ..config.model import ActorConfig
from ..errors import DiscordActorError


class PostingNotSupported(DiscordActorError, RuntimeError):
    """Raised when an actor on the ``none`` platform tries to post."""


class NoPlatform:
    name = "none"

    @classmethod
    def for_client(cls, client: Any) -> Self:
        """Posts nowhere, with or without a bot."""
        return cls()

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        raise PostingNotSupported(
            f"actor {actor.name!r} has platform 'none' and cannot post;"
            ' set platform = "console" or "discord" in its config'
        )
