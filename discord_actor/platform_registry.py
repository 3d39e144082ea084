"""The one table of platforms: a name in ``actors[].platform`` → the class that posts for it.

Entries are ``"module:Class"`` strings, imported when a runtime is built, so the configuration
(which validates names) does not load discord.py, and adding a platform is one module and one
line here.
"""

from __future__ import annotations

PLATFORMS: dict[str, str] = {
    "discord": "discord_actor.platforms.discord:DiscordPlatform",
    "console": "discord_actor.platforms.console:ConsolePlatform",
    "none": "discord_actor.platforms.none:NoPlatform",
}
