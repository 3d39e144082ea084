"""The one table of platforms: a name in ``actors[].platform`` → the class that posts for it.

Entries are ``"module:Class"`` strings, imported when a runtime is built, so the configuration
(which validates names) does not load discord.py, and adding a platform is one module and one
line here. The class builds itself for the bot with a ``for_client(client)`` classmethod
(``discord_actor.platforms.PlatformClass``).
"""

from __future__ import annotations

PLATFORMS: dict[str, str] = {
    "discord": "discord_actor.platforms.discord:DiscordPlatform",
    "console": "discord_actor.platforms.console:ConsolePlatform",
    "none": "discord_actor.platforms.none:NoPlatform",
}

STAND_INS: dict[str, str] = {"discord": "console"}
"""Without a bot (no token, a dry run), the platform that posts for one that needs it."""
