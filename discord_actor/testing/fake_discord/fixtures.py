"""pytest fixtures for the fake Discord.

``fake_discord``: a running ``FakeDiscord`` with discord.py pointed at it; the test fails at
teardown if any request reached the fake that it does not implement (they are listed).
``fake_discord_bot``: a ``commands.Bot`` (default intents plus members and message content)
connected to that fake and ready.

Register with ``pytest_plugins = ["discord_actor.testing.fake_discord.fixtures"]`` or by
importing the fixtures into a plugin module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from .server import FakeDiscord

if TYPE_CHECKING:
    from discord.ext import commands

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures below need it
    pytest_asyncio = None  # type: ignore[assignment]

#: small so every test exercises heartbeats, large enough not to load a 2-core machine
FIXTURE_HEARTBEAT_MS = 500
#: discord.py waits this long after the last GUILD_CREATE before it is ready
FIXTURE_GUILD_READY_TIMEOUT = 0.05


async def _fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(heartbeat_interval_ms=FIXTURE_HEARTBEAT_MS) as fake:
        with fake.patch_discord_py():
            yield fake
    if fake.unknown_requests:
        listed = "\n  ".join(str(r) for r in fake.unknown_requests)
        pytest.fail(
            f"fake Discord got request(s) it does not implement (answered 404):\n  {listed}",
            pytrace=False,
        )


async def _fake_discord_bot(fake_discord: FakeDiscord) -> AsyncIterator[commands.Bot]:
    import discord
    from discord.ext import commands

    intents = discord.Intents.default()
    intents.members = True
    intents.message_content = True
    bot = commands.Bot(
        command_prefix="!",
        intents=intents,
        help_command=None,
        guild_ready_timeout=FIXTURE_GUILD_READY_TIMEOUT,
    )
    async with fake_discord.connected(bot):
        yield bot


if pytest_asyncio is not None:
    fake_discord = pytest_asyncio.fixture(_fake_discord, name="fake_discord")
    fake_discord_bot = pytest_asyncio.fixture(_fake_discord_bot, name="fake_discord_bot")
else:  # pragma: no cover

    @pytest.fixture(name="fake_discord")
    def _fake_discord_unavailable() -> None:
        pytest.fail("the fake_discord fixture needs pytest-asyncio: pip install pytest-asyncio")

    @pytest.fixture(name="fake_discord_bot")
    def _fake_discord_bot_unavailable() -> None:
        pytest.fail("the fake_discord_bot fixture needs pytest-asyncio: pip install pytest-asyncio")
