"""The dry run: print what would be posted."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, Self, TextIO

from ..actor import Posted
from ..config.model import ActorConfig


class ConsolePlatform:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @classmethod
    def for_client(cls, client: Any) -> Self:
        """Prints on standard output, with or without a bot."""
        return cls()

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        stream = self._stream or sys.stdout
        user_id = kwargs.pop("user_id", None)
        if user_id is not None:
            where, target = f" -> DM user {user_id}", {"user_id": user_id}
        else:
            where = f" -> #{actor.channel_id}" if actor.channel_id else ""
            target = {"channel_id": actor.channel_id}
        extras = "".join(f" [{key}]" for key in sorted(kwargs) if kwargs[key] is not None)
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        print(f"{stamp} [{actor.name}{where}] {content or ''}{extras}", file=stream, flush=True)
        return Posted(platform="console", **target, content=content)
