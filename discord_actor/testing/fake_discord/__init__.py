"""A wire-level fake of Discord for tests: REST API v10 and gateway v10 on 127.0.0.1.

The real discord.py client talks to it over loopback, so tests exercise the same HTTP requests,
rate-limit handling, websocket sessions, resumes and interaction callbacks as production::

    async with FakeDiscord(heartbeat_interval_ms=500) as fake:
        bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(),
                           guild_ready_timeout=0.05)
        async with fake.connected(bot):
            await bot.get_channel(fake.channel.id).send("hello")
            message = await fake.wait_for_message(channel_id=fake.channel.id)

pytest fixtures (``fake_discord``, ``fake_discord_bot``) live in ``.fixtures``; run it
standalone with ``python -m discord_actor.testing.fake_discord`` (it prints what it receives,
through ``Console``, a listener of ``fake.listen``).
"""

from .console import Console
from .errors import FakeDiscordError
from .limits import DiscordLimits
from .models import (
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    Fault,
    GatewayFrame,
    RecordedRequest,
    WorldEvent,
)
from .server import FakeDiscord, point_discord_py_at

__all__ = [
    "Console",
    "DiscordLimits",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "Fault",
    "GatewayFrame",
    "RecordedRequest",
    "WorldEvent",
    "point_discord_py_at",
]
