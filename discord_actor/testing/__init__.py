"""Test helpers for discord-actor and for projects that write actors.

The pytest plugin (``discord_actor.testing.plugin``) is registered through the ``pytest11``
entry point, so its fixtures are available without any import: ``database``, ``run_actor``,
``fake_clock``, ``fake_discord``, ``fake_discord_bot`` and more (``pytest --fixtures``).

What a test needs besides them is importable from here::

    from discord_actor.testing import ActorHarness, RunRecord, ScheduleConfig, actor_config

Names are imported on first use, so that loading the plugin costs a test suite nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from discord_actor.clock import FakeClock
    from discord_actor.config.model import ActorConfig, RetryPolicy
    from discord_actor.db import Database
    from discord_actor.platforms.discord import DiscordPlatform
    from discord_actor.schedules.base import ScheduleConfig
    from discord_actor.testing.fake_discord.server import FakeDiscord
    from discord_actor.testing.harness import (
        ActorHarness,
        ActorRunner,
        RecordingPlatform,
        RunRecord,
        actor_config,
        make_config,
        run_actor_once,
    )

__all__ = [
    "ActorConfig",
    "ActorHarness",
    "ActorRunner",
    "Database",
    "DiscordPlatform",
    "FakeClock",
    "FakeDiscord",
    "RecordingPlatform",
    "RetryPolicy",
    "RunRecord",
    "ScheduleConfig",
    "actor_config",
    "make_config",
    "run_actor_once",
]

_WHERE = {
    "FakeClock": "discord_actor.clock",
    "ActorConfig": "discord_actor.config.model",
    "RetryPolicy": "discord_actor.config.model",
    "ScheduleConfig": "discord_actor.schedules.base",
    "Database": "discord_actor.db",
    "DiscordPlatform": "discord_actor.platforms.discord",
    "FakeDiscord": "discord_actor.testing.fake_discord.server",
    "ActorHarness": "discord_actor.testing.harness",
    "ActorRunner": "discord_actor.testing.harness",
    "RecordingPlatform": "discord_actor.testing.harness",
    "RunRecord": "discord_actor.testing.harness",
    "actor_config": "discord_actor.testing.harness",
    "make_config": "discord_actor.testing.harness",
    "run_actor_once": "discord_actor.testing.harness",
}


__getattr__, __dir__ = lazy_exports(globals(), _WHERE)
