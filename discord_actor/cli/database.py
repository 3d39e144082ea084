"""The database's commands: ``migrate`` (create or upgrade the schema) and ``prune`` (delete
finished runs older than the retention period, as a running server does every hour)."""

from __future__ import annotations

import argparse

from discord_actor.cli import output
from discord_actor.cli.common import (
    CliError,
    Commands,
    non_negative_float,
    project_config,
    with_operations,
)
from discord_actor.hosting import OK, database_label, open_for, run_async


def add_commands(commands: Commands) -> None:
    """``migrate`` and ``prune``."""
    p = commands.add("migrate", cmd_migrate, "create or upgrade the database schema")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object: the database and the migrations applied")

    p = commands.add("prune", cmd_prune, "delete finished runs older than the retention period")
    p.add_argument("--older-than-days", type=non_negative_float, metavar="N",
                   help="age in days (default: server.run_retention_days)")
    p.add_argument("--dry-run", action="store_true",
                   help="delete nothing: print how many runs would go, per actor, and the cutoff")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object: how many runs were (or, with --dry-run, would "
                   "be) deleted")


def cmd_migrate(args: argparse.Namespace) -> int:
    config = project_config(args)

    async def migrate() -> list[str]:
        database = await open_for(config, migrate=True)
        await database.close()
        return database.applied_migrations

    applied = run_async(migrate())
    output.migrated(database_label(config), applied, as_json=args.json)
    return OK


def cmd_prune(args: argparse.Namespace) -> int:
    config = project_config(args)
    days = args.older_than_days
    if days is None:
        days = float(config.server.run_retention_days)

    if args.dry_run:
        cutoff, counts = with_operations(config, lambda ops: ops.prunable(days))
        output.prunable(days, cutoff, counts, as_json=args.json)
        return OK
    result = with_operations(config, lambda ops: ops.prune(days))
    if result is not None and result.busy and not result.deleted:
        raise CliError("another process (a running server) is deleting old runs right now; "
                       "try again when it is done")
    output.pruned(days, 0 if result is None else result.deleted, as_json=args.json)
    return OK
