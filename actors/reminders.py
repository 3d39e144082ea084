"""Reminders: ``/remind``, ``/reminders list`` and ``/reminders cancel``.

Each reminder is a keyed schedule of this actor: key ``r:<interaction id>``, owner
``user:<id>``, the channel where it was asked, and the text and user id as payload. They live in
the database, so a restart loses none, and with two processes each is posted exactly once.
When one is due this actor posts ``<@user> text`` there, pinging that user and nobody else,
or (``/remind dm:True``) sends the text to the user's direct messages, falling back to the
channel when Discord refuses the DM (no shared server, DMs closed).

The actor has no ``[actors.schedule]``: it runs only by its keyed schedules. Its config entry
needs ``allowed_mentions = ["users"]`` (the post narrows that to the one user) and should set
``max_schedules_per_owner``, so that nobody can fill the table.
"""

from __future__ import annotations

import logging
import re
import textwrap
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import discord
from discord import app_commands

from discord_actor import (
    KeyedSchedule,
    Once,
    RunContext,
    ScheduleError,
    ScheduleLimitReached,
    actor,
    schedules_of,
)
from discord_actor.platforms.discord import DiscordRefused

ACTOR = "reminders"  # this actor's name in actor_server.toml
KEY_PREFIX = "r:"
MAX_TEXT_CHARS = 1000  # leaves room for the mention within Discord's 2000 characters
MAX_AHEAD = timedelta(days=366)
LISTED = 25  # reminders shown by /reminders list (and offered by autocomplete)
NOBODY = discord.AllowedMentions.none()  # the replies ping nobody, whatever the text says

log = logging.getLogger(__name__)


@actor(platform="discord")
async def reminders(ctx: RunContext) -> None:
    """Post a due reminder: ``<@user> text``, pinging that user only, or the text in the
    user's direct messages when they asked for that."""
    if ctx.key is None:  # a manual trigger: there is nothing to remind of
        ctx.log.info("reminders run only by their keyed schedules (/remind)")
        return
    user_id = int(ctx.payload["user_id"])
    text = ctx.payload["text"]
    if ctx.payload.get("dm"):
        try:
            await ctx.post(f"Reminder: {text}", user_id=user_id)
            return
        except DiscordRefused:  # DMs closed: remind them where they asked instead
            text = f"{text} (your direct messages are closed to me)"
    await ctx.post(
        f"<@{user_id}> {text}",
        allowed_mentions=discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False
        ),
    )


# -- reading "in:" -----------------------------------------------------------------------------


class BadTime(ValueError):
    """The ``in`` option cannot be read, or names a time that is not in the future."""


EXAMPLES = (
    "a duration (10m, 1h30m, 2d, 90s), a time of day (14:30) or a date-time (2026-03-01T09:00)"
)
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+\s*[wdhms]\s*)+", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+)\s*([wdhms])", re.IGNORECASE)
_TIME_OF_DAY = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_when(text: str, now: datetime, timezone: str | None = None) -> datetime:
    """When a reminder is due, after ``now`` (aware).

    ``text`` is a duration (``10m``, ``1h30m``, ``2d``, ``90s``; units w, d, h, m, s), a time
    of day (``14:30``: its next occurrence) or an ISO date-time (``2026-03-01T09:00``). A time of
    day, and a date-time without an offset, are read in ``timezone`` (an IANA name; default UTC).
    """
    value = text.strip()
    zone = _zone(timezone)
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _UNITS[unit.lower()] for n, unit in _DURATION_PART.findall(value))
        if seconds == 0:
            raise BadTime(f"{value!r} is no time at all: give {EXAMPLES}")
        if seconds > MAX_AHEAD.total_seconds():
            raise BadTime(f"{value!r} is too far ahead: at most {MAX_AHEAD.days} days")
        return now + timedelta(seconds=seconds)
    if match := _TIME_OF_DAY.fullmatch(value):
        wanted = time_of_day(int(match[1]), int(match[2]))
        today = now.astimezone(zone).date()
        due = datetime.combine(today, wanted, tzinfo=zone)
        if due <= now:
            due = datetime.combine(today + timedelta(days=1), wanted, tzinfo=zone)
        return due
    try:
        due = datetime.fromisoformat(value)
    except ValueError:
        raise BadTime(f"cannot read {value!r} as a time: give {EXAMPLES}") from None
    if due.tzinfo is None:
        due = due.replace(tzinfo=zone)
    if due <= now:
        raise BadTime(f"{value} is in the past (it is now {now.astimezone(zone):%Y-%m-%d %H:%M} "
                      f"{zone.key})")
    if due - now > MAX_AHEAD:
        raise BadTime(f"{value} is too far ahead: at most {MAX_AHEAD.days} days")
    return due


def _zone(name: str | None) -> ZoneInfo:
    if name is None or not name.strip():
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise BadTime(
            f"unknown time zone {name!r}: give an IANA name such as Europe/Berlin or"
            " America/New_York"
        ) from None


# -- the slash commands ------------------------------------------------------------------------


async def _reply(interaction: discord.Interaction, content: str) -> None:
    await interaction.response.send_message(content, ephemeral=True, allowed_mentions=NOBODY)


def _owner(interaction: discord.Interaction) -> str:
    return f"user:{interaction.user.id}"


def _when(reminder: KeyedSchedule) -> str:
    if reminder.next_run is None:
        return "now"
    stamp = int(reminder.next_run.timestamp())
    return f"<t:{stamp}:f> (<t:{stamp}:R>)"


@app_commands.command(name="remind", description="Remind me of something, here or in your DMs")
@app_commands.rename(when="in")
@app_commands.describe(
    when="10m, 1h30m, 2d, 90s; a time of day such as 14:30; or a date-time 2026-03-01T09:00",
    text="what to remind you of",
    timezone="for a time of day or a date-time: an IANA zone such as Europe/Berlin (default UTC)",
    dm="send it to your direct messages instead of this channel",
)
async def remind(
    interaction: discord.Interaction,
    when: str,
    text: str,
    timezone: str | None = None,
    dm: bool = False,
) -> None:
    text = text.strip()
    if not text:
        await _reply(interaction, "What should I remind you of? The text is empty.")
        return
    if len(text) > MAX_TEXT_CHARS:
        await _reply(interaction, f"That text is {len(text)} characters long; a reminder "
                     f"holds at most {MAX_TEXT_CHARS}.")
        return
    try:
        due = parse_when(when, datetime.now(UTC), timezone)
    except BadTime as e:
        await _reply(interaction, f"Sorry, {e}.")
        return
    key = f"{KEY_PREFIX}{interaction.id}"
    try:
        added = await schedules_of(interaction).add(
            ACTOR,
            key=key,
            schedule=Once(at=due),
            payload={"text": text, "user_id": str(interaction.user.id), "dm": dm},
            channel_id=interaction.channel_id,
            owner=_owner(interaction),
        )
    except ScheduleLimitReached as e:
        await _reply(interaction, f"You already have {e.limit} pending reminders, as many as "
                     "allowed: cancel one with `/reminders cancel` first.")
        return
    except ScheduleError as e:  # a problem of the bot's setup, not of the user's input
        log.error("/remind by user %s: %s", interaction.user.id, e)
        await _reply(interaction, "Could not set that reminder; the bot's log says why.")
        return
    where = "in your direct messages" if dm else "in this channel"
    await _reply(interaction, f"I will remind you {_when(added)} {where}: {text}\n"
                 f"(id `{key}`: `/reminders cancel id:{key}` cancels it)")


reminders_group = app_commands.Group(name="reminders", description="Your pending reminders")


@reminders_group.command(name="list", description="Your pending reminders, soonest first")
async def list_reminders(interaction: discord.Interaction) -> None:
    pending = await schedules_of(interaction).list(
        ACTOR, prefix=KEY_PREFIX, owner=_owner(interaction), limit=LISTED + 1
    )
    if not pending:
        await _reply(interaction, "You have no pending reminders. `/remind` sets one.")
        return
    lines = [
        f"`{r.key}` {_when(r)} {textwrap.shorten(r.payload.get('text', ''), 80)}"
        for r in pending[:LISTED]
    ]
    if len(pending) > LISTED:
        lines.append(f"... and more; these are the first {LISTED}")
    embed = discord.Embed(title="Your reminders", description="\n".join(lines))
    await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NOBODY)


@reminders_group.command(name="cancel", description="Cancel one of your pending reminders")
@app_commands.rename(key="id")
@app_commands.describe(key="the reminder's id, as /reminders list shows it (r:...)")
async def cancel_reminder(interaction: discord.Interaction, key: str) -> None:
    key = key.strip().strip("`")
    if not key.startswith(KEY_PREFIX):
        key = KEY_PREFIX + key
    schedules = schedules_of(interaction)
    found = await schedules.list(ACTOR, key=key)
    if not found:
        await _reply(interaction, f"There is no pending reminder `{key}`: it was sent or "
                     "cancelled already, or never existed. `/reminders list` shows yours.")
        return
    if found[0].owner != _owner(interaction):
        await _reply(interaction, f"Reminder `{key}` is not yours: you can cancel only your "
                     "own (`/reminders list` shows them).")
        return
    if not await schedules.remove(ACTOR, key):
        await _reply(interaction, f"Reminder `{key}` was just sent; nothing to cancel.")
        return
    text = textwrap.shorten(found[0].payload.get("text", ""), 80)
    await _reply(interaction, f"Cancelled reminder `{key}` ({text}), due {_when(found[0])}.")


@cancel_reminder.autocomplete("key")
async def _own_reminders(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    pending = await schedules_of(interaction).list(
        ACTOR, prefix=KEY_PREFIX, owner=_owner(interaction), limit=LISTED
    )
    choices = []
    for r in pending:
        when = "now" if r.next_run is None else f"{r.next_run.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        name = textwrap.shorten(f"{when}: {r.payload.get('text', '')}", 100)
        if current.lower() in f"{r.key} {name}".lower():
            choices.append(app_commands.Choice(name=name, value=r.key))
    return choices


#: registered by the runtime next to /actors
commands = [remind, reminders_group]
