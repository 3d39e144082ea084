"""Where an actor's posts go: Discord, the console (dry run), or nowhere.

Which class serves which ``actors[].platform`` name is the one table in
``discord_actor.platform_registry``; ``build_platforms`` makes a runtime's platforms from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..actor import Posted
from ..config.model import ActorConfig
from ..platform_registry import PLATFORMS, STAND_INS
from .none import PostingNotSupported

if TYPE_CHECKING:
    from ..db.pacing import RateBudgets

__all__ = [
    "PacedPlatform",
    "Platform",
    "PlatformClass",
    "PostingNotSupported",
    "build_platforms",
    "every_platform",
]


class Platform(Protocol):
    """Posts for the actors of one ``platform`` name. It may also have a ``close()``, called
    when the runtime stops: posts still waiting (for the Discord gateway) give up."""

    name: str

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        """Deliver one post for ``actor`` and describe what was delivered."""
        ...


@runtime_checkable
class PacedPlatform(Platform, Protocol):
    """A platform whose posts wait for the service's own limits (Discord's). The runtime
    shares its budget with the bot's other processes, lets a waiting post's run give up its
    place of ``max_concurrent_runs`` (``parked``; ``on_parked`` wakes the scheduler) and
    reports the queue and the 429s."""

    parked: int  # posts waiting for the limits now
    on_parked: Callable[[], None] | None

    @property
    def rate_limited(self) -> dict[str, int]:
        """The service's 429s to this process so far, by scope."""
        ...

    def share_budget(self, budgets: RateBudgets, requests_per_second: int) -> None:
        """Pace together with every process of the bot, through ``budgets``."""
        ...


class PlatformClass(Protocol):
    """What a registry line names: a class (this is its classmethod) that builds its platform
    for the bot's client."""

    def for_client(self, client: Any, /) -> Platform:
        """The platform posting through ``client`` (the bot's ``discord.Client``, or None)."""
        ...


def _class_of(name: str) -> PlatformClass:
    """The class registered for ``name`` (imported now: discord.py only when asked for)."""
    module, _, attr = PLATFORMS[name].partition(":")
    cls: PlatformClass = getattr(importlib.import_module(module), attr)
    return cls


def build_platforms(client: Any = None) -> dict[str, Platform]:
    """One platform per registered name, posting through ``client``.

    Without a client (no token, a dry run) a name with a stand-in posts through it (discord
    actors print on the console) and its own class is not even imported."""
    stand_ins = STAND_INS if client is None else {}
    built = {n: _class_of(n).for_client(client) for n in PLATFORMS if n not in stand_ins}
    return built | {name: built[stand_in] for name, stand_in in stand_ins.items()}


def every_platform(platform: Platform) -> dict[str, Platform]:
    """``platform`` under every registered name: tests and benchmarks that keep or drop every
    post, whatever platform the actor has."""
    return dict.fromkeys(PLATFORMS, platform)
