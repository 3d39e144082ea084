"""The one table of schedule kinds, and what looks a kind up in it.

Adding a kind is its module and one line in :data:`KINDS` (or :func:`register` at run time);
every list of kinds (the ``type`` values the configuration accepts, its keys, the
``schedules add`` flags) is derived from the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from .base import DEFAULT_TIMEZONE, Schedule, ScheduleConfig, jittered, resumed_slot
from .cron import CronKind
from .immediate import ImmediateKind, NoScheduleKind
from .interval import IntervalKind
from .kind import Kind
from .once import OnceKind

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        IntervalKind(),
        CronKind(),
        OnceKind(),
        ImmediateKind(),
        NoScheduleKind(),
    )
}


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the table (replacing one of the same name); returns it."""
    KINDS[kind.name] = kind
    stored_schedule.cache_clear()
    return kind


def unregister(name: str) -> None:
    """Take the kind ``name`` out of the table (a test's kind, after the test)."""
    KINDS.pop(name, None)
    stored_schedule.cache_clear()


def kind_of(type_name: str) -> Kind:
    """The kind named ``type_name`` (any case); ValueError naming the known ones if none."""
    kind = KINDS.get(type_name.lower())
    if kind is None:
        expected = ", ".join(KINDS)
        raise ValueError(f"unknown schedule type {type_name!r} (expected one of {expected})")
    return kind


def toml_types() -> tuple[str, ...]:
    """The ``type`` values ``[actors.schedule]`` accepts."""
    return tuple(name for name, kind in KINDS.items() if kind.in_toml)


def toml_keys() -> dict[str, Kind]:
    """Each kind's own keys of ``[actors.schedule]`` → the (first) kind it belongs to."""
    owners: dict[str, Kind] = {}
    for kind in KINDS.values():
        for key in kind.keys:
            owners.setdefault(key, kind)
    return owners


def listed_kinds() -> list[Kind]:
    """The kinds a keyed schedule can be asked for by (a spec, a flag), in the order listed."""
    return sorted((k for k in KINDS.values() if k.spec_usage or k.flag), key=lambda k: k.listed)


def build_schedule(cfg: ScheduleConfig) -> Schedule:
    """The Schedule for a config; ValueError with a readable message if it cannot work."""
    return kind_of(cfg.type).build(cfg)


def describe(cfg: ScheduleConfig) -> str:
    """One line a person reads: ``every 10 s``, ``cron '0 9 * * 1-5' (Europe/Berlin)``."""
    return kind_of(cfg.type).describe(cfg)


def describe_stored(data: Mapping[str, Any]) -> str:
    """A keyed schedule's stored :func:`definition` in one line (its zone said too)."""
    cfg = from_definition(data)
    return kind_of(cfg.type).describe_stored(cfg)


def definition(cfg: ScheduleConfig, schedule: Schedule | None = None) -> dict[str, Any]:
    """A keyed schedule's whole definition as stored (its ``schedule`` column): when slots fall
    (:meth:`Schedule.normalized`) plus the zone they are shown in, jitter and catch-up.
    ``schedule``: the one already built from ``cfg``, if any."""
    schedule = schedule or build_schedule(cfg)
    return schedule.normalized() | {
        "timezone": schedule.tz.key,
        "jitter_seconds": cfg.jitter_seconds,
        "catch_up": cfg.catch_up,
    }


def from_definition(data: Mapping[str, Any]) -> ScheduleConfig:
    """The ScheduleConfig of a stored :func:`definition`."""
    common = ScheduleConfig(
        type=data["type"],
        timezone=data.get("timezone", DEFAULT_TIMEZONE),
        jitter_seconds=float(data.get("jitter_seconds", 0.0)),
        catch_up=data.get("catch_up", "latest"),
    )
    return kind_of(common.type).from_definition(data, common)


@lru_cache(maxsize=4096)
def stored_schedule(definition_json: str) -> Schedule:
    """The Schedule of a keyed schedule's stored definition (JSON text). Cached: schedules
    with equal definitions (every poll of a feed every 300 s) share one."""
    return build_schedule(from_definition(json.loads(definition_json)))


def schedule_of(
    actor_schedules: Mapping[str, Schedule], actor: str, keyed_definition: str | None
) -> Schedule:
    """A task's schedule: its actor's configured one, or a keyed schedule's stored one."""
    if keyed_definition is None:
        return actor_schedules[actor]
    return stored_schedule(keyed_definition)


def resume_slot(
    cfg: ScheduleConfig, task: Mapping[str, Any], now: datetime
) -> tuple[datetime, datetime, datetime] | None:
    """For a paused actor (``task``: its row) whose stored next slot passed: (that slot, the
    next slot after ``now``, its due time with jitter), which ``Store.resume`` puts in its
    place. None keeps the stored slot. ``discord-actor resume`` and ``/actors resume`` use it."""
    schedule = build_schedule(cfg)
    if not task["paused"] or task["schedule_hash"] != schedule.hash():
        return None
    new = resumed_slot(schedule, task["next_run"], now)
    if new is None:
        return None
    return task["next_run"], new, jittered(new, cfg.jitter_seconds)
