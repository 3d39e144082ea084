"""Application commands: what the bot registered, and interaction options typed by it.

Registering checks what Discord checks (names, description lengths, option order, duplicates)
so a bad command tree fails in tests as it would on Discord.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import FakeDiscordError, form_error
from .models import ALL_PERMISSIONS, JSON, FakeGuild, FakeUser, Snowflakes

_COMMAND_NAME = re.compile(r"[-_'\w]{1,32}")


class CommandRegistry:
    """Commands by scope (None = global, else a guild id) and ``"type:name"``."""

    def __init__(self, ids: Snowflakes, application_id: int) -> None:
        self.ids = ids
        self.application_id = application_id
        self.scopes: dict[int | None, dict[str, JSON]] = {}

    def overwrite(self, scope: int | None, commands: list[Any]) -> list[JSON]:
        """Bulk overwrite: a command keeps its id while its name and type stay, as on Discord."""
        old = self.scopes.get(scope, {})
        new: dict[str, JSON] = {}
        version = str(self.ids.next())
        for index, command in enumerate(commands):
            if not isinstance(command, dict):
                raise form_error(str(index), "DICT_TYPE_CONVERT", "Only dictionaries may be used.")
            kind = int(command.get("type") or 1)
            check_command(command, kind, str(index))
            key = f"{kind}:{command['name']}"
            if key in new:
                raise form_error(
                    str(index), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Names must be unique"
                )
            previous = old.get(key)
            new[key] = {
                "id": previous["id"] if previous else str(self.ids.next()),
                "application_id": str(self.application_id),
                "version": version,
                "type": kind,
                "name": command["name"],
                "description": command.get("description") or "",
                "default_member_permissions": _permissions(command),
                "nsfw": bool(command.get("nsfw")),
                "contexts": command.get("contexts"),
                "integration_types": command.get("integration_types") or [0],
                "options": command.get("options") or [],
                "name_localizations": command.get("name_localizations"),
                "description_localizations": command.get("description_localizations"),
            }
            if scope is not None:
                new[key]["guild_id"] = str(scope)
            else:
                new[key]["dm_permission"] = command.get("dm_permission", True) is not False
        self.scopes[scope] = new
        return list(new.values())

    def find(self, name: str, guild_id: int | None) -> JSON | None:
        """The chat-input command ``name`` as registered for ``guild_id``, else globally."""
        for scope in ((guild_id,) if guild_id is not None else ()) + (None,):
            command = self.scopes.get(scope, {}).get(f"1:{name}")
            if command is not None:
                return command
        return None

    def names(self) -> list[str]:
        return sorted(c["name"] for scope in self.scopes.values() for c in scope.values())


def _permissions(command: JSON) -> str | None:
    """Discord takes the bit set as a number or a string and answers with a string."""
    value = command.get("default_member_permissions")
    return None if value is None else str(int(value))


def check_command(command: JSON, kind: int, path: str) -> None:
    name = command.get("name")
    if not isinstance(name, str) or not (
        _COMMAND_NAME.fullmatch(name) and (kind != 1 or name == name.lower())
    ):
        raise form_error(
            f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", f"Invalid command name {name!r}"
        )
    description = command.get("description") or ""
    if kind == 1 and not 1 <= len(description) <= 100:
        raise form_error(
            f"{path}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
        )
    options = command.get("options") or []
    if len(options) > 25:
        raise form_error(f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer.")
    seen_optional = False
    for i, option in enumerate(options):
        check_command(option, 1, f"{path}.options.{i}")
        if option.get("required") and seen_optional:
            raise form_error(
                f"{path}.options.{i}",
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            )
        seen_optional = seen_optional or not option.get("required")


def may_use(command: JSON, permissions: int) -> bool:
    """Whether Discord offers ``command`` to a member with these guild permissions."""
    required = command.get("default_member_permissions")
    if required is None:
        return True
    needed = int(required)
    if needed == 0:  # "0": administrators only
        return permissions == ALL_PERMISSIONS
    return permissions & needed == needed


def build_options(
    command: JSON,
    path: list[str],
    values: dict[str, Any],
    focused: str | None,
    guild: FakeGuild,
    users: dict[int, FakeUser],
) -> tuple[list[JSON], JSON]:
    """Interaction ``options`` (nested under subcommands) and ``resolved`` for ``values``."""
    definitions: list[JSON] = command.get("options") or []
    chain: list[JSON] = []
    for sub in path[1:]:
        option = next(
            (o for o in definitions if o.get("name") == sub and o.get("type") in (1, 2)), None
        )
        if option is None:
            raise FakeDiscordError(f"/{path[0]} has no subcommand {sub!r}")
        chain.append({"type": option["type"], "name": sub, "options": []})
        definitions = option.get("options") or []
    where = "/" + " ".join(path)
    if any(o.get("type") in (1, 2) for o in definitions):
        raise FakeDiscordError(f"{where} needs a subcommand")
    leaf: list[JSON] = []
    resolved: JSON = {}
    by_name = {o["name"]: o for o in definitions}
    for key, value in values.items():
        if key not in by_name:
            raise FakeDiscordError(f"{where} has no option {key!r}; it has {list(by_name)}")
        definition = by_name[key]
        if key == focused:
            if not definition.get("autocomplete"):
                raise FakeDiscordError(f"option {key!r} of {where} has no autocomplete")
            leaf.append(
                {"type": definition["type"], "name": key, "value": str(value), "focused": True}
            )
        else:
            leaf.append(_option_value(definition, value, guild, users, resolved))
    missing = [o["name"] for o in definitions if o.get("required") and o["name"] not in values]
    if missing and focused is None:
        raise FakeDiscordError(f"{where} misses required options {missing}")
    if focused is not None and focused not in values:
        raise FakeDiscordError(f"the focused option {focused!r} needs a (partial) value")
    options = leaf
    for link in reversed(chain):
        link["options"] = options
        options = [link]
    return options, resolved


_CASTS: dict[int, Callable[[Any], Any]] = {3: str, 4: int, 5: bool, 10: float}


def _option_value(
    definition: JSON, value: Any, guild: FakeGuild, users: dict[int, FakeUser], resolved: JSON
) -> JSON:
    kind = int(definition["type"])
    name = definition["name"]
    option: JSON = {"type": kind, "name": name}
    if kind in (6, 7, 8, 9):  # user, channel, role, mentionable: an id plus resolved data
        snowflake = int(value.id) if hasattr(value, "id") else int(value)
        option["value"] = str(snowflake)
        key = str(snowflake)
        if snowflake in users:
            resolved.setdefault("users", {})[key] = users[snowflake].payload()
            if (member := guild.members.get(snowflake)) is not None:
                partial = {k: v for k, v in member.payload().items() if k != "user"}
                permissions = str(guild.permissions_of(snowflake))
                resolved.setdefault("members", {})[key] = {**partial, "permissions": permissions}
        elif snowflake in guild.roles:
            resolved.setdefault("roles", {})[key] = guild.roles[snowflake].payload()
        elif snowflake in guild.channels:
            channel = {**guild.channels[snowflake].payload(), "permissions": str(ALL_PERMISSIONS)}
            resolved.setdefault("channels", {})[key] = channel
        else:
            raise FakeDiscordError(f"option {name!r}: no user, role or channel {snowflake}")
        return option
    if kind not in _CASTS:
        raise FakeDiscordError(f"option {name!r} has type {kind}, which the fake cannot send")
    option["value"] = _CASTS[kind](value)
    choices = [c["value"] for c in definition.get("choices") or []]
    if choices and option["value"] not in choices:
        raise FakeDiscordError(f"option {name!r} must be one of {choices}")
    return option


# -- typed at a terminal -----------------------------------------------------------------------

_TYPE_WORDS = {3: "text", 4: "integer", 5: "true|false", 6: "@user", 7: "#channel", 8: "@role",
               9: "@user|@role", 10: "number", 11: "attachment"}
_GROUPS = (1, 2)  # subcommand, subcommand group
#: ``name:`` at the start of a word: where an option's value starts (a word that starts with
#: a letter, so that "10:30" in a value is not taken for an option)
_OPTION_START = re.compile(r"(?<!\S)([a-z][-_'\w]{0,31}):(?!//)")
_TRUE, _FALSE = {"true", "yes", "y", "1", "on"}, {"false", "no", "n", "0", "off"}


def visible_commands(registry: CommandRegistry, guild_id: int | None) -> list[JSON]:
    """The chat-input commands a member of ``guild_id`` is offered, by name (a guild's
    command hides a global one of the same name, as in Discord's picker)."""
    found: dict[str, JSON] = {}
    for scope in (None, guild_id):
        for command in registry.scopes.get(scope, {}).values():
            if command.get("type", 1) == 1:
                found[command["name"]] = command
    return [found[name] for name in sorted(found)]


def _leaves(command: JSON) -> list[tuple[str, JSON]]:
    """``(path, definition)`` of every runnable form of ``command``: itself, or each of its
    subcommands (``"reminders cancel"``)."""
    options: list[JSON] = command.get("options") or []
    subs = [o for o in options if o.get("type") in _GROUPS]
    if not subs:
        return [(command["name"], command)]
    return [(f"{command['name']} {path}", leaf) for sub in subs for path, leaf in _leaves(sub)]


def _usage(path: str, definition: JSON) -> str:
    parts = [f"/{path}"]
    for option in definition.get("options") or []:
        choices = [str(c["name"]) for c in option.get("choices") or []]
        shown = f"{option['name']}:{'|'.join(choices) or _TYPE_WORDS.get(option['type'], '?')}"
        parts.append(shown if option.get("required") else f"[{shown}]")
    return " ".join(parts)


def describe_commands(registry: CommandRegistry, guild_id: int | None) -> list[str]:
    """One line per runnable command, its options and description: what a user at a terminal
    may type (``/remind in:text text:text [timezone:text] [dm:true|false]  Remind me...``)."""
    lines = []
    for command in visible_commands(registry, guild_id):
        for path, leaf in _leaves(command):
            description = leaf.get("description") or ""
            lines.append(f"{_usage(path, leaf)}  {description}".rstrip())
    return lines


def parse_invocation(
    text: str, registry: CommandRegistry, guild_id: int | None
) -> tuple[str, dict[str, str], list[JSON]]:
    """``/name [sub] opt:value opt2:multi word value`` as typed, read against the registered
    commands: the command's path (``"reminders cancel"``), each option's text and the
    options' definitions. A value runs until the next ``option:`` of that command.

    Raises ``FakeDiscordError`` naming what is wrong and what exists instead.
    """
    words = text.strip().removeprefix("/").split(None, 1)
    if not words:
        raise FakeDiscordError("no command given")
    commands = {c["name"]: c for c in visible_commands(registry, guild_id)}
    command = commands.get(words[0].lower())
    if command is None:
        listed = ", ".join(f"/{n}" for n in commands) or "none yet"
        raise FakeDiscordError(f"no command /{words[0]}; the bot registered: {listed}")
    path, definition = [command["name"]], command
    rest = words[1] if len(words) > 1 else ""
    while subs := [o for o in definition.get("options") or [] if o.get("type") in _GROUPS]:
        head, _, tail = rest.partition(" ")
        chosen = next((o for o in subs if o["name"] == head.lower()), None)
        if chosen is None:
            got = f"no subcommand {head!r}" if head else "a subcommand is needed"
            offered = ", ".join(o["name"] for o in subs)
            raise FakeDiscordError(f"/{' '.join(path)}: {got}; it has {offered}")
        path.append(chosen["name"])
        definition, rest = chosen, tail.strip()
    definitions: list[JSON] = definition.get("options") or []
    where = "/" + " ".join(path)
    names = [o["name"] for o in definitions]
    listed = ", ".join(names) or "none"
    starts = list(_OPTION_START.finditer(rest))
    before = rest[: starts[0].start()] if starts else rest
    if before.strip():
        raise FakeDiscordError(
            f"{where}: {before.strip()!r} is not an option; give name:value ({where} takes "
            f"{listed})"
        )
    values: dict[str, str] = {}
    for i, match in enumerate(starts):
        name = match[1].lower()
        if name not in names:
            raise FakeDiscordError(f"{where} has no option {name!r}; it takes {listed}")
        if name in values:
            raise FakeDiscordError(f"{where}: option {name!r} is given twice")
        end = starts[i + 1].start() if i + 1 < len(starts) else len(rest)
        values[name] = rest[match.end() : end].strip()
    missing = [o["name"] for o in definitions if o.get("required") and o["name"] not in values]
    if missing:
        usage = _usage(" ".join(path), definition)
        raise FakeDiscordError(f"{where} needs {', '.join(missing)}: {usage}")
    return " ".join(path), values, definitions


def typed_options(
    definitions: list[JSON], values: dict[str, str], guild: FakeGuild, users: dict[int, FakeUser]
) -> dict[str, Any]:
    """The typed text of ``parse_invocation`` as ``inject_command`` takes it: numbers, booleans,
    the id of ``@name``/``#name``/``<@id>``, a choice given by its name."""
    by_name = {o["name"]: o for o in definitions}
    return {name: _typed(by_name[name], text, guild, users) for name, text in values.items()}


_MENTION = re.compile(r"<(?:@!?|@&|#)(\d+)>")


def _typed(definition: JSON, text: str, guild: FakeGuild, users: dict[int, FakeUser]) -> Any:
    kind, name = int(definition["type"]), definition["name"]
    choices = definition.get("choices") or []
    if choices:
        for choice in choices:
            if text.lower() in (str(choice["name"]).lower(), str(choice["value"]).lower()):
                return choice["value"]
        listed = ", ".join(str(c["name"]) for c in choices)
        raise FakeDiscordError(f"option {name!r} is one of {listed}, not {text!r}")
    try:
        if kind == 4:
            return int(text)
        if kind == 10:
            return float(text)
    except ValueError:
        raise FakeDiscordError(f"option {name!r} takes {_TYPE_WORDS[kind]}, not {text!r}") from None
    if kind == 5:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise FakeDiscordError(f"option {name!r} takes true or false, not {text!r}")
    if kind in (6, 7, 8, 9):
        return _snowflake(kind, name, text, guild, users)
    return text


def _snowflake(kind: int, name: str, text: str, guild: FakeGuild,
               users: dict[int, FakeUser]) -> int:
    """The id that ``<@id>``, ``@name``, ``#name`` or a bare id stands for in ``guild``."""
    if match := _MENTION.fullmatch(text):
        return int(match[1])
    if text.isdigit():
        return int(text)
    wanted = text.lstrip("@#").lower()
    named: dict[str, int] = {}
    if kind in (6, 9):
        named |= {users[u].username.lower(): u for u in guild.members if u in users}
    if kind in (8, 9):
        named |= {r.name.lstrip("@").lower(): r.id for r in guild.roles.values()}
    if kind == 7:
        named |= {c.name.lower(): c.id for c in guild.channels.values()}
    if wanted in named:
        return named[wanted]
    listed = ", ".join(sorted(named))
    raise FakeDiscordError(f"option {name!r}: no {_TYPE_WORDS[kind]} {text!r} here ({listed})")
