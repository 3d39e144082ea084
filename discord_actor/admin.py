"""Operating actors from Discord: the ``/actors`` slash commands, syncing them, and alerts.

Who may use ``/actors``: users listed in ``discord.owner_ids`` and members with a role in
``discord.admin_role_ids``. Discord itself offers the group only to administrators
(``default_member_permissions``), which a server's admins can widen in Server Settings ->
Integrations; the check here is what decides. Anyone else gets an ephemeral refusal, nothing
changes, and the attempt is logged on ``discord_actor.admin``.

Every answer is ephemeral: operator output is for the operator, not for the channel where the
command happened to be typed. Nothing here pings anyone (``AllowedMentions.none()``).

``DiscordAlerts`` is the runtime's alert sink for ``discord.alert_channel_id``: it posts when the
circuit breaker pauses an actor and on a failure after a run of failures.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from .db.records import Operator
from .errors import OperationError, UnknownActor
from .operations import (
    ActorDisabled,
    ActorPaused,
    ActorRemoved,
    NotStarted,
    Operations,
    one_line,
    shorten,
    table,
)

if TYPE_CHECKING:
    from .alerts import Alert
    from .config.model import Config, DiscordConfig
    from .db.store import Store

log = logging.getLogger("discord_actor.admin")

NO_MENTIONS = discord.AllowedMentions.none()

#: Discord's limits that these answers have to fit in
EMBED_DESCRIPTION_LIMIT = 4096
AUTOCOMPLETE_CHOICES = 25
CHOICE_NAME_LIMIT = 100
MESSAGE_LIMIT = 2000

#: Discord wants the first answer to an interaction within 3 s; work that takes longer than
#: this is answered "thinking..." first and the result edited in when it is ready.
REPLY_WITHIN_SECONDS = 2.0
#: give up on a command (database unreachable, pool exhausted) after this long
COMMAND_TIMEOUT_SECONDS = 30.0
#: autocomplete answers must be quick; without the database only configured names are offered
AUTOCOMPLETE_TIMEOUT_SECONDS = 2.0
#: how long an alert waits for the bot to connect before it gives up (logged)
READY_TIMEOUT_SECONDS = 30.0

REFUSAL = (
    "You may not use /actors. The bot's operator can allow you by adding your user id to "
    "`discord.owner_ids`, or one of your roles to `discord.admin_role_ids`, in actor_server.toml."
)

_ERROR_LINE = 300  # characters of an error message shown per run in /actors history
_KEY_WIDTH = 24  # characters of a keyed schedule's key in /actors history


# --------------------------------------------------------------------------------------------
# Who may operate actors


def is_operator(user: discord.abc.User, config: DiscordConfig) -> bool:
    """Whether ``user`` is in ``owner_ids`` or (as a member) has a role in ``admin_role_ids``."""
    if user.id in config.owner_ids:
        return True
    if not config.admin_role_ids or not isinstance(user, discord.Member):
        return False
    # The interaction carries the member's role ids; Member.roles only lists the roles that are
    # in the bot's cache, which misses them in a guild the bot has not cached.
    role_ids = {role.id for role in user.roles} | set(getattr(user, "_roles", ()))
    return not role_ids.isdisjoint(config.admin_role_ids)


def _who(user: discord.abc.User) -> str:
    return f"{user} (id {user.id})"


def _operator(interaction: discord.Interaction) -> Operator:
    """Who uses /actors, and where: written into paused reasons and logged by every server."""
    where = f"Discord, guild {interaction.guild_id} channel {interaction.channel_id}"
    return Operator(_who(interaction.user), where)


# --------------------------------------------------------------------------------------------
# The /actors group


@dataclass(frozen=True)
class Reply:
    """What a command answers: text, an embed, and a text file when the embed is too small."""

    content: str | None = None
    embed: discord.Embed | None = None
    attachment: tuple[str, str] | None = None  # (file name, text)

    def send_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``send_message`` / ``edit_original_response``."""
        kwargs: dict[str, Any] = {"content": self.content, "allowed_mentions": NO_MENTIONS}
        if self.embed is not None:
            kwargs["embed"] = self.embed
        if self.attachment is not None:
            name, text = self.attachment
            kwargs["files"] = [discord.File(io.BytesIO(text.encode()), filename=name)]
        return kwargs


class ActorsCommands(app_commands.Group, name="actors", description="Operate the scheduled actors"):
    """``/actors list | history | run | pause | resume``, for operators only (see module doc)."""

    def __init__(self, store: Store, config: Config) -> None:
        super().__init__(
            guild_only=True,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
            default_permissions=discord.Permissions(administrator=True),
        )
        self.store = store
        self.config = config
        self.reply_within = REPLY_WITHIN_SECONDS
        self.command_timeout = COMMAND_TIMEOUT_SECONDS
        if not config.discord.owner_ids and not config.discord.admin_role_ids:
            log.warning(
                "nobody may use /actors: discord.owner_ids and discord.admin_role_ids are both "
                "empty in %s",
                config.path,
            )

    @property
    def operations(self) -> Operations:
        """What the commands do, on the current store (tests swap it)."""
        return Operations(self.store, self.config)

    # -- the commands ----------------------------------------------------------------------

    @app_commands.command(
        name="list", description="Every actor: state, next run, last status, keyed schedules"
    )
    async def list_actors(self, interaction: discord.Interaction) -> None:
        await self._answer(interaction, "list", self._list)

    @app_commands.command(name="history", description="An actor's last runs")
    @app_commands.describe(actor="The actor", limit="How many runs (default 10)")
    async def history(
        self,
        interaction: discord.Interaction,
        actor: str,
        limit: app_commands.Range[int, 1, 100] = 10,
    ) -> None:
        await self._answer(interaction, "history", lambda: self._history(actor, limit))

    @app_commands.command(name="run", description="Run an actor now (a manual trigger)")
    @app_commands.describe(actor="The actor to run")
    async def run(self, interaction: discord.Interaction, actor: str) -> None:
        await self._answer(interaction, "run", lambda: self._run(interaction, actor))

    @app_commands.command(name="pause", description="Pause an actor until it is resumed")
    @app_commands.describe(actor="The actor to pause", reason="Shown by /actors list")
    async def pause(
        self,
        interaction: discord.Interaction,
        actor: str,
        reason: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        await self._answer(
            interaction, "pause", lambda: self._pause(interaction, actor, reason)
        )

    @app_commands.command(
        name="resume", description="Resume a paused actor and reset its failure count"
    )
    @app_commands.describe(actor="The actor to resume")
    async def resume(self, interaction: discord.Interaction, actor: str) -> None:
        await self._answer(interaction, "resume", lambda: self._resume(interaction, actor))

    @history.autocomplete("actor")
    @run.autocomplete("actor")
    @pause.autocomplete("actor")
    @resume.autocomplete("actor")
    async def actor_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Actor names containing what was typed (prefix matches first); none for outsiders."""
        if not is_operator(interaction.user, self.config.discord):
            return []
        paused: set[str] = set()
        names = {a.name for a in self.config.actors}
        try:
            async with asyncio.timeout(AUTOCOMPLETE_TIMEOUT_SECONDS):
                actors = (await self.operations.status()).actors
        except Exception as e:  # offer the configured names rather than nothing
            log.debug("autocomplete without the database: %s: %s", type(e).__name__, e)
        else:
            names |= {a.actor for a in actors}
            paused = {a.actor for a in actors if a.paused}
        typed = current.strip().lower()
        ordered = sorted(names, key=lambda n: (not n.lower().startswith(typed), n.lower()))
        matches = [n for n in ordered if typed in n.lower()][:AUTOCOMPLETE_CHOICES]
        return [
            app_commands.Choice(name=f"{n} (paused)" if n in paused else n, value=n)
            for n in matches
        ]

    # -- answering -----------------------------------------------------------------------

    async def _answer(
        self,
        interaction: discord.Interaction,
        command: str,
        work: Callable[[], Awaitable[Reply]],
    ) -> None:
        """Check who asks, do the work, answer ephemerally (deferring if the work is slow)."""
        if not is_operator(interaction.user, self.config.discord):
            log.warning(
                "refused /actors %s from user %s in guild %s: not in discord.owner_ids and no "
                "role in discord.admin_role_ids",
                command,
                _who(interaction.user),
                interaction.guild_id,
            )
            await self._send(interaction, command, Reply(REFUSAL))
            return
        task = asyncio.ensure_future(work())
        try:
            done, _ = await asyncio.wait({task}, timeout=self.reply_within)
            if not done:
                try:
                    await interaction.response.defer(ephemeral=True, thinking=True)
                except discord.HTTPException as e:
                    log.warning("could not defer /actors %s: %s", command, e)
            async with asyncio.timeout(self.command_timeout):
                reply = await asyncio.shield(task)
        except OperationError as e:
            reply = refusal(e)
        except Exception as e:
            if isinstance(e, TimeoutError) and not task.done():  # our deadline, not the work's
                problem = f"did not finish within {self.command_timeout:g} s (is the database up?)"
            else:
                problem = f"failed: {type(e).__name__}: {e}"
            log.warning("/actors %s from user %s %s", command, _who(interaction.user), problem)
            reply = Reply(shorten(f"/actors {command} {problem}", MESSAGE_LIMIT))
        finally:
            task.cancel()  # only if we gave up on it (timeout, shutdown)
        await self._send(interaction, command, reply)

    async def _send(self, interaction: discord.Interaction, command: str, reply: Reply) -> None:
        try:
            if interaction.response.is_done():
                kwargs = reply.send_kwargs()
                kwargs["attachments"] = kwargs.pop("files", [])
                await interaction.edit_original_response(**kwargs)
            else:
                await interaction.response.send_message(ephemeral=True, **reply.send_kwargs())
        except discord.HTTPException as e:
            log.warning("could not answer /actors %s: %s", command, e)

    # -- what the commands do ------------------------------------------------------------

    async def _list(self) -> Reply:
        actors = (await self.operations.status()).actors
        if not actors:
            return Reply("No actors are configured.")
        rows, notes = [], []
        paused = failing = 0
        for a in actors:
            rows.append(
                [a.actor, a.state, _utc(a.next_run), a.last_status or "-", str(a.keyed),
                 str(a.consecutive_failures)]
            )
            if a.broken:
                notes.append(f"{a.actor} broken: setup() failed: {one_line(a.setup_error or '')}")
            if a.paused:
                paused += 1
                notes.append(f"{a.actor} paused: {one_line(a.paused_reason or '')}")
            failing += a.consecutive_failures > 0
        lines = table(["ACTOR", "STATE", "NEXT RUN (UTC)", "LAST", "KEYED", "FAILS"], rows)
        if notes:
            lines += ["", *notes]
        title = f"{len(actors)} actor{'s' if len(actors) != 1 else ''}"
        title += f" · {paused} paused" if paused else ""
        title += f" · {failing} failing" if failing else ""
        description, attachment = _fit_block(lines, "actors.txt")
        embed = discord.Embed(title=title, description=description)
        if paused:
            embed.set_footer(text="Resume a paused actor with /actors resume NAME")
        return Reply(embed=embed, attachment=attachment)

    async def _history(self, actor: str, limit: int) -> Reply:
        runs = await self.operations.history(actor.strip(), limit=limit)
        name = actor.strip()
        if not runs:
            return Reply(f"No runs of `{name}` are recorded yet.")
        # A KEY column when some of these runs were for keyed schedules (blank: the configured
        # schedule's), so that an actor without any keeps its table narrow.
        keyed = any(r.key is not None for r in runs)
        rows, errors = [], []
        for r in runs:
            rows.append(
                [
                    str(r.id),
                    *([shorten(one_line(r.key or ""), _KEY_WIDTH)] if keyed else []),
                    _utc(r.started_at, seconds=True),
                    r.status,
                    r.trigger,
                    str(r.attempt),
                    _duration(r.duration_ms),
                ]
            )
            error = r.error or r.note
            if error:
                errors.append(f"run {r.id}: {shorten(one_line(error), _ERROR_LINE)}")
        headers = ["RUN", *(["KEY"] if keyed else []), "STARTED (UTC)", "STATUS", "TRIGGER",
                   "TRY", "DURATION"]
        lines = table(headers, rows)
        if errors:
            lines += ["", *errors]
        title = f"{name}: last {len(runs)} run{'s' if len(runs) != 1 else ''}"
        description, attachment = _fit_block(lines, f"{name}-history.txt")
        return Reply(embed=discord.Embed(title=title, description=description),
                     attachment=attachment)

    async def _run(self, interaction: discord.Interaction, actor: str) -> Reply:
        name = actor.strip()
        # Every running server logs who triggered it (from the notification).
        result = await self.operations.trigger(name, _operator(interaction))
        if result.already_pending:
            return Reply(f"`{name}` was already triggered and has not started yet.")
        return Reply(
            f"Triggered `{name}`: a running server starts it within a second "
            "(or when one next starts); `/actors history` shows the outcome."
        )

    async def _pause(
        self, interaction: discord.Interaction, actor: str, reason: str | None
    ) -> Reply:
        name = actor.strip()
        result = await self.operations.pause(name, reason, _operator(interaction))
        before = f" (it was already paused: {result.previous_reason})" if result.was_paused else ""
        return Reply(
            f"Paused `{name}`: {result.reason}{before}. Resume it with `/actors resume {name}`."
        )

    async def _resume(self, interaction: discord.Interaction, actor: str) -> Reply:
        name = actor.strip()
        result = await self.operations.resume(name, _operator(interaction))
        if result.was_paused and result.next_run is not None:
            return Reply(
                f"Resumed `{name}`; its failure count is reset. Its slot passed while it was "
                f"paused, so it runs next at {_utc(result.next_run)} UTC."
            )
        if result.was_paused:
            return Reply(f"Resumed `{name}`; its failure count is reset.")
        return Reply(f"`{name}` was not paused; its failure count is reset.")


def refusal(error: OperationError) -> Reply:
    """What /actors answers when the operations layer refuses."""
    if isinstance(error, UnknownActor):
        hint = f"; did you mean `{error.suggestion}`?" if error.suggestion else ""
        shown = one_line(error.actor).replace("`", "'")
        return Reply(shorten(f"Unknown actor `{shown}`{hint} (`/actors list` shows them all)",
                             MESSAGE_LIMIT))
    if isinstance(error, NotStarted):
        return Reply(
            f"`{error.actor}` has no task in the database yet: it gets one when a server that "
            "runs it starts."
        )
    if isinstance(error, ActorRemoved):
        return Reply(
            f"`{error.actor}` is no longer in the configuration; its history is kept "
            f"(`/actors history {error.actor}`)."
        )
    if isinstance(error, ActorPaused):
        return Reply(
            f"`{error.actor}` is paused ({error.reason}); nothing was triggered. "
            f"Resume it first with `/actors resume {error.actor}`."
        )
    if isinstance(error, ActorDisabled):
        return Reply(
            f"`{error.actor}` is disabled (`enabled = false` in the configuration): "
            "no server runs it."
        )
    return Reply(shorten(str(error), MESSAGE_LIMIT))


# --------------------------------------------------------------------------------------------
# Syncing


async def sync_commands(tree: app_commands.CommandTree[Any], config: Config) -> None:
    """Register the tree's commands with Discord.

    To each of ``discord.command_guild_ids`` when given (global commands are copied to each
    guild first; guild commands appear at once), else globally (Discord may take a while to
    show changes everywhere). A guild that refuses (the bot is not in it, or was invited
    without the ``applications.commands`` scope) is logged and skipped: the actors run anyway.
    """
    guild_ids = config.discord.command_guild_ids
    if not guild_ids:
        try:
            synced = await tree.sync()
        except discord.HTTPException as e:
            log.warning("could not register the slash commands globally: %s", e)
            return
        log.info("registered %d slash command(s) globally", len(synced))
        return
    for guild_id in guild_ids:
        guild = discord.Object(id=guild_id)
        tree.copy_global_to(guild=guild)
        try:
            synced = await tree.sync(guild=guild)
        except discord.HTTPException as e:
            log.warning(
                "could not register the slash commands in guild %s (is the bot in it, invited "
                "with the applications.commands scope?): %s",
                guild_id,
                e,
            )
            continue
        log.info("registered %d slash command(s) in guild %s", len(synced), guild_id)


# --------------------------------------------------------------------------------------------
# Alerts


def format_alert(alert: Alert) -> str:
    """The alert as a Discord message: actor, error, run id and what to do about it."""
    name = alert.actor
    outcome = alert.outcome
    error = _error_text(outcome.error_type, outcome.error_message) or outcome.status
    if alert.setup:
        head = (
            f"\N{POLICE CARS REVOLVING LIGHT} Actor `{name}` is broken: its setup() failed at "
            "start-up, so it does not run in this process."
        )
        tail = "Fix the cause and restart the server; `discord-actor check --setup` tries it."
        before, after = f"{head}\nError:\n```\n", f"\n```\n{tail}"
        room = MESSAGE_LIMIT - len(before) - len(after)
        return before + shorten(_fence_safe(error), room) + after
    if alert.paused:
        head = (
            f"\N{POLICE CARS REVOLVING LIGHT} Actor `{name}` was paused by the circuit breaker "
            f"after {alert.consecutive_failures} consecutive failures."
        )
        tail = (
            f"Fix the cause, then resume it with `/actors resume {name}` or "
            f"`discord-actor resume {name}`."
        )
    else:
        head = (
            f"\N{WARNING SIGN}\N{VARIATION SELECTOR-16} Actor `{name}` failed "
            f"{alert.consecutive_failures} times in a row."
        )
        tail = (
            f"The circuit breaker pauses it after {alert.outcome.max_consecutive_failures} "
            f"consecutive failures. Runs: `/actors history {name}`; stop it with "
            f"`/actors pause {name}`."
        )
    before, after = f"{head}\nLast error (run {alert.run_id}):\n```\n", f"\n```\n{tail}"
    room = MESSAGE_LIMIT - len(before) - len(after)
    return before + shorten(_fence_safe(error), room) + after


class DiscordAlerts:
    """The runtime's alert sink: posts each alert to a channel; never raises into the runtime.

    Waits (at most ``ready_timeout`` seconds) for the client to be connected, so alerts from
    runs that finish while the bot is still starting or reconnecting are not lost. A failure
    to post is logged as a warning. ``channel_id`` 0 means alerts are off.
    """

    def __init__(
        self,
        client: discord.Client,
        channel_id: int,
        *,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self.client = client
        self.channel_id = channel_id
        self.ready_timeout = ready_timeout

    async def __call__(self, alert: Alert) -> None:
        if not self.channel_id:
            return
        try:
            await self._wait_ready()
            channel = await self._channel()
            await channel.send(format_alert(alert), allowed_mentions=NO_MENTIONS)
        except Exception as e:
            log.warning(
                "could not post the alert for actor %s (run %s) to channel %s: %s: %s",
                alert.actor,
                alert.run_id,
                self.channel_id,
                type(e).__name__,
                e,
            )

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while not self.client.is_ready():
            if self.client.is_closed():
                raise RuntimeError("the Discord client is closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"the bot was not connected to Discord within {self.ready_timeout:g} s"
                )
            try:
                async with asyncio.timeout(remaining):
                    await self.client.wait_until_ready()
            except RuntimeError:  # not logged in yet: wait_until_ready needs that; poll
                await asyncio.sleep(min(0.1, remaining))
            except TimeoutError:
                pass

    async def _channel(self) -> discord.abc.Messageable:
        channel: Any = self.client.get_channel(self.channel_id)
        if channel is None:
            channel = await self.client.fetch_channel(self.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise TypeError(f"channel {self.channel_id} is a {type(channel).__name__}, "
                            "which cannot take messages")
        return channel


# --------------------------------------------------------------------------------------------
# Formatting


def _utc(value: datetime | None, *, seconds: bool = False) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    s = ms / 1000
    if s < 1:
        return f"{ms:.0f} ms"
    if s < 60:
        return f"{s:.2f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _error_text(error_type: str | None, message: str | None) -> str:
    if error_type:
        return f"{error_type}: {message}" if message else error_type
    return message or ""  # e.g. why slots were skipped


def _fence_safe(text: str) -> str:
    """Text that cannot close the code block it is shown in."""
    return text.replace("```", "`\N{ZERO WIDTH SPACE}``")


def _fit_block(
    lines: Sequence[str], filename: str, limit: int = EMBED_DESCRIPTION_LIMIT
) -> tuple[str, tuple[str, str] | None]:
    """``lines`` as a code block within ``limit`` characters.

    When they do not fit, the block shows the first lines and says how many more there are,
    and the full text comes back as an attachment ``(filename, text)``.
    """
    safe = [_fence_safe(line) for line in lines]
    block = "```\n" + "\n".join(safe) + "\n```"
    if len(block) <= limit:
        return block, None
    reserve = len("```\n\n```") + len(f"... {len(safe)} more lines in {filename}") + 8
    kept: list[str] = []
    used = 0
    for line in safe:
        if used + len(line) + 1 > limit - reserve:
            break
        kept.append(line)
        used += len(line) + 1
    more = f"\N{HORIZONTAL ELLIPSIS} {len(safe) - len(kept)} more lines in {filename}"
    return "```\n" + "\n".join([*kept, more]) + "\n```", (filename, "\n".join(lines) + "\n")
