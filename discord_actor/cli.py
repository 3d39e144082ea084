"""The ``discord-actor`` command: init, check, run, and the operator commands on the database.

Exit codes: 0 success (``run`` stopped by SIGINT or SIGTERM, even during start-up, is a clean
stop), 1 runtime failure (database unreachable, actor not in the database yet, a paused actor
triggered...), 2 usage or configuration error, 130 another command interrupted by Ctrl-C.
Anything a user can cause ends with a message, never a traceback.

This module parses and prints: what the commands do is in ``operations`` (the operator
commands), ``hosting`` (``run``) and ``logs`` (the log set-up every command shares). Heavy
modules (asyncpg, the runtime, the plugins) are imported by the commands that need them, so
``init``, ``config show`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discord_actor import __version__
from discord_actor.config.dump import dump_config
from discord_actor.config.model import CONFIG_FILE, ActorConfig, Config, ConfigError
from discord_actor.config.reader import load_config
from discord_actor.config.redaction import redact_url
from discord_actor.config.starter import write_starter
from discord_actor.config.values import closest
from discord_actor.hosting import (
    FAILURE,
    OK,
    USAGE,
    HostError,
    bot_token,
    database_label,
    discord_actor_names,
    open_for,
    run_async,
    run_server,
)
from discord_actor.keyed import KeyedSchedule, ScheduleConflict
from discord_actor.logs import (
    FORMATS,
    LEVELS,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    LogSettingError,
    configure_logging,
    resolve_format,
    resolve_level,
)
from discord_actor.operations import (
    RUN_STATUSES,
    ActorDisabled,
    ActorPaused,
    ActorRemoved,
    ActorStatus,
    NotStarted,
    OperationError,
    Operations,
    PauseResult,
    ResumeResult,
    RunInfo,
    RunNotFound,
    ScheduleAdded,
    ScheduleNotFound,
    ScheduleRefused,
    ScheduleRemoved,
    Status,
    TriggerResult,
    UnknownActor,
    describe_keyed,
    describe_schedule,
    format_duration,
    one_line,
    schedule_json,
    shorten,
    table,
    when,
)
from discord_actor.schedules.base import Schedule, format_slot
from discord_actor.schedules.kind import ScheduleSpec
from discord_actor.schedules.once import Once
from discord_actor.schedules.registry import build_schedule, listed_kinds

if TYPE_CHECKING:
    from discord_actor.db import Database
    from discord_actor.db.records import Operator
    from discord_actor.db.store import Store
    from discord_actor.plugins import LoadedActor

INTERRUPTED = 130  # Ctrl-C during a command (exit codes 0, 1 and 2: hosting's)

CHECK_SLOTS = 3  # next slots shown per actor by ``check``
HISTORY_ERROR_WIDTH = 60  # characters of a run's error in the history table
SCHEDULE_KEY_WIDTH = 40  # characters of a key in the schedules and history tables
SCHEDULE_PAYLOAD_WIDTH = 50  # characters of a payload in the schedules table
NEXT_DB_TIMEOUT = 3.0  # seconds ``next`` waits for the database before using the schedule alone

log = logging.getLogger("discord_actor.cli")


# A failure to report as one message and an exit code (no traceback): the same for every
# command as for ``run``.
CliError = HostError


# --------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (the console script exits with it)."""
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    try:
        _configure_logging(args)
        code: int = args.handler(args)
        return code
    except LogSettingError as e:
        print(f"discord-actor: error: {e}", file=sys.stderr)
        return USAGE
    except HostError as e:
        print(f"discord-actor: error: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("discord-actor: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # Output piped into a command that exited early (``status | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILURE


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before and after the subcommand: both parsers know it, and the
    # subcommand's value (only set if given) wins over the top-level one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS,
        help=f"configuration file (default: ./{CONFIG_FILE})",
    )
    logs = common.add_argument_group("logging")
    logs.add_argument(
        "--log-level", choices=LEVELS, metavar="LEVEL", default=argparse.SUPPRESS,
        help=f"{', '.join(LEVELS)} (default: ${LOG_LEVEL_ENV}, else info for run and warning "
        "for the other commands)",
    )
    logs.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                      help="more detail (one level per -v)")
    logs.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS,
                      help="less detail (one level per -q)")
    logs.add_argument(
        "--log-format", choices=FORMATS, metavar="FORMAT", default=argparse.SUPPRESS,
        help=f"text, or json: one object per line (default: ${LOG_FORMAT_ENV}, else text)",
    )
    parser = argparse.ArgumentParser(
        prog="discord-actor", parents=[common],
        description="Scheduled actors inside a Discord bot, every run tracked in PostgreSQL.",
        epilog="Exit codes: 0 success ('run' stopped by SIGINT/SIGTERM too), 1 runtime failure "
        "(e.g. database unreachable), 2 usage or configuration error, 130 another command "
        "interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str,
                parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, parents=[common], help=help, description=help
        )
        p.set_defaults(handler=handler)
        return p

    p = command("init", cmd_init, "write a starter actor_server.toml and actors/hello.py")
    p.add_argument("directory", nargs="?", metavar="DIR",
                   help="where to write them (default: the directory of --config, else the "
                   "current directory)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")

    p = command("check", cmd_check,
                "validate the configuration and the actors; show next slots")
    p.add_argument("--setup", action="store_true",
                   help="also run each enabled actor's setup() and teardown() hooks; exit 1 if "
                   "one fails")
    p = command("run", cmd_run, "run the actors until Ctrl-C or SIGTERM (with a bot token: as a "
                "Discord bot)")
    p.add_argument("--dry-run", action="store_true",
                   help="do not connect to Discord: discord actors print their posts on the "
                   "console")

    p = command("status", cmd_status, "show every actor's state from the database")
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = command("history", cmd_history, "show recorded runs, newest first")
    p.add_argument("actor", nargs="?", metavar="ACTOR", help="only this actor's runs")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                   help="at most N runs (default: 20)")
    p.add_argument("--status", choices=RUN_STATUSES, metavar="S",
                   help=f"only runs with this status ({', '.join(RUN_STATUSES)})")
    p.add_argument("--show", type=_positive_int, metavar="RUN_ID",
                   help="one run in full: its times, error, traceback and posts")
    p.add_argument("--json", action="store_true",
                   help="print a JSON array (with --show: the run as an object, traceback "
                   "included)")

    p = command("next", cmd_next, "show an actor's next slots, as the runtime computes them")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("--count", type=_positive_int, default=5, metavar="N",
                   help="how many slots (default: 5)")
    p.add_argument("--after", type=_iso_datetime, metavar="ISO8601",
                   help="slots after this time (default: now; without an offset it is read in "
                   "the schedule's time zone)")
    p.add_argument("--json", action="store_true", help="print a JSON array of ISO 8601 strings")

    p = command("pause", cmd_pause, "pause an actor (running servers stop starting its runs)")
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("--reason", metavar="TEXT", help="shown by status")
    p = command("resume", cmd_resume, "resume a paused actor and reset its failure count")
    p.add_argument("actor", metavar="ACTOR")
    p = command("trigger", cmd_trigger, "ask a running server to run an actor now")
    p.add_argument("actor", metavar="ACTOR")

    command("migrate", cmd_migrate, "create or upgrade the database schema")

    p = command("prune", cmd_prune, "delete finished runs older than the retention period")
    p.add_argument("--older-than-days", type=_non_negative_float, metavar="N",
                   help="age in days (default: server.run_retention_days)")
    p.add_argument("--dry-run", action="store_true",
                   help="delete nothing: print how many runs would go, per actor, and the cutoff")

    schedules = sub.add_parser(
        "schedules", parents=[common], help="list, add and remove an actor's keyed schedules",
        description="list, add and remove an actor's keyed schedules (those created at run time "
        "by a key, besides the one in the configuration)",
    )
    schedules_sub = schedules.add_subparsers(dest="schedules_command", metavar="COMMAND",
                                             required=True)
    p = command("list", cmd_schedules_list, "an actor's pending keyed schedules, soonest first",
                parent=schedules_sub)
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("--prefix", metavar="P", help="only keys that start with P")
    p.add_argument("--owner", metavar="O", help="only those of this owner (e.g. user:42)")
    p.add_argument("--limit", type=_positive_int, default=100, metavar="N",
                   help="at most N, the soonest (default: 100)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p = command("add", cmd_schedules_add, "add a keyed schedule to an actor",
                parent=schedules_sub)
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
    p = command("remove", cmd_schedules_remove, "remove a pending keyed schedule (its runs are "
                "kept)", parent=schedules_sub)
    p.add_argument("actor", metavar="ACTOR")
    p.add_argument("key", metavar="KEY")

    config = sub.add_parser("config", parents=[common], help="configuration commands",
                            description="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    command("show", cmd_config_show,
            "print the resolved configuration as TOML, secrets redacted", parent=config_sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    """The log set-up every command shares: ``run`` tells what it does at info; the other
    commands print their answers and log only warnings unless asked for more."""
    default = logging.INFO if args.handler is cmd_run else logging.WARNING
    level = resolve_level(getattr(args, "log_level", None), getattr(args, "verbose", 0),
                          getattr(args, "quiet", 0), default)
    configure_logging(level, resolve_format(getattr(args, "log_format", None)))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of days >= 0, not {text}")
    return value


def _iso_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (e.g. 2026-03-29T09:00:00+02:00)"
        ) from None


# --------------------------------------------------------------------------------------------
# Shared helpers


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", CONFIG_FILE))


def _config_actor(config: Config, name: str) -> ActorConfig:
    """The configured actor ``name``; an unknown name is a usage error with a suggestion."""
    try:
        return config.actor(name)
    except KeyError:
        raise CliError(_unknown_actor(config, name), USAGE) from None


def _unknown_actor(config: Config, name: str) -> str:
    names = [a.name for a in config.actors]
    match = closest(name, names)
    hint = f"; did you mean {match!r}?" if match else ""
    known = ", ".join(names) if names else "none"
    return f"unknown actor {name!r} in {config.path}{hint} (configured actors: {known})"


@contextlib.asynccontextmanager
async def _store(
    config: Config, *, migrate: bool = False, **overrides: Any
) -> AsyncIterator[tuple[Store | None, Database]]:
    """An open Store, or None if the schema has no tables yet (no server has run); ``migrate``
    creates or upgrades them first."""
    import asyncpg

    from discord_actor.db.migrations import applied_versions
    from discord_actor.db.store import Store

    db = await open_for(config, migrate=migrate, **overrides)
    try:
        async with db.pool.acquire() as conn:
            initialized = bool(await applied_versions(conn, db.schema))
        yield (Store(db.pool, db.schema) if initialized else None), db
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise CliError(f"database error on {redact_url(db.url)}: {type(e).__name__}: {e}") \
            from None
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def _operations(
    config: Config, *, migrate: bool = False, **overrides: Any
) -> AsyncIterator[Operations]:
    """The operations layer on this configuration's database; its refusals become messages
    that name the configuration and the command to run instead."""
    async with _store(config, migrate=migrate, **overrides) as (store, _):
        try:
            yield Operations(store, config)
        except UnknownActor as e:
            raise CliError(_unknown_actor(config, e.actor), USAGE) from None
        except NotStarted as e:
            raise _not_started(config, e.actor) from None
        except ActorRemoved as e:
            raise CliError(f"actor {e.actor!r} is no longer in {config.path}; its history is "
                           f"kept (discord-actor history {e.actor})") from None
        except ActorPaused as e:
            raise CliError(f"{e.actor} is paused ({e.reason}); resume it first with: "
                           f"discord-actor resume {e.actor}") from None
        except ActorDisabled as e:
            raise CliError(f"{e.actor} is disabled (enabled = false in {config.path}): "
                           "a server does not run it") from None
        except RunNotFound as e:
            raise CliError(f"no run with id {e.run_id} in {database_label(config)} (it may "
                           "have been pruned; 'discord-actor history' lists the runs)") from None
        except ScheduleNotFound as e:
            raise CliError(f"{e} (it ran, was removed, or never was; 'discord-actor schedules "
                           f"list {e.actor}' lists the pending ones)") from None
        except ScheduleRefused as e:
            raise CliError(_refused(e), USAGE) from None
        except OperationError as e:
            raise CliError(str(e)) from None


def _refused(refused: ScheduleRefused) -> str:
    """The keyed schedules API's refusal in the words of the command line."""
    error = refused.error
    if isinstance(error, ScheduleConflict):
        keys = ", ".join(repr(k) for k in error.keys)
        return (f"actor {refused.actor!r}: key {keys} is already pending with another "
                "schedule, payload, channel or owner; add --replace to change it, or remove it "
                f"first (discord-actor schedules remove {refused.actor} KEY)")
    text = str(error)
    return text if f"actor {refused.actor!r}" in text else f"actor {refused.actor!r}: {text}"


def _not_started(config: Config, actor: str) -> CliError:
    return CliError(
        f"actor {actor!r} has no task in the database yet ({database_label(config)}): "
        "start 'discord-actor run' once first"
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --------------------------------------------------------------------------------------------
# init, check, config show


def cmd_init(args: argparse.Namespace) -> int:
    config = getattr(args, "config", None)
    if args.directory is not None:
        directory = Path(args.directory)
    elif config is not None:
        if Path(config).name != CONFIG_FILE:
            raise CliError(f"init writes {CONFIG_FILE}, not {Path(config).name}: "
                           "name the directory instead (discord-actor init DIR)", USAGE)
        directory = Path(config).parent
    else:
        directory = Path(".")
    try:
        written = write_starter(directory, force=args.force)
    except FileExistsError as e:
        # write_starter's message is args[0]; str() would show "[Errno None] None: ..."
        raise CliError(e.args[0] if len(e.args) == 1 else str(e), USAGE) from None
    except OSError as e:
        raise CliError(f"cannot write into {directory}: {e.strerror or e}") from None
    for path in written:
        print(f"wrote {path}")
    where = "" if directory.resolve() == Path.cwd() else f"cd {directory} && "
    print(f"next: {where}discord-actor check && discord-actor run")
    return OK


def cmd_config_show(args: argparse.Namespace) -> int:
    print(dump_config(_config(args)), end="")
    return OK


def cmd_check(args: argparse.Namespace) -> int:
    from discord_actor.plugins import load_project

    config, actors = load_project(getattr(args, "config", CONFIG_FILE))
    now = datetime.now(UTC)
    stored = run_async(_stored_tasks(config)) if _may_have_database(config) else {}
    for a in config.actors:
        loaded = actors[a.name]
        schedule = build_schedule(a.schedule)
        flags = "" if a.enabled else ", disabled"
        print(f"{a.name}  (module {a.module}, platform {loaded.platform}{flags})")
        print(f"  schedule: {describe_schedule(a.schedule)}")
        slots, _ = predicted_slots(schedule, stored.get(a.name), now, CHECK_SLOTS, now)
        if slots:
            print(f"  next: {', '.join(format_slot(s.astimezone(schedule.tz)) for s in slots)}")
        elif a.schedule.type == "immediate":
            print("  next: when the server starts")
        elif a.schedule.type == "none":
            print("  next: by its keyed schedules ('discord-actor schedules list "
                  f"{a.name}') and triggers")
        else:
            print("  next: none (its time has passed)")
    dry = _dry_run_note(config, actors)
    if dry:
        print(f"note: {dry}")
    count = len(config.actors)
    if getattr(args, "setup", False):
        failures = run_async(_try_hooks(actors))
        if failures:
            for problem in failures:
                print(problem, file=sys.stderr)
            print(f"{config.path}: {len(failures)} actor hook(s) failed", file=sys.stderr)
            return FAILURE
        print("setup() and teardown() hooks: OK")
    print(f"{config.path}: OK, {count} actor{'s' if count != 1 else ''}")
    return OK


async def _try_hooks(actors: dict[str, LoadedActor]) -> list[str]:
    """Run each enabled actor's setup() and then teardown(), as a server does around its runs;
    what fails is returned as one line per hook."""
    problems: list[str] = []
    for name, loaded in actors.items():
        if not loaded.config.enabled:
            continue
        for hook in ("setup", "teardown"):
            try:
                await getattr(loaded.instance, hook)()
            except Exception as e:
                problems.append(f"actor {name}: {hook}() failed: {type(e).__name__}: {e}")
                break  # a server does not tear down an actor whose setup() failed
    return problems


def _dry_run_note(config: Config, actors: dict[str, LoadedActor]) -> str | None:
    """Discord actors without a token: say what ``run`` will do about it."""
    names = discord_actor_names(actors)
    if not names or bot_token(config) is not None:
        return None
    env = config.discord.token_env
    return (f"no bot token in ${env}: 'discord-actor run' needs one for the discord actors "
            f"({', '.join(names)}); 'discord-actor run --dry-run' prints their posts on the "
            "console instead")


# --------------------------------------------------------------------------------------------
# run


def cmd_run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (``hosting.run_server``); 0 for a stop by either signal."""
    return run_server(getattr(args, "config", CONFIG_FILE), dry_run=args.dry_run)


# --------------------------------------------------------------------------------------------
# status, history, next


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)

    async def status() -> Status:
        async with _operations(config) as ops:
            return await ops.status()

    report = run_async(status())
    if not report.initialized:
        print("note: no server has run on this database yet (start 'discord-actor run')",
              file=sys.stderr)
    if args.json:
        _print_json([a.to_json() for a in report.actors])
        return OK
    if not report.actors:
        print("no actors configured")
        return OK
    rows = [
        [
            a.actor, a.state, when(a.next_run, a.timezone), a.last_status or "-",
            when(a.last_run_at, a.timezone), str(a.consecutive_failures), str(a.running),
            str(a.keyed), a.schedule or "-",
        ]
        for a in report.actors
    ]
    print("\n".join(table(["ACTOR", "STATE", "NEXT RUN", "LAST STATUS", "LAST RUN", "FAILURES",
                             "RUNNING", "KEYED", "SCHEDULE"], rows)))
    for a in report.actors:
        if a.broken:
            print(f"{a.actor} is broken: setup() failed: {a.setup_error} (it does not run; "
                  "fix it and restart the server, 'discord-actor check --setup' tries it)")
        if a.paused:
            print(f"{a.actor} is paused: {a.paused_reason} "
                  f"(resume with: discord-actor resume {a.actor})")
    return OK


def cmd_history(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.show is not None:
        return _show_run(config, args.show, args.json)

    async def history() -> list[RunInfo]:
        async with _operations(config) as ops:
            return await ops.history(args.actor, args.status, args.limit)

    runs = run_async(history())
    if args.json:
        _print_json([r.to_json() for r in runs])
        return OK
    if not runs:
        print(_no_runs(args.actor, args.status))
        return OK
    rows = [
        [
            str(r.id), r.actor, shorten(one_line(r.key or ""), SCHEDULE_KEY_WIDTH),
            when(r.scheduled_for, r.timezone), format_duration(r.duration_ms),
            r.status, r.trigger, str(r.attempt),
            shorten(one_line(r.error or r.note or ""), HISTORY_ERROR_WIDTH),
        ]
        for r in runs
    ]
    print("\n".join(table(["ID", "ACTOR", "KEY", "SCHEDULED FOR", "DURATION", "STATUS",
                             "TRIGGER", "ATTEMPT", "ERROR"], rows)))
    if any(r.error_type for r in runs):
        print("a failed run's traceback: discord-actor history --show ID", file=sys.stderr)
    return OK


def _show_run(config: Config, run_id: int, as_json: bool) -> int:
    """``history --show ID``: one run, with its traceback and what it posted."""

    async def run() -> RunInfo:
        async with _operations(config) as ops:
            return await ops.run(run_id)

    r = run_async(run())
    if as_json:
        _print_json(r.to_json(traceback=True))
        return OK
    tz = r.timezone
    lines = [
        f"run {r.id} of {r.actor}{'' if r.key is None else f' (key {r.key})'}: {r.status}",
        f"  scheduled for  {when(r.scheduled_for, tz)}",
        f"  started        {when(r.started_at, tz)}",
        f"  finished       {when(r.finished_at, tz)}",
        f"  duration       {format_duration(r.duration_ms)}",
        f"  trigger        {r.trigger} (attempt {r.attempt})",
        f"  process        {r.instance_id or '-'}",
    ]
    if r.error:
        lines.append(f"  error          {r.error}")
    elif r.note:
        lines.append(f"  note           {r.note}")
    if r.posted:
        lines.append(f"  posted         {len(r.posted)} message(s):")
        lines += [f"    {json.dumps(p, ensure_ascii=False)}" for p in r.posted]
    if r.traceback:
        lines += ["", r.traceback.rstrip("\n")]
    print("\n".join(lines))
    return OK


def _no_runs(actor: str | None, status: str | None) -> str:
    """What an empty history means, naming the filters: ``no failed runs of counter``."""
    what = f"no {status} runs" if status else "no runs"
    return f"{what} of {actor}" if actor else f"{what} recorded"


def cmd_next(args: argparse.Namespace) -> int:
    config = _config(args)
    cfg = _config_actor(config, args.actor)
    schedule = build_schedule(cfg.schedule)
    after: datetime = args.after or datetime.now(UTC)
    if after.tzinfo is None:
        after = after.replace(tzinfo=schedule.tz)
    stored = run_async(_stored_tasks(config, cfg.name)) if _may_have_database(config) else {}
    task = stored.get(cfg.name)
    if task is not None and task["schedule_hash"] == schedule.hash() and task["paused"]:
        print(f"note: {cfg.name} is paused ({task['paused_reason']}); these slots run "
              f"after 'discord-actor resume {cfg.name}'", file=sys.stderr)
    if not cfg.enabled:
        print(f"note: {cfg.name} is disabled in {config.path}", file=sys.stderr)
    if cfg.schedule.type == "immediate":
        print(f"note: {cfg.name} runs once each time the server starts; no slot to predict",
              file=sys.stderr)
    if cfg.schedule.type == "none":
        print(f"note: {cfg.name} has no configured schedule; it runs by its keyed schedules "
              f"(discord-actor schedules list {cfg.name}) and triggers", file=sys.stderr)
    slots, done = predicted_slots(schedule, task, after, args.count, datetime.now(UTC))
    if not slots and cfg.schedule.type == "once":
        print(f"note: {_once_note(cfg, after, done, args.after is None)}", file=sys.stderr)
    if args.json:
        _print_json([s.astimezone(schedule.tz).isoformat() for s in slots])
    else:
        for s in slots:
            print(format_slot(s.astimezone(schedule.tz)))
    return OK


def _once_note(cfg: ActorConfig, after: datetime, done: bool, now: bool) -> str:
    """Why a once actor has no slot to show: it ran, or its time is not after ``after``."""
    at = cfg.schedule.at
    slot = format_slot(at.astimezone(build_schedule(cfg.schedule).tz)) if at else "?"
    if done:
        return f"{cfg.name} ran its one slot ({slot}); it will not run again"
    if now:
        return (f"{cfg.name} runs once, at {slot}, which has passed and has not run yet: a "
                f'server that starts does what catch_up = "{cfg.schedule.catch_up}" says')
    return f"{cfg.name} runs once, at {slot}, which is not after {format_slot(after)}"


def _may_have_database(config: Config) -> bool:
    """False when no URL is set and the embedded server's data directory does not exist yet."""
    from discord_actor.db import resolve_url

    return resolve_url(config.database) is not None or Path(config.database.data_dir).exists()


def predicted_slots(
    schedule: Schedule, task: Any, after: datetime, count: int, now: datetime
) -> tuple[list[datetime], bool]:
    """The next ``count`` slots after ``after`` as the runtime computes them; True when a
    ``once`` actor has run its slot. ``check`` and ``next`` both answer with this.

    With the actor's stored task (same schedule), from its stored next slot: an interval's grid
    is anchored there. Without one, as for a new task: an interval's first slot is ``now``.
    """
    anchor: datetime | None = None
    if task is not None and task["schedule_hash"] == schedule.hash():
        anchor = task["next_run"]
        if anchor is None:  # a once actor that ran: no slot left
            return [], True
    elif schedule.config.type == "interval":
        anchor = schedule.initial_slot(now)
    if anchor is not None and anchor == after:
        after -= timedelta(microseconds=1)  # the anchor itself is a slot (a new interval's)
    return schedule.upcoming(after, count, anchor), False


async def _stored_tasks(config: Config, actor: str | None = None) -> dict[str, Any]:
    """The task rows by actor name (every actor's, or just ``actor``'s); an unreachable
    database is noted, not fatal."""
    timeout = min(config.database.connect_timeout_seconds, NEXT_DB_TIMEOUT)
    try:
        async with _store(config, connect_timeout_seconds=timeout) as (store, _):
            if store is None:
                return {}
            if actor is not None:
                row = await store.operator.task(actor)
                return {} if row is None else {actor: row}
            return {r["actor"]: r for r in await store.operator.status()}
    except HostError as e:
        print(f"note: computing from the schedule alone, without the stored next slot: {e}",
              file=sys.stderr)
        return {}


# --------------------------------------------------------------------------------------------
# pause, resume, trigger


def _operator() -> Operator:
    """The CLI's operator: the OS user, on this host."""
    import getpass
    import socket

    from discord_actor.db.records import Operator

    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container with an unnamed uid)
        who = f"uid {os.getuid()}"
    return Operator(who, f"CLI on host {socket.gethostname()}")


def cmd_pause(args: argparse.Namespace) -> int:
    config = _config(args)
    name = _config_actor(config, args.actor).name

    async def pause() -> PauseResult:
        async with _operations(config) as ops:
            return await ops.pause(name, args.reason, _operator())

    result = run_async(pause())
    print(f"paused {name} ({result.reason}); resume with: discord-actor resume {name}")
    return OK


def cmd_resume(args: argparse.Namespace) -> int:
    config = _config(args)
    name = _config_actor(config, args.actor).name

    async def resume() -> ResumeResult:
        async with _operations(config) as ops:
            return await ops.resume(name, _operator())

    result = run_async(resume())
    if not result.was_paused:
        print(f"{name} was not paused; its failure count is reset")
    elif result.next_run is not None:
        print(f"resumed {name}; its slot passed while it was paused, so it runs next at "
              f"{when(result.next_run, result.timezone)}")
    else:
        print(f"resumed {name}")
    return OK


def cmd_trigger(args: argparse.Namespace) -> int:
    config = _config(args)
    name = _config_actor(config, args.actor).name

    async def trigger() -> TriggerResult:
        async with _operations(config) as ops:
            return await ops.trigger(name, _operator())

    if run_async(trigger()).already_pending:
        print(f"{name} was already triggered and has not started yet")
    else:
        print(f"triggered {name}: a running server starts it within a second "
              "(or at its next start)")
    return OK


# --------------------------------------------------------------------------------------------
# schedules list, add, remove


def cmd_schedules_list(args: argparse.Namespace) -> int:
    config = _config(args)

    async def listed() -> tuple[list[KeyedSchedule], ActorStatus | None]:
        async with _operations(config) as ops:
            found = await ops.list_schedules(
                args.actor, prefix=args.prefix, owner=args.owner, limit=args.limit + 1
            )
            if not found:
                return found, None
            actors = (await ops.status(args.actor.strip())).actors  # whether it holds them
            return found, next(iter(actors), None)

    found, actor = run_async(listed())
    if len(found) > args.limit:  # one more was asked for, to tell
        found = found[: args.limit]
        print(f"note: showing the {args.limit} soonest; there are more (--limit N)",
              file=sys.stderr)
    if found and actor is not None and actor.state in ("paused", "disabled", "broken"):
        why = {"paused": f"paused ({actor.paused_reason}); 'discord-actor resume {actor.actor}' "
                         "lets them run again",
               "disabled": f"disabled (enabled = false in {config.path})",
               "broken": f"broken (its setup() failed: {actor.setup_error})"}[actor.state]
        print(f"note: these do not run while {actor.actor} is {why}", file=sys.stderr)
    if args.json:
        _print_json([schedule_json(s) for s in found])
        return OK
    name = args.actor.strip()
    if not found:
        filters = [f"{what} {value!r}" for what, value in
                   (("key prefix", args.prefix), ("owner", args.owner)) if value is not None]
        print(f"no pending schedules of {name}" + (f" with {' and '.join(filters)}"
                                                    if filters else ""))
        return OK
    rows = [
        [
            shorten(s.key, SCHEDULE_KEY_WIDTH), when(s.next_run), describe_keyed(s),
            s.owner or "-", str(s.channel_id or "-"),
            "paused" if s.paused else (s.last_status or "-"),
            shorten(json.dumps(s.payload, ensure_ascii=False), SCHEDULE_PAYLOAD_WIDTH)
            if s.payload else "-",
        ]
        for s in found
    ]
    print("\n".join(table(["KEY", "NEXT RUN", "SCHEDULE", "OWNER", "CHANNEL", "LAST STATUS",
                             "PAYLOAD"], rows)))
    for s in found:
        if s.paused:
            print(f"{s.key} is paused by its circuit breaker; 'discord-actor resume {name}' "
                  "starts it afresh")
    return OK


def cmd_schedules_add(args: argparse.Namespace) -> int:
    config = _config(args)
    schedule = _schedule_spec(args, config)
    payload = _payload(args.payload)
    channel = _channel_id(args.channel)

    async def add() -> ScheduleAdded:
        async with _operations(config, migrate=True) as ops:
            return await ops.add_schedule(
                args.actor, args.key, schedule, payload=payload, channel_id=channel,
                owner=args.owner, replace=args.replace,
            )

    result = run_async(add())
    s = result.schedule
    what = {"added": "added", "replaced": "replaced", "unchanged": "already pending, unchanged:"}
    print(f"{what[result.outcome]} {s.actor} {s.key}: {describe_keyed(s)}, next run "
          f"{when(s.next_run)}")
    if isinstance(schedule, Once) and s.next_run is not None and s.next_run < datetime.now(UTC):
        print(f"note: {when(s.next_run)} has passed: a running server runs it at once",
              file=sys.stderr)
    return OK


def cmd_schedules_remove(args: argparse.Namespace) -> int:
    config = _config(args)

    async def remove() -> ScheduleRemoved:
        async with _operations(config) as ops:
            return await ops.remove_schedule(args.actor, args.key)

    removed = run_async(remove())
    print(f"removed {removed.actor} {removed.key}: it does not run again (its runs are kept)")
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


# --------------------------------------------------------------------------------------------
# migrate, prune


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _config(args)

    async def migrate() -> list[str]:
        database = await open_for(config, migrate=True)
        await database.close()
        return database.applied_migrations

    applied = run_async(migrate())
    label = database_label(config)
    if applied:
        for version in applied:
            print(f"applied {version}")
        print(f"{label}: up to date")
    else:
        print(f"{label}: already up to date")
    return OK


def cmd_prune(args: argparse.Namespace) -> int:
    from discord_actor import retention

    config = _config(args)
    days = args.older_than_days
    if days is None:
        days = float(config.server.run_retention_days)
    age = f"{days:g} day{'s' if days != 1 else ''}"

    async def dry_run() -> tuple[datetime | None, list[tuple[str, int]]]:
        async with _store(config) as (store, _):
            if store is None:
                return None, []
            cutoff = await store.retention.cutoff(days)
            return cutoff, await store.retention.prunable(cutoff)

    if args.dry_run:
        cutoff, counts = run_async(dry_run())
        total = sum(n for _, n in counts)
        when_text = "" if cutoff is None else f" (before {cutoff.isoformat(timespec='seconds')})"
        print(f"would delete {total} run{'s' if total != 1 else ''} finished more than {age} "
              f"ago{when_text}; nothing was deleted")
        if counts:
            print("\n".join(table(["ACTOR", "RUNS"], [[a, str(n)] for a, n in counts])))
        return OK

    async def prune() -> int | None:
        async with _store(config) as (store, _):
            if store is None:
                return 0
            result = await retention.prune(store, days)
            return None if result.busy and not result.deleted else result.deleted

    deleted = run_async(prune())
    if deleted is None:
        raise CliError("another process (a running server) is deleting old runs right now; "
                       "try again when it is done")
    print(f"deleted {deleted} run{'s' if deleted != 1 else ''} finished more than {age} ago")
    return OK


if __name__ == "__main__":
    sys.exit(main())
