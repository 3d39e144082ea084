"""The commands that read and change nothing: ``status`` (every actor's state), ``history``
(recorded runs; ``--show ID``: one run in full) and ``next`` (an actor's next slots)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from discord_actor.cli import output
from discord_actor.cli.common import (
    Commands,
    configured_actor,
    iso_datetime,
    positive_int,
    project_config,
    stored_tasks,
    with_operations,
)
from discord_actor.enums import RunStatus
from discord_actor.hosting import OK
from discord_actor.schedules.base import predict
from discord_actor.schedules.registry import build_schedule

RUN_STATUSES = [status.value for status in RunStatus]  # ``history --status`` takes one


def add_commands(commands: Commands) -> None:
    """``status``, ``history`` and ``next``."""
    p = commands.add("status", cmd_status, "show every actor's state from the database")
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = commands.add("history", cmd_history, "show recorded runs, newest first")
    p.add_argument("actor", nargs="?", metavar="ACTOR", help="only this actor's runs")
    p.add_argument("--limit", type=positive_int, default=20, metavar="N",
                   help="at most N runs (default: 20)")
    p.add_argument("--status", choices=RUN_STATUSES, metavar="S",
                   help=f"only runs with this status ({', '.join(RUN_STATUSES)})")
    p.add_argument("--show", type=positive_int, metavar="RUN_ID",
                   help="one run in full: its times, error, traceback and posts")
    p.add_argument("--json", action="store_true",
                   help="print a JSON array (with --show: the run as an object, traceback "
                   "included)")

    p = commands.add("next", cmd_next,
                     "show an actor's next slots, as the runtime computes them")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("--count", type=positive_int, default=5, metavar="N",
                   help="how many slots (default: 5)")
    p.add_argument("--after", type=iso_datetime, metavar="ISO8601",
                   help="slots after this time (default: now; without an offset it is read in "
                   "the schedule's time zone)")
    p.add_argument("--json", action="store_true", help="print a JSON array of ISO 8601 strings")


def cmd_status(args: argparse.Namespace) -> int:
    report = with_operations(project_config(args), lambda ops: ops.status())
    output.show_status(report, as_json=args.json)
    return OK


def cmd_history(args: argparse.Namespace) -> int:
    config = project_config(args)
    if args.show is not None:  # one run, with its traceback and what it posted
        run = with_operations(config, lambda ops: ops.run(args.show))
        output.show_run(run, as_json=args.json)
        return OK
    runs = with_operations(config, lambda ops: ops.history(args.actor, args.status, args.limit),
                           actor=args.actor)
    output.show_history(runs, actor=args.actor, status=args.status, as_json=args.json)
    return OK


def cmd_next(args: argparse.Namespace) -> int:
    config = project_config(args)
    cfg = configured_actor(config, args.actor)
    schedule = build_schedule(cfg.schedule)
    after: datetime | None = args.after
    if after is not None and after.tzinfo is None:
        after = after.replace(tzinfo=schedule.tz)
    task: Any = stored_tasks(config, cfg.name).get(cfg.name)  # its row, None if it has none
    found = predict(schedule, task, datetime.now(UTC), args.count, after)
    output.show_next(config, cfg, schedule, found, task, after=after, as_json=args.json)
    return OK
