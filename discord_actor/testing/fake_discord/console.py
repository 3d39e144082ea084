"""What reaches a fake Discord, one printed line per thing, as a person reads it.

A listener of ``FakeWorld.listen``: the standalone fake and ``discord-actor sandbox`` show with
it what a bot posts, answers and registers, where Discord would show it to users::

    12:00:03 /remind -> (only you) I will remind you 12:00 (in 10 s) in this channel: stand up
    12:00:13 #general  bot: @you stand up  (pings @you)

Mentions show as ``@name``/``#name`` and Discord's ``<t:...>`` timestamps as the local time
(``:R`` as "in 10 s"), so that the line says what a user would see rather than the markup.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TextIO

from .models import FLAG_LOADING, JSON, FakeMessage, WorldEvent
from .world import FakeWorld

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_STAMP = re.compile(r"<t:(-?\d+)(?::([tTdDfFR]))?>")
_STYLES = {"t": "%H:%M", "T": "%H:%M:%S", "d": "%Y-%m-%d", "D": "%d %B %Y",
           "f": "%Y-%m-%d %H:%M", "F": "%A %Y-%m-%d %H:%M"}
INDENT = " " * 11  # continuation lines start under the text, past the time


def relative(seconds: float) -> str:
    """Discord's ``<t:...:R>`` in words: ``in 10 s``, ``5 min ago``."""
    size = math.ceil(abs(seconds))  # a stamp is whole seconds: "in 10 s" just after asking
    for unit, span in (("days", 86400), ("h", 3600), ("min", 60)):
        if size >= span * (2 if unit == "days" else 1):
            amount = f"{size // span} {unit}"
            break
    else:
        amount = f"{size} s"
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"


class Console:
    """Prints each ``WorldEvent`` of ``world`` on ``out`` (default: standard output)."""

    def __init__(
        self, world: FakeWorld, out: TextIO | None = None, *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.world = world
        self.out = out
        self.clock = clock
        self._loading: set[int] = set()  # deferred answers: shown when edited

    # -- printing ----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """One line (or several, indented) after the local time."""
        stamp = datetime.fromtimestamp(self.clock()).strftime("%H:%M:%S")
        body = text.replace("\n", "\n" + INDENT)
        print(f"{stamp}  {body}", file=self.out or sys.stdout, flush=True)

    def show(self, event: WorldEvent) -> None:
        """The ``FakeWorld.listen`` callback."""
        message = event.message
        if event.kind == "commands":
            self.say(self._registered(event.scope, event.commands))
        elif message is None:
            return
        elif event.kind == "message" and message.flags & FLAG_LOADING:
            self._loading.add(message.id)  # "the bot is thinking": its edit is the answer
        elif event.kind == "message" or message.id in self._loading:
            self._loading.discard(message.id)
            self.say(self.describe(message))
        elif event.kind == "edit":
            self.say(f"{self.describe(message)}  (edited)")
        elif event.kind == "delete":
            self.say(f"{self._where(message)}  deleted: {self.render(message.content)}")

    # -- wording -----------------------------------------------------------------------------

    def describe(self, message: FakeMessage) -> str:
        """A message as its readers see it: where, who (or which command it answers), what,
        and whom it pings."""
        interaction = self.world.interaction_by_id.get(message.interaction_id or 0)
        if interaction is not None:
            seen_by = (f"(only {interaction.user.username})" if message.ephemeral
                       else f"{self._channel(message.channel_id)}:")
            head = f"/{interaction.name} -> {seen_by}"
        else:
            author = "bot" if message.author.id == self.world.bot_user.id else (
                message.author.username)
            head = f"{self._where(message)}  {author}:"
        parts = [head, self.render(message.content)] if message.content else [head]
        text = " ".join(parts)
        pings = self._pings(message)
        if pings and not message.ephemeral:
            text += f"  (pings {pings})"
        for embed in message.embeds:
            text += "\n" + self._embed(embed)
        if message.attachments:
            text += f"\n(attached: {', '.join(message.attachment_names)})"
        return text

    def render(self, content: str) -> str:
        """Mentions as names and ``<t:...>`` timestamps as local times."""
        content = _USER.sub(lambda m: "@" + self._user(int(m[1])), content)
        content = _ROLE.sub(lambda m: "@" + self._role(int(m[1])), content)
        content = _CHANNEL.sub(lambda m: self._channel(int(m[1])), content)
        return _STAMP.sub(self._stamp, content)

    def _stamp(self, match: re.Match[str]) -> str:
        moment, style = int(match[1]), match[2] or "f"
        if style == "R":
            return relative(moment - self.clock())
        return datetime.fromtimestamp(moment).strftime(_STYLES[style])

    def _embed(self, embed: JSON) -> str:
        lines = [f"[{embed['title']}]"] if embed.get("title") else []
        if embed.get("description"):
            lines.append(self.render(str(embed["description"])))
        for field in embed.get("fields") or []:
            lines.append(f"{field.get('name')}: {self.render(str(field.get('value')))}")
        return "\n".join(lines) or "[embed]"

    def _registered(self, scope: int | None, commands: tuple[JSON, ...]) -> str:
        where = "globally" if scope is None else f"for guild {scope}"
        names = ", ".join(f"/{c['name']}" for c in commands) or "none"
        return f"bot registered {len(commands)} command(s) {where}: {names}"

    def _pings(self, message: FakeMessage) -> str:
        names = ["@" + self._user(u) for u in message.mention_user_ids]
        names += ["@" + self._role(r) for r in message.mention_role_ids]
        if message.mention_everyone:
            names.append("@everyone")
        return ", ".join(names)

    def _where(self, message: FakeMessage) -> str:
        return self._channel(message.channel_id)

    def _user(self, user_id: int) -> str:
        user = self.world.users.get(user_id)
        return user.username if user is not None else str(user_id)

    def _role(self, role_id: int) -> str:
        for guild in self.world.guilds.values():
            if role_id in guild.roles:
                return guild.roles[role_id].name.lstrip("@")
        return str(role_id)

    def _channel(self, channel_id: int) -> str:
        channel = self.world.channels.get(channel_id)
        if channel is not None and channel.is_dm:
            return f"DM @{channel.name}"
        return f"#{channel.name}" if channel is not None else f"#{channel_id}"
