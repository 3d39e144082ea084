"""The public plugin API: ``Actor``, the ``@actor`` decorator and ``RunContext``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

if TYPE_CHECKING:
    import asyncpg
    import discord

    from .config.model import ActorConfig
    from .enums import Trigger
    from .keyed import Schedules


class Actor:
    """Base class for class-form actors.

    Subclass it, implement ``run``; ``setup`` and ``teardown`` run once per process around
    all runs. ``platform`` is the default when the config does not say.
    """

    platform: ClassVar[str] = "console"

    def __init__(self, config: ActorConfig) -> None:
        self.config = config
        self.name = config.name
        self.settings: Mapping[str, Any] = config.settings

    async def setup(self) -> None:
        """Called once per process before the first run."""

    async def run(self, ctx: RunContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run(ctx)")

    async def teardown(self) -> None:
        """Called once per process at shutdown."""


ActorFunction = Callable[["RunContext"], Awaitable[None]]
F = TypeVar("F", bound=ActorFunction)


@dataclass(frozen=True)
class FunctionActorSpec:
    """What ``@actor`` attaches to a function."""

    platform: str


class FunctionActor(Actor):
    """Adapts an ``@actor`` function to the class form."""

    function: ActorFunction

    async def run(self, ctx: RunContext) -> None:
        await type(self).function(ctx)


@overload
def actor(function: F, /) -> F: ...
@overload
def actor(*, platform: str = "console") -> Callable[[F], F]: ...


def actor(function: F | None = None, /, *, platform: str = "console") -> F | Callable[[F], F]:
    """Mark an ``async def run(ctx)`` function as an actor; the function stays callable."""

    def mark(f: F) -> F:
        f.__discord_actor__ = FunctionActorSpec(platform=platform)  # type: ignore[attr-defined]
        return f

    return mark(function) if function is not None else mark


class Posted(dict[str, Any]):
    """What a platform reports about one post (stored on the run record)."""


class RunContext:
    """Everything one run of an actor may use. Created by the runtime, one per run."""

    def __init__(
        self,
        *,
        run_id: int,
        actor: str,
        scheduled_for: datetime,
        attempt: int,
        trigger: Trigger,
        settings: Mapping[str, Any],
        state: dict[str, Any],
        logger: logging.Logger,
        connect: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
        post: Callable[..., Awaitable[Posted]],
        checkpoint: Callable[[dict[str, Any]], Awaitable[None]],
        client: discord.Client | None = None,
        key: str | None = None,
        payload: Mapping[str, Any] | None = None,
        schedules: Schedules | None = None,
        lateness: timedelta = timedelta(0),
    ) -> None:
        self.run_id = run_id
        self.actor = actor
        self.scheduled_for = scheduled_for
        self.attempt = attempt
        self.trigger = trigger  # why it runs; a str too ("schedule", "manual", "retry"...)
        self.settings = settings
        self.state = state
        self.log = logging.LoggerAdapter(logger, {"actor": actor, "run_id": run_id})
        self.client = client
        # A run of a keyed schedule (created at run time): its key and payload. None and {}
        # for a run of the actor's configured schedule or a manual trigger.
        self.key = key
        self.payload: dict[str, Any] = dict(payload) if payload else {}
        self._schedules = schedules
        #: how late this run started: its start minus its slot (a reminder can say "sorry,
        #: 3 minutes late"); a retry is late by its backoff too
        self.lateness = lateness
        self.posted: list[Posted] = []
        self._connect = connect
        self._post = post
        self._checkpoint = checkpoint

    @asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, within this actor's ``max_connections`` share."""
        async with self._connect() as conn:
            yield conn

    async def post(self, content: str | None = None, **kwargs: Any) -> Posted:
        """Send to the actor's channel (Discord), or print it (console); returns what was
        sent (on Discord its ``message_id``), with when it was due, queued and delivered."""
        posted = await self._post(content, **kwargs)
        self.posted.append(posted)
        return posted

    @property
    def schedules(self) -> Schedules:
        """The runtime's keyed schedules: add, remove and list them from inside a run."""
        if self._schedules is None:
            raise RuntimeError("ctx.schedules is not available in this context")
        return self._schedules

    async def checkpoint(self) -> None:
        """Save ``state`` now, so it survives even if this run later fails."""
        await self._checkpoint(self.state)
