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
