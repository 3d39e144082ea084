"""What one schedule kind brings besides its slot maths, as the registry sees it.

A kind (``interval``, ``cron``...) is one module: its keys of ``[actors.schedule]`` and their
checks, its spec for keyed schedules (``Interval(...)``), its :class:`~.base.Schedule`, its
stored definition, its one-line description and its ``discord-actor schedules add`` flag. The
registry (``registry.py``) maps names to kinds; nothing else knows the list.

Kinds read TOML through :class:`TomlReader`, which the configuration's reader implements: a
kind reports a problem by key path, and the reader adds the file, the line and the dotted key.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar
from zoneinfo import ZoneInfo

from .base import CATCH_UP_POLICIES, Schedule, ScheduleConfig

KeyPath = tuple[str | int, ...]  # ("actors", 2, "schedule", "expression")
_D = TypeVar("_D")


class TomlReader(Protocol):
    """How a kind reads its keys and reports what is wrong with them.

    Each getter returns ``default`` when the key is absent or invalid (after reporting why).
    """

    def problem(self, path: KeyPath, message: str, *, at: KeyPath | None = None) -> None:
        """Report ``message`` about the key at ``path`` (its line: ``at``'s, if given)."""

    def describe(self, value: Any, path: KeyPath) -> str:
        """How a wrong value is named in a message (``integer 5``, never a secret)."""

    def require(self, table: dict[str, Any], key: str, path: KeyPath) -> bool:
        """Whether ``key`` is in ``table``; reports it missing if not."""

    def string(self, table: dict[str, Any], key: str, path: KeyPath, default: _D) -> str | _D:
        """A string."""

    def integer(self, table: dict[str, Any], key: str, path: KeyPath, default: _D, *,
                minimum: int | None = None, why: str = "") -> int | _D:
        """An integer, at least ``minimum``."""

    def number(self, table: dict[str, Any], key: str, path: KeyPath, default: _D, *,
               minimum: float = 0.0, allow_minimum: bool = False) -> float | _D:
        """A finite number greater than ``minimum`` (or equal, with ``allow_minimum``)."""


@dataclass(frozen=True)
class CliFlag:
    """The ``discord-actor schedules add`` option that asks for a kind (``--every SECONDS``)."""

    option: str
    metavar: str
    help: str

    @property
    def dest(self) -> str:
        """Where argparse keeps its value."""
        return "schedule_" + self.option.lstrip("-").replace("-", "_")


class ScheduleSpec(ABC):
    """What ``Schedules.add`` takes: ``Once(...)``, ``Interval(...)``, ``Cron(...)``, or the
    spec of another registered kind. Each kind's spec is a frozen dataclass."""

    @abstractmethod
    def schedule_config(self, default_zone: str) -> ScheduleConfig:
        """The configuration it stands for; ValueError if it cannot work. ``default_zone``:
        the server's, for a spec that names none."""

    def first_slot(self, schedule: Schedule, now: datetime) -> datetime | None:
        """Its first slot, added at ``now``."""
        return schedule.initial_slot(now)


def checked_common(jitter_seconds: object, catch_up: object) -> dict[str, Any]:
    """What every spec takes: jitter and catch-up, checked, as ScheduleConfig fields."""
    if catch_up not in CATCH_UP_POLICIES:
        raise ValueError(
            f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, not {catch_up!r}"
        )
    if not isinstance(jitter_seconds, int | float) or not jitter_seconds >= 0:
        raise ValueError("jitter_seconds must be >= 0")
    return {"jitter_seconds": float(jitter_seconds), "catch_up": catch_up}


class Kind(ABC):
    """One schedule kind: everything about it but its slot maths (its :attr:`schedule`)."""

    name: ClassVar[str]  # ``type`` in the configuration and in stored definitions
    schedule: ClassVar[type[Schedule]]  # computes its slots
    keys: ClassVar[tuple[str, ...]] = ()  # its own keys of [actors.schedule], as fields of:
    config_class: ClassVar[type[ScheduleConfig]] = ScheduleConfig  # a subclass for new keys
    #: False: not a ``type`` to write (an actor without [actors.schedule] has this kind).
    in_toml: ClassVar[bool] = True
    flag: ClassVar[CliFlag | None] = None  # its ``schedules add`` option, if it has one
    spec_usage: ClassVar[str | None] = None  # its spec as an example: ``Interval(seconds=...)``
    #: Where its flag and spec are listed among the others' (lowest first).
    listed: ClassVar[int] = 100

    def build(self, config: ScheduleConfig) -> Schedule:
        """Its Schedule for ``config``; ValueError with a readable message if it cannot work."""
        return self.schedule(config)

    def read_toml(self, table: dict[str, Any], path: KeyPath, reader: TomlReader,
                  common: ScheduleConfig, zone: ZoneInfo | None) -> ScheduleConfig:
        """``common`` (type, timezone, jitter, catch-up: already read) with this kind's keys
        of ``table`` read into it, their problems reported: each of :attr:`keys` is required
        and read by :meth:`read_key`. ``zone``: the time zone's, None if the table named an
        unknown one (already reported)."""
        values = {
            key: self.read_key(key, table, path, reader, zone)
            if reader.require(table, key, path) else None
            for key in self.keys
        }
        return _with_fields(self.config_class, common, values)

    def read_key(self, key: str, table: dict[str, Any], path: KeyPath, reader: TomlReader,
                 zone: ZoneInfo | None) -> Any:
        """The value of ``key`` (which ``table`` has), or None after reporting what is wrong."""
        raise NotImplementedError(f"schedule type {self.name!r} has no key {key!r}")

    def from_definition(self, data: Mapping[str, Any], common: ScheduleConfig) -> ScheduleConfig:
        """``common`` with this kind's fields from a stored definition (``registry.definition``)."""
        return _with_fields(self.config_class, common, {key: data.get(key) for key in self.keys})

    @abstractmethod
    def describe(self, config: ScheduleConfig) -> str:
        """One line a person reads: ``every 10 s``."""

    def describe_stored(self, config: ScheduleConfig) -> str:
        """A keyed schedule's line (its zone said too: its times are shown in it)."""
        return f"{self.describe(config)} ({config.timezone})"

    def spec_from_flag(self, value: str, zone: str | None, default_zone: str) -> ScheduleSpec:
        """The spec that ``--flag value`` asks for (``zone``: ``--timezone``); ValueError with
        the message to show if ``value`` is not what the flag takes."""
        raise NotImplementedError(f"schedule type {self.name!r} has no flag")


def _with_fields(config_class: type[ScheduleConfig], common: ScheduleConfig,
                 fields: Mapping[str, Any]) -> ScheduleConfig:
    """``common`` as a ``config_class`` (a kind's own ScheduleConfig subclass) with ``fields``."""
    base = {f.name: getattr(common, f.name) for f in dataclasses.fields(ScheduleConfig)}
    return config_class(**(base | dict(fields)))
