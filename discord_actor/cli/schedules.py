"""``discord-actor schedules list|add|remove``: an actor's keyed schedules (those created at run
time by a key, besides the one in the configuration). ``schedules add`` takes one flag per
schedule kind that has one (``--every``, ``--cron``, ``--at``...), from the kind registry."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from discord_actor.cli import output
from discord_actor.cli.common import (
    CliError,
    Commands,
    positive_int,
    project_config,
    with_operations,
)
from discord_actor.hosting import OK, USAGE
from discord_actor.schedules.once import Once
from discord_actor.schedules.registry import listed_kinds

if TYPE_CHECKING:
    from discord_actor.config.model import Config
    from discord_actor.keyed import KeyedSchedule
    from discord_actor.operations import ActorStatus, Operations
    from discord_actor.schedules.kind import ScheduleSpec


def add_commands(commands: Commands) -> None:
    """``schedules`` and its ``list``, ``add`` and ``remove``."""
    schedules = commands.group(
        "schedules", "list, add and remove an actor's keyed schedules",
        "list, add and remove an actor's keyed schedules (those created at run time by a key, "
        "besides the one in the configuration)", dest="schedules_command",
    )
    p = schedules.add("list", cmd_schedules_list,
                      "an actor's pending keyed schedules, soonest first")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("--prefix", metavar="P", help="only keys that start with P")
    p.add_argument("--owner", metavar="O", help="only those of this owner (e.g. user:42)")
    p.add_argument("--limit", type=positive_int, default=100, metavar="N",
                   help="at most N, the soonest (default: 100)")
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = schedules.add("add", cmd_schedules_add, "add a keyed schedule to an actor")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("key", metavar="KEY", help="its name, unique per actor (e.g. guild:7)")
    when_group = p.add_mutually_exclusive_group(required=True)
    for flag in (kind.flag for kind in listed_kinds() if kind.flag is not None):
        when_group.add_argument(flag.option, metavar=flag.metavar, help=flag.help, dest=flag.dest)
    p.add_argument("--timezone", metavar="TZ",
                   help="IANA time zone its times are read and shown in (default: "
                   "server.timezone)")
    p.add_argument("--payload", metavar="JSON", help="a JSON object the run gets as ctx.payload")
    p.add_argument("--channel", metavar="ID",
                   help="the Discord channel id its ctx.post goes to (default: the actor's)")
    p.add_argument("--owner", metavar="O",
                   help="who it belongs to (e.g. user:42), counted by max_schedules_per_owner")
    p.add_argument("--replace", action="store_true",
                   help="change it if the key is already pending with another definition")
    p.add_argument("--json", action="store_true",
                   help="print the schedule as a JSON object (as schedules list --json does), "
                   "with its outcome: added, replaced or unchanged")

    p = schedules.add("remove", cmd_schedules_remove,
                      "remove a pending keyed schedule (its runs are kept)")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("key", metavar="KEY")


def cmd_schedules_list(args: argparse.Namespace) -> int:
    config = project_config(args)

    async def listed(ops: Operations) -> tuple[list[KeyedSchedule], ActorStatus | None]:
        found = await ops.list_schedules(
            args.actor, prefix=args.prefix, owner=args.owner, limit=args.limit + 1
        )
        if not found:
            return found, None
        actors = (await ops.status(args.actor.strip())).actors  # whether it holds them
        return found, next(iter(actors), None)

    found, status = with_operations(config, listed, actor=args.actor)
    output.show_schedules(
        found[: args.limit], actor=args.actor.strip(), status=status, config=config,
        limit=args.limit, more=len(found) > args.limit,  # one more was asked for, to tell
        prefix=args.prefix, owner=args.owner, as_json=args.json,
    )
    return OK


def cmd_schedules_add(args: argparse.Namespace) -> int:
    config = project_config(args)
    schedule = _schedule_spec(args, config)
    payload = _payload(args.payload)
    channel = _channel_id(args.channel)

    added = with_operations(config, lambda ops: ops.add_schedule(
        args.actor, args.key, schedule, payload=payload, channel_id=channel, owner=args.owner,
        replace=args.replace,
    ), migrate=True, actor=args.actor)
    output.schedule_added(added, runs_once=isinstance(schedule, Once), as_json=args.json)
    return OK


def cmd_schedules_remove(args: argparse.Namespace) -> int:
    removed = with_operations(project_config(args),
                              lambda ops: ops.remove_schedule(args.actor, args.key),
                              actor=args.actor)
    output.schedule_removed(removed)
    return OK


def _schedule_spec(args: argparse.Namespace, config: Config) -> ScheduleSpec:
    """What the one schedule flag given asks for (argparse makes sure there is exactly one)."""
    for kind in listed_kinds():
        value = None if kind.flag is None else getattr(args, kind.flag.dest)
        if value is not None:
            try:
                return kind.spec_from_flag(value, args.timezone, config.server.timezone)
            except ValueError as e:
                raise CliError(str(e), USAGE) from None
    raise CliError("no schedule flag given", USAGE)


def _payload(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise CliError(f"--payload is not valid JSON: {e}", USAGE) from None
    if not isinstance(value, dict):
        raise CliError(f"--payload must be a JSON object ({{\"text\": \"...\"}}), not "
                       f"{type(value).__name__}", USAGE)
    return value


def _channel_id(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise CliError(f"--channel {text!r} is not a Discord channel id (a positive whole "
                       "number)", USAGE)
    return value
