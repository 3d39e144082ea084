"""Schedules created at run time, per key: reminders, per-guild digests, one-off timers.

An actor has its configured schedule (if any) and any number of *keyed* schedules, each named
by a string the caller chooses (``"guild:7"``, ``"reminder:<interaction id>"``). Each is a task
row of its own, so it goes through the same claims, run records, retries, timeouts, circuit
breaker and exactly-once guarantees as a configured actor, and keeps its own ``ctx.state``.
The scheduler never loads them all: it reads what is due soon through the due-time index, so
100,000 pending reminders cost what is due, not how many there are.

    from discord_actor import Cron, Interval, Once

    await schedules.add("reminder", key="r:123", schedule=Once(at=when),
                        payload={"text": "stand up"}, channel_id=..., owner="user:42")
    await schedules.add("digest", key="guild:7", schedule=Cron("0 9 * * 1-5",
                                                               timezone="Europe/Berlin"))
    await schedules.remove("reminder", "r:123")
    await schedules.list("reminder", prefix="r:", owner="user:42")
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import datetime, timedelta
from typing import Any

from .clock import Clock
from .config.model import ActorConfig, Config
from .db.keyed import KeyConflict, LimitExceeded
from .db.records import KeyedRow, KeyedWrite, TaskSpec, stored_status
from .db.store import Store
from .enums import RunStatus
from .errors import ScheduleError, UnknownActor
from .schedules.base import Schedule, jittered
from .schedules.cron import Cron
from .schedules.interval import Interval
from .schedules.kind import ScheduleSpec
from .schedules.once import Once
from .schedules.registry import build_schedule, definition, listed_kinds, stored_schedule
from .storable import Unstorable, jsonb_json

__all__ = [
    "Cron",
    "Interval",
    "InvalidKey",
    "InvalidPayload",
    "InvalidSchedule",
    "KeyedSchedule",
    "NewSchedule",
    "Once",
    "ScheduleConflict",
    "ScheduleError",
    "ScheduleLimitReached",
    "Schedules",
    "UnknownActor",
]

MAX_KEY_CHARS = 200
MAX_OWNER_CHARS = 200


@dataclass(frozen=True)
class NewSchedule:
    """One item of :meth:`Schedules.add_many` (a mapping with these keys works too)."""

    key: str
    schedule: ScheduleSpec
    payload: Mapping[str, Any] | None = None
    channel_id: int | None = None
    owner: str | None = None


@dataclass(frozen=True)
class KeyedSchedule:
    """A pending keyed schedule, as :meth:`Schedules.list` and :meth:`Schedules.add` give it."""

    actor: str
    key: str
    next_run: datetime | None  # its next slot, retry or trigger, in the schedule's zone
    schedule: dict[str, Any]  # the stored definition: type, at/seconds/expression, timezone...
    payload: dict[str, Any] = field(default_factory=dict)
    channel_id: int | None = None
    owner: str | None = None
    paused: bool = False  # its own circuit breaker tripped
    last_status: RunStatus | None = None
    #: what ``add`` did: "added" (new, or armed again after it ran or was removed),
    #: "replaced" (pending with another definition) or "unchanged"; None from ``list``
    change: str | None = None


# -- errors: each says what is wrong and what to do ---------------------------------------------
# ScheduleError, the base of every error of this API, and UnknownActor (no actor of that name in
# the configuration) are in ``errors``: the operator's commands raise the same UnknownActor.


class InvalidKey(ScheduleError):
    """The key (or owner) is empty, too long or not a string."""


class InvalidSchedule(ScheduleError):
    """The schedule cannot work: bad cron expression, naive time without a zone, ..."""


class InvalidPayload(ScheduleError):
    """The payload is not a JSON object, or is over the actor's ``max_payload_bytes``."""


class ScheduleConflict(ScheduleError):
    """The key is pending with another definition: pass ``replace=True`` to change it."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


class ScheduleLimitReached(ScheduleError):
    """The actor (or the owner) has as many pending schedules as its limit allows."""

    def __init__(self, message: str, setting: str, limit: int, owner: str | None) -> None:
        super().__init__(message)
        self.setting = setting
        self.limit = limit
        self.owner = owner


# -- the API -------------------------------------------------------------------------------------


def actor_row_spec(cfg: ActorConfig, schedule: Schedule, now: datetime) -> TaskSpec:
    """What the actor's own row holds (its configured schedule): the runtime's reconcile and
    the first keyed schedule of an actor no server has started yet both write it."""
    first = schedule.initial_slot(now)
    return TaskSpec(
        actor=cfg.name,
        enabled=cfg.enabled,
        schedule_json=schedule.canonical,
        schedule_hash=schedule.hash(),
        max_instances=cfg.max_instances,
        max_attempts=cfg.retry.attempts,
        initial_slot=first,
        initial_due=None if first is None else jittered(first, cfg.schedule.jitter_seconds),
        on_every_start=schedule.on_every_start,
    )


class Schedules:
    """Add, remove and list the keyed schedules of the configured actors.

    One per runtime (``Runtime.schedules``, ``ActorRuntime.schedules``, ``ctx.schedules``); the
    CLI makes its own. Every call is one transaction; servers running elsewhere learn of a
    schedule due soon at once (a notification) and of later ones at their next look.
    """

    def __init__(self, store: Store, config: Config, clock: Clock | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock or Clock()
        self._actors = {a.name: a for a in config.actors}
        self._ensured: set[str] = set()
        # Due sooner than this: tell running servers now rather than at their next look.
        self._notify_within = timedelta(seconds=3 * config.server.poll_interval_seconds)

    async def add(
        self,
        actor: str,
        *,
        key: str,
        schedule: ScheduleSpec,
        payload: Mapping[str, Any] | None = None,
        channel_id: int | None = None,
        owner: str | None = None,
        replace: bool = False,
    ) -> KeyedSchedule:
        """Add a keyed schedule to ``actor``; returns it with its next run.

        Adding a key that is pending with the same definition does nothing; with another
        definition it raises :class:`ScheduleConflict` unless ``replace=True``.
        """
        item = NewSchedule(key, schedule, payload, channel_id, owner)
        cfg = self._actor(actor)
        row, first = self._row(cfg, item, self.clock.now())
        result = await self._write(cfg, [row], replace)
        if key in result.written:
            return KeyedSchedule(
                actor=actor,
                key=key,
                next_run=first,
                schedule=json.loads(row.definition_json),
                payload=dict(payload or {}),
                channel_id=channel_id,
                owner=owner,
                change="replaced" if key in result.replaced else "added",
            )
        found = await self.list(actor, key=key)
        return replace_fields(found[0], change="unchanged")

    async def add_many(
        self,
        actor: str,
        items: Iterable[NewSchedule | Mapping[str, Any]],
        *,
        replace: bool = False,
    ) -> int:
        """Add many keyed schedules in one transaction (all or none); returns how many were
        written (new, changed or armed again). Same rules as :meth:`add` for each."""
        cfg = self._actor(actor)
        now = self.clock.now()
        rows = []
        for i, item in enumerate(items):
            if not isinstance(item, NewSchedule):
                try:
                    item = NewSchedule(**item)
                except TypeError as e:
                    raise InvalidSchedule(f"add_many item {i}: {e}") from None
            try:
                rows.append(self._row(cfg, item, now)[0])
            except ScheduleError as e:
                raise type(e)(f"add_many item {i}: {e}") from None
        if not rows:
            return 0
        return len((await self._write(cfg, rows, replace)).written)

    async def remove(self, actor: str, key: str) -> bool:
        """Remove a keyed schedule; True if it was pending. Its run history stays."""
        self._actor(actor)
        return await self.store.keyed.remove(actor, key)

    async def list(
        self,
        actor: str,
        *,
        prefix: str | None = None,
        owner: str | None = None,
        key: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[KeyedSchedule]:
        """The actor's pending keyed schedules, soonest first."""
        self._actor(actor)
        rows = await self.store.keyed.pending(
            actor, prefix=prefix, owner=owner, key=key, limit=limit
        )
        out = []
        for r in rows:
            tz = stored_schedule(r["schedule"]).tz
            out.append(
                KeyedSchedule(
                    actor=actor,
                    key=r["key"],
                    next_run=None if r["next_at"] is None else r["next_at"].astimezone(tz),
                    schedule=json.loads(r["schedule"]),
                    payload=json.loads(r["payload"]) if r["payload"] else {},
                    channel_id=r["channel_id"],
                    owner=r["owner"],
                    paused=r["paused"],
                    last_status=stored_status(r["last_status"]),
                )
            )
        return out

    # -- checking and writing --------------------------------------------------------------

    def _actor(self, name: str) -> ActorConfig:
        cfg = self._actors.get(name)
        if cfg is None:
            known = sorted(self._actors)
            raise UnknownActor(
                name,
                known=known,
                message=f"unknown actor {name!r}: not in {self.config.path}"
                f" (actors: {', '.join(known) or 'none'})",
            )
        return cfg

    def _row(
        self, cfg: ActorConfig, item: NewSchedule, now: datetime
    ) -> tuple[KeyedRow, datetime | None]:
        _check_key("key", item.key)
        if item.owner is not None:
            _check_key("owner", item.owner, MAX_OWNER_CHARS)
        if item.channel_id is not None and (
            isinstance(item.channel_id, bool)
            or not isinstance(item.channel_id, int)
            or not 0 < item.channel_id < 2**63  # a bigint in the database
        ):
            raise InvalidSchedule(
                f"key {item.key!r}: channel_id must be a positive integer (a Discord channel"
                f" id), not {item.channel_id!r}"
            )
        spec = item.schedule
        if not isinstance(spec, ScheduleSpec):
            raise InvalidSchedule(
                f"key {item.key!r}: schedule must be {_spec_usages()}, not {type(spec).__name__}"
            )
        try:
            schedule_config = spec.schedule_config(self.config.server.timezone)
            schedule = build_schedule(schedule_config)
        except ValueError as e:
            raise InvalidSchedule(f"key {item.key!r}: {e}") from None
        definition_json = _canonical(definition(schedule_config, schedule))
        payload_json = _payload_json(cfg, item)
        # What "the same schedule" means for add: definition, payload, channel and owner.
        identity = "\n".join(
            (definition_json, payload_json or "null", str(item.channel_id), item.owner or "")
        )
        first = spec.first_slot(schedule, now)
        due = None if first is None else jittered(first, schedule_config.jitter_seconds)
        row = KeyedRow(
            key=item.key,
            definition_json=definition_json,
            definition_hash=hashlib.sha256(identity.encode()).hexdigest(),
            payload_json=payload_json,
            channel_id=item.channel_id,
            owner=item.owner,
            next_run=first,
            due_at=due,
        )
        return row, first

    async def _write(
        self, cfg: ActorConfig, rows: Sequence[KeyedRow], replace: bool
    ) -> KeyedWrite:
        now = self.clock.now()
        soon = now + self._notify_within
        notify = any(r.due_at is not None and r.due_at <= soon for r in rows)
        if cfg.name not in self._ensured:
            await self.store.configuration.ensure_actor(
                actor_row_spec(cfg, build_schedule(cfg.schedule), now)
            )
            self._ensured.add(cfg.name)
        try:
            result = await self.store.keyed.add(
                cfg.name,
                rows,
                replace=replace,
                max_pending=cfg.max_schedules,
                max_per_owner=cfg.max_schedules_per_owner,
                notify=notify,
            )
        except KeyConflict as e:
            shown = ", ".join(repr(k) for k in e.keys[:5])
            more = f" and {len(e.keys) - 5} more" if len(e.keys) > 5 else ""
            raise ScheduleConflict(
                f"actor {cfg.name!r}: key {shown}{more} already pending with another schedule,"
                " payload, channel or owner; pass replace=True to change it, or remove it first",
                e.keys,
            ) from None
        except LimitExceeded as e:
            if e.owner is not None:
                text = (
                    f"owner {e.owner!r} already has {e.pending} pending schedule(s) of actor"
                    f" {cfg.name!r}, and max_schedules_per_owner is {e.limit}"
                )
            else:
                text = (
                    f"actor {cfg.name!r} already has {e.pending} pending schedule(s); adding"
                    f" {e.adding} would pass max_schedules = {e.limit}"
                )
            raise ScheduleLimitReached(
                f"{text} (actors[{cfg.index}].{e.setting} in {self.config.path}): remove some"
                " first, or raise the limit",
                e.setting,
                e.limit,
                e.owner,
            ) from None
        return result


def _check_key(what: str, value: object, limit: int = MAX_KEY_CHARS) -> None:
    if not isinstance(value, str):
        raise InvalidKey(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidKey(f"{what} must not be empty")
    if len(value) > limit:
        raise InvalidKey(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    if "\x00" in value:
        raise InvalidKey(f"{what} {value!r} contains a NUL character")


def _payload_json(cfg: ActorConfig, item: NewSchedule) -> str | None:
    payload = item.payload
    if payload is None:
        return None
    where = f"key {item.key!r}"
    if not isinstance(payload, Mapping):
        raise InvalidPayload(
            f"{where}: payload must be a dict (a JSON object), not {type(payload).__name__}"
        )
    try:
        text = jsonb_json(dict(payload), "payload", canonical=True)
    except Unstorable as e:
        raise InvalidPayload(f"{where}: payload must hold only JSON values: {e}") from None
    size = len(text.encode())
    if size > cfg.max_payload_bytes:
        raise InvalidPayload(
            f"{where}: payload is {size} bytes as JSON; actor {cfg.name!r} allows at most"
            f" {cfg.max_payload_bytes} (actors[{cfg.index}].max_payload_bytes)"
        )
    return text


def _spec_usages() -> str:
    """``Once(at=...), Interval(seconds=...) or Cron(expression)``: the registered kinds'."""
    usages = [k.spec_usage for k in listed_kinds() if k.spec_usage]
    return f"{', '.join(usages[:-1])} or {usages[-1]}" if len(usages) > 1 else "".join(usages)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
