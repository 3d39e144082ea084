"""What the commands print, in one place: tables, JSON, times, notes and messages.

A command hands what it read or did to one function here, which prints it: answers on stdout,
notes, hints and errors on stderr (so that ``status --json | jq`` reads only the answer). A
message a refusal raises (``CliError``) is worded where the refusal is decided; it is printed
by :func:`error`.

The text helpers the CLI shares with ``/actors`` and the dashboard (``table``, ``when``,
``shorten``...) are in ``operations``, which loads the database layer and asyncpg: the functions
that show what the database answered import them when called (by then they are loaded), so
that ``init``, ``config show``, ``--help`` and usage errors answer without them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discord_actor.config.dump import dump_config
from discord_actor.config.model import ActorConfig, Config
from discord_actor.enums import RunStatus, ScheduleKind, Trigger
from discord_actor.schedules.base import Prediction, Schedule, format_slot
from discord_actor.schedules.immediate import NO_SCHEDULE
from discord_actor.schedules.registry import build_schedule, describe, describe_stored

if TYPE_CHECKING:
    from discord_actor.keyed import KeyedSchedule
    from discord_actor.operations import (
        ActorStatus,
        PauseResult,
        ResumeResult,
        RunInfo,
        ScheduleAdded,
        ScheduleRemoved,
        Status,
        TriggerResult,
    )

HISTORY_ERROR_WIDTH = 60  # characters of a run's error in the history table
SCHEDULE_KEY_WIDTH = 40  # characters of a key in the schedules and history tables
SCHEDULE_PAYLOAD_WIDTH = 50  # characters of a payload in the schedules table


# --------------------------------------------------------------------------------------------
# Every command


def error(message: str) -> None:
    """A failure, as one line (the exit code says which kind)."""
    print(f"discord-actor: error: {message}", file=sys.stderr)


def problems(lines: Iterable[object]) -> None:
    """The configuration's problems, one a line (each with its file, line and key)."""
    for problem in lines:
        print(problem, file=sys.stderr)


def interrupted() -> None:
    print("discord-actor: interrupted", file=sys.stderr)


def note(text: str) -> None:
    """Something to know about the answer, beside it."""
    print(f"note: {text}", file=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from discord_actor.operations import table

    print("\n".join(table(headers, rows)))


def plural(n: int, word: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {word}{'s' if n != 1 else ''}"


# --------------------------------------------------------------------------------------------
# init, check, config show


def written(paths: Iterable[Path], directory: Path) -> None:
    """What ``init`` wrote, and the commands to run next."""
    for path in paths:
        print(f"wrote {path}")
    where = "" if directory.resolve() == Path.cwd() else f"cd {directory} && "
    print(f"next: {where}discord-actor check && discord-actor run")


def configuration(config: Config) -> None:
    """The resolved configuration as TOML, secrets redacted."""
    print(dump_config(config), end="")


@dataclass(frozen=True)
class CheckedActor:
    """One actor as ``check`` found it: loaded on ``platform``, its slots predicted from its
    stored ``task`` (None: none yet)."""

    actor: ActorConfig
    platform: str
    schedule: Schedule
    found: Prediction
    task: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """As ``check --json`` prints it (times in the schedule's zone)."""
        a, found = self.actor, self.found
        return {
            "actor": a.name,
            "module": a.module,
            "platform": self.platform,
            "enabled": a.enabled,
            "schedule": describe(a.schedule),
            "next": [s.astimezone(self.schedule.tz).isoformat() for s in found.slots],
            "missed": _missed(self.schedule, found),
            "done": found.done,
        }


def checked(config: Config, actors: Sequence[CheckedActor], failures: Sequence[str] | None,
            *, as_json: bool) -> None:
    """What ``check`` found, after each actor (``checked_actor``, in text): with ``--setup`` the
    hooks that failed; as text, or one JSON object (``setup_failures``: null without
    ``--setup``)."""
    if as_json:
        print_json({"config": str(config.path), "actors": [a.to_json() for a in actors],
                    "setup_failures": None if failures is None else list(failures)})
        if failures:
            problems(failures)
        return
    if failures is not None:
        hooks_checked(config, failures)
    if not failures:
        print(f"{config.path}: OK, {plural(len(config.actors), 'actor')}")


def checked_actor(checked: CheckedActor) -> None:
    """One actor as ``check`` found it, in text: its module, platform, schedule and next slots
    (the same as ``next`` gives, and a missed slot worded the same)."""
    actor, schedule, found, task = checked.actor, checked.schedule, checked.found, checked.task
    flags = "" if actor.enabled else ", disabled"
    print(f"{actor.name}  (module {actor.module}, platform {checked.platform}{flags})")
    print(f"  schedule: {describe(actor.schedule)}")
    if found.slots:
        print(f"  next: {', '.join(format_slot(s.astimezone(schedule.tz)) for s in found.slots)}")
    elif actor.schedule.type == ScheduleKind.IMMEDIATE:
        print("  next: when the server starts")
    elif actor.schedule.type == NO_SCHEDULE:
        print("  next: by its keyed schedules ('discord-actor schedules list "
              f"{actor.name}') and triggers")
    elif found.done:
        print(f"  next: none, it {_once_done(actor, task)}")
    else:
        print("  next: none")
    missed = _missed(schedule, found)
    if missed is not None:
        print(f"  missed: {missed}")


def _missed(schedule: Schedule, found: Prediction) -> str | None:
    """What a server does with a slot that passed while none ran (None: no slot is late):
    the scheduler's decision (``found.due``), in words."""
    due = found.due
    if due is None or (due.action == "run" and due.trigger != Trigger.CATCH_UP):
        return None  # none due, or due on time: it simply runs
    slot = format_slot(due.scheduled_for.astimezone(schedule.tz))
    policy = f'catch_up = "{schedule.config.catch_up}"'
    if due.action == "skip":
        if due.next_run is None:
            return f"its slot {slot} has passed and has not run: {policy} skips it, for good"
        return (f"{plural(due.skipped, 'slot')} up to {slot} passed while no server ran: "
                f"{policy} skips them, and it goes on at its next slot")
    if schedule.config.catch_up == "all" and due.next_run is not None:
        return (f"its slot {slot} has passed and has not run: {policy} runs it and every slot "
                "missed after it, oldest first, as catch_up runs, as soon as a server is running")
    verb = "is" if due.skipped == 1 else "are"
    older = (f"; the {plural(due.skipped, 'older missed slot')} before it {verb} not run"
             if due.skipped else "")
    return (f"its slot {slot} has passed and has not run: {policy} runs it once, late, as a "
            f"catch_up run, as soon as a server is running{older}")


def _once_done(actor: ActorConfig, task: Mapping[str, Any] | None) -> str:
    """A once actor whose one slot is behind it: it ran (or was skipped), for good."""
    at = actor.schedule.at
    slot = format_slot(at.astimezone(build_schedule(actor.schedule).tz)) if at else "?"
    if task is not None and task["last_status"] == RunStatus.SKIPPED:
        return (f"skipped its one slot ({slot}, catch_up = \"skip\"); it will not run again")
    return f"ran its one slot ({slot}); it will not run again"


def needs_token(env: str, names: Sequence[str]) -> None:
    """Discord actors without a token: what ``run`` will do about it."""
    note(f"no bot token in ${env}: 'discord-actor run' needs one for the discord actors "
         f"({', '.join(names)}); 'discord-actor run --dry-run' prints their posts on the "
         "console instead")


def hooks_checked(config: Config, failures: Sequence[str]) -> None:
    """What ``check --setup`` found running each actor's setup() and teardown()."""
    if failures:
        problems(failures)
        print(f"{config.path}: {len(failures)} actor hook(s) failed", file=sys.stderr)
    else:
        print("setup() and teardown() hooks: OK")



# --------------------------------------------------------------------------------------------
# status, history, next


def show_status(report: Status, *, as_json: bool) -> None:
    """Every actor's state: a table, then a line for each broken or paused one. The next-run
    column of a broken or paused one says so instead of its stored slot (kept in JSON, with
    ``paused`` and ``broken``): a slot it is held from has often passed."""
    from discord_actor.operations import when

    if not report.initialized:
        note("no server has run on this database yet (start 'discord-actor run')")
    for process in report.polling:  # on stderr, beside the JSON too
        note(f"process {process}; it polls (changes made elsewhere reach it at its next poll)")
    if as_json:
        print_json([a.to_json() for a in report.actors])
        return
    if not report.actors:
        print("no actors configured")
        return
    rows = [
        [
            a.actor, a.state, a.held or when(a.next_run, a.timezone), a.last_status or "-",
            when(a.last_run_at, a.timezone), str(a.consecutive_failures), str(a.running),
            str(a.keyed), a.schedule or "-",
        ]
        for a in report.actors
    ]
    print_table(["ACTOR", "STATE", "NEXT RUN", "LAST STATUS", "LAST RUN", "FAILURES", "RUNNING",
                 "KEYED", "SCHEDULE"], rows)
    for a in report.actors:
        if a.broken:
            print(f"{a.actor} is broken: setup() failed: {a.setup_error} (it does not run; "
                  "fix it and restart the server, 'discord-actor check --setup' tries it)")
        if a.paused:
            print(f"{a.actor} is paused: {a.paused_reason} "
                  f"(resume with: discord-actor resume {a.actor})")
        if a.refusal is not None:
            print(f"{a.actor}: {a.refusal}")


def show_history(
    runs: Sequence[RunInfo], *, actor: str | None, status: str | None, as_json: bool
) -> None:
    """Recorded runs, newest first; ``actor`` and ``status``: the filters asked for."""
    from discord_actor.operations import format_duration, one_line, shorten, when

    if as_json:
        print_json([r.to_json() for r in runs])
        return
    if not runs:
        what = f"no {status} runs" if status else "no runs"
        print(f"{what} of {actor}" if actor else f"{what} recorded")
        return
    rows = [
        [
            str(r.id), r.actor, shorten(one_line(r.key or ""), SCHEDULE_KEY_WIDTH),
            when(r.scheduled_for, r.timezone), format_duration(r.duration_ms),
            r.status, r.trigger, str(r.attempt),
            shorten(one_line(r.error or r.note or ""), HISTORY_ERROR_WIDTH),
        ]
        for r in runs
    ]
    print_table(["ID", "ACTOR", "KEY", "SCHEDULED FOR", "DURATION", "STATUS", "TRIGGER",
                 "ATTEMPT", "ERROR"], rows)
    if any(r.error_type for r in runs):
        print("a failed run's traceback: discord-actor history --show ID", file=sys.stderr)


def show_run(r: RunInfo, *, as_json: bool) -> None:
    """``history --show ID``: one run, with its traceback and what it posted."""
    from discord_actor.operations import format_duration, when

    if as_json:
        print_json(r.to_json(traceback=True))
        return
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


def without_stored_slot(reason: object) -> None:
    """The database could not be read: slots are computed as for a new task."""
    note(f"computing from the schedule alone, without the stored next slot: {reason}")


def computed_without_database(reason: object) -> None:
    """There is no database yet (none was created): slots are those of a first start."""
    note(f"{reason}: slots computed from the schedule alone, as for a first start")


def show_next(
    config: Config, actor: ActorConfig, schedule: Schedule, found: Prediction,
    task: Mapping[str, Any] | None, *, after: datetime | None, as_json: bool,
) -> None:
    """``next``: the slots in the schedule's zone, one a line (or a JSON array of ISO 8601
    strings), and on stderr what else to know: a missed slot (worded as ``check`` words it), a
    once actor done, no clock slots, disabled. A paused or broken actor says so first, on the
    line of its own before the slots it runs once resumed or repaired (in JSON: the note)."""
    name = actor.name
    held = None
    if task is not None and task["schedule_hash"] == schedule.hash():
        if task.get("setup_error"):
            held = (f"broken (setup() failed: {task['setup_error']}): no run until it is "
                    "fixed and the server restarted ('discord-actor check --setup' tries it)")
        elif task["paused"]:
            held = (f"paused ({task['paused_reason']}): no run until 'discord-actor resume "
                    f"{name}'")
    if held is not None:
        if as_json:
            note(f"{name} is {held}; these slots are those after it")
        else:
            print(f"{held}; then:" if found.slots else held)
    missed = _missed(schedule, found)
    if missed is not None:
        note(f"{name}: {missed}")
    if found.done:
        note(f"{name} {_once_done(actor, task)}")
    elif not found.slots and actor.schedule.type == ScheduleKind.ONCE and after is not None:
        at = actor.schedule.at
        slot = format_slot(at.astimezone(schedule.tz)) if at else "?"
        note(f"{name} runs once, at {slot}, which is not after {format_slot(after)}")
    if not actor.enabled:
        note(f"{name} is disabled in {config.path}")
    if actor.schedule.type == ScheduleKind.IMMEDIATE:
        note(f"{name} runs once each time the server starts; no slot to predict")
    if actor.schedule.type == NO_SCHEDULE:
        note(f"{name} has no configured schedule; it runs by its keyed schedules "
             f"(discord-actor schedules list {name}) and triggers")
    if as_json:
        print_json([s.astimezone(schedule.tz).isoformat() for s in found.slots])
    else:
        for s in found.slots:
            print(format_slot(s.astimezone(schedule.tz)))


# --------------------------------------------------------------------------------------------
# pause, resume, trigger


def paused(name: str, result: PauseResult) -> None:
    print(f"paused {name} ({result.reason}); resume with: discord-actor resume {name}")


def resumed(name: str, result: ResumeResult) -> None:
    from discord_actor.operations import when

    if not result.was_paused:
        print(f"{name} was not paused; its failure count is reset")
    elif result.next_run is not None:
        print(f"resumed {name}; its slot passed while it was paused, so it runs next at "
              f"{when(result.next_run, result.timezone)}")
    else:
        print(f"resumed {name}")


def triggered(name: str, result: TriggerResult) -> None:
    if result.already_pending:
        print(f"{name} was already triggered and has not started yet")
    else:
        print(f"triggered {name}: a running server starts it within a second "
              "(or at its next start)")


# --------------------------------------------------------------------------------------------
# schedules list, add, remove

def show_schedules(
    found: Sequence[KeyedSchedule],
    *,
    actor: str,
    status: ActorStatus | None,
    config: Config,
    limit: int,
    more: bool,
    prefix: str | None,
    owner: str | None,
    as_json: bool,
) -> None:
    """An actor's pending keyed schedules, soonest first (``more``: the first ``limit`` of
    more); ``status``: the actor's, to say when they do not run."""
    from discord_actor.operations import schedule_json, shorten, when

    if more:
        note(f"showing the {limit} soonest; there are more (--limit N)")
    if found and status is not None and status.state in ("paused", "disabled", "broken"):
        why = {"paused": f"paused ({status.paused_reason}); 'discord-actor resume "
                         f"{status.actor}' lets them run again",
               "disabled": f"disabled (enabled = false in {config.path})",
               "broken": f"broken (its setup() failed: {status.setup_error})"}[status.state]
        note(f"these do not run while {status.actor} is {why}")
    if as_json:
        print_json([schedule_json(s) for s in found])
        return
    if not found:
        filters = [f"{what} {value!r}" for what, value in
                   (("key prefix", prefix), ("owner", owner)) if value is not None]
        print(f"no pending schedules of {actor}" + (f" with {' and '.join(filters)}"
                                                     if filters else ""))
        return
    rows = [
        [
            shorten(s.key, SCHEDULE_KEY_WIDTH), when(s.next_run), describe_stored(s.schedule),
            s.owner or "-", str(s.channel_id or "-"),
            "paused" if s.paused else (s.last_status or "-"),
            shorten(json.dumps(s.payload, ensure_ascii=False), SCHEDULE_PAYLOAD_WIDTH)
            if s.payload else "-",
        ]
        for s in found
    ]
    print_table(["KEY", "NEXT RUN", "SCHEDULE", "OWNER", "CHANNEL", "LAST STATUS", "PAYLOAD"],
                rows)
    for s in found:
        if s.paused:
            print(f"{s.key} is paused by its circuit breaker; 'discord-actor resume {actor}' "
                  "starts it afresh")


def schedule_added(result: ScheduleAdded, *, runs_once: bool, as_json: bool) -> None:
    """What ``schedules add`` did; ``runs_once``: it was asked for once, at a time (a time
    that has passed is noted). JSON: the schedule as ``schedules list --json`` shows it, with
    ``outcome`` (added, replaced or unchanged)."""
    from discord_actor.operations import schedule_json, when

    s = result.schedule
    if runs_once and s.next_run is not None and s.next_run < datetime.now(UTC):
        note(f"{when(s.next_run)} has passed: a running server runs it at once")
    if as_json:
        print_json({"outcome": result.outcome, **schedule_json(s)})
        return
    what = {"added": "added", "replaced": "replaced", "unchanged": "already pending, unchanged:"}
    print(f"{what[result.outcome]} {s.actor} {s.key}: {describe_stored(s.schedule)}, next run "
          f"{when(s.next_run)}")


def schedule_removed(removed: ScheduleRemoved) -> None:
    print(f"removed {removed.actor} {removed.key}: it does not run again (its runs are kept)")


# --------------------------------------------------------------------------------------------
# migrate, prune


def migrated(label: str, applied: Sequence[str], *, as_json: bool) -> None:
    """The migrations ``migrate`` applied to the database ``label`` names."""
    if as_json:
        print_json({"database": label, "applied": list(applied)})
    elif applied:
        for version in applied:
            print(f"applied {version}")
        print(f"{label}: up to date")
    else:
        print(f"{label}: already up to date")


def _age(days: float) -> str:
    return f"{days:g} day{'s' if days != 1 else ''}"


def prunable(days: float, cutoff: datetime | None, counts: Sequence[tuple[str, int]], *,
             as_json: bool) -> None:
    """``prune --dry-run``: how many runs would go, per actor, and the cutoff."""
    total = sum(n for _, n in counts)
    if as_json:
        print_json({"dry_run": True, "older_than_days": days,
                    "cutoff": None if cutoff is None else cutoff.isoformat(),
                    "runs": total, "by_actor": dict(counts)})
        return
    before = "" if cutoff is None else f" (before {cutoff.isoformat(timespec='seconds')})"
    print(f"would delete {plural(total, 'run')} finished more than {_age(days)} "
          f"ago{before}; nothing was deleted")
    if counts:
        print_table(["ACTOR", "RUNS"], [[a, str(n)] for a, n in counts])


def pruned(days: float, deleted: int, *, as_json: bool) -> None:
    if as_json:
        print_json({"dry_run": False, "older_than_days": days, "deleted": deleted})
    else:
        print(f"deleted {plural(deleted, 'run')} finished more than {_age(days)} ago")
