"""A schedule kind is one module and one registry line: a kind defined here, in the test, is
loaded from a real ``actor_server.toml`` (its problems named by file, line and key), gives its
slots, stores and describes itself, is asked for by a ``schedules add`` flag and by its spec,
and the runtime runs an actor on it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from discord_actor import RunContext, actor
from discord_actor.cli import _schedule_spec, build_parser
from discord_actor.config import ConfigError, dump_config, load_config
from discord_actor.db import Database
from discord_actor.operations import describe_keyed, describe_schedule
from discord_actor.schedules import (
    CliFlag,
    Kind,
    Schedule,
    ScheduleConfig,
    ScheduleSpec,
    TomlReader,
    build_schedule,
    definition,
    from_definition,
    register,
    stored_schedule,
    unregister,
)
from discord_actor.schedules.base import utc
from discord_actor.schedules.kind import KeyPath
from discord_actor.testing import ActorHarness

# -- the kind: every ``minutes`` minutes, on the hour's grid (:00, :15, :30, :45 for 15) ------

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # on an hour, so multiples of a divisor of 60 are


@dataclass(frozen=True)
class AlignedConfig(ScheduleConfig):
    minutes: int | None = None


class AlignedSchedule(Schedule):
    repeats = True

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        minutes = getattr(config, "minutes", None)
        if not isinstance(minutes, int) or not 0 < minutes <= 60 or 60 % minutes:
            raise ValueError(f"an aligned schedule needs minutes dividing 60, got {minutes!r}")
        self.minutes = minutes
        self.step = timedelta(minutes=minutes)

    def initial_slot(self, now: datetime) -> datetime:
        return self.next_after(now)

    def next_after(self, slot: datetime) -> datetime:
        k = (utc(slot, "slot") - _EPOCH) // self.step + 1
        return self._local(_EPOCH + k * self.step)

    def upcoming(
        self, after: datetime, count: int, anchor: datetime | None = None
    ) -> list[datetime]:
        slots: list[datetime] = []
        while len(slots) < count:
            after = self.next_after(after)
            slots.append(after)
        return slots

    def normalized(self) -> dict[str, Any]:
        return {"type": "aligned", "minutes": self.minutes}


@dataclass(frozen=True)
class Aligned(ScheduleSpec):
    minutes: int
    timezone: str | None = None

    def schedule_config(self, default_zone: str) -> ScheduleConfig:
        return AlignedConfig(type="aligned", timezone=self.timezone or default_zone,
                             minutes=self.minutes)


class AlignedKind(Kind):
    name = "aligned"
    schedule = AlignedSchedule
    keys = ("minutes",)
    config_class = AlignedConfig
    flag = CliFlag("--aligned", "MINUTES", "every MINUTES minutes on the hour's grid")
    spec_usage = "Aligned(minutes)"

    def read_key(self, key: str, table: dict[str, Any], path: KeyPath, reader: TomlReader,
                 zone: ZoneInfo | None) -> int | None:
        minutes = reader.integer(table, key, path, None, minimum=1)
        if minutes is not None and 60 % minutes:
            reader.problem((*path, key), f"must divide 60 (5, 10, 15, 20, 30 or 60), not {minutes}")
            return None
        return minutes

    def describe(self, config: ScheduleConfig) -> str:
        return f"every {getattr(config, 'minutes', '?')} min on the hour"

    def spec_from_flag(self, value: str, zone: str | None, default_zone: str) -> Aligned:
        try:
            return Aligned(int(value), timezone=zone)
        except ValueError:
            raise ValueError(f"--aligned {value!r} is not a number of minutes") from None


@pytest.fixture
def aligned() -> Iterator[Kind]:
    kind = register(AlignedKind())  # the one line that adds a kind
    yield kind
    unregister(kind.name)


# -- the configuration ------------------------------------------------------------------------

CONFIG = """\
[server]
timezone = "Europe/Berlin"

[[actors]]
name = "chime"
module = "chime"
platform = "console"

[actors.schedule]
type = "aligned"
{minutes}
"""


def write(tmp_path: Path, minutes: str = "minutes = 15") -> Path:
    path = tmp_path / "actor_server.toml"
    path.write_text(CONFIG.format(minutes=minutes), encoding="utf-8")
    return path


def problems(path: Path) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert all(p.file == str(path) for p in e.value.problems)
    return {p.key: (p.line, p.message) for p in e.value.problems}


def test_it_loads_from_a_real_file_and_dumps_back(tmp_path: Path, aligned: Kind) -> None:
    config = load_config(write(tmp_path))
    schedule = config.actors[0].schedule
    assert schedule == AlignedConfig(type="aligned", timezone="Europe/Berlin", minutes=15)
    again = tmp_path / "again" / "actor_server.toml"
    again.parent.mkdir()
    again.write_text(dump_config(config), encoding="utf-8")
    assert load_config(again).actors[0].schedule == schedule


def test_its_problems_name_file_line_and_key(tmp_path: Path, aligned: Kind) -> None:
    assert problems(write(tmp_path, "minutes = 7")) == {
        "actors[0].schedule.minutes": (11, "must divide 60 (5, 10, 15, 20, 30 or 60), not 7"),
    }
    assert problems(write(tmp_path, "minutes = 'often'")) == {
        "actors[0].schedule.minutes": (11, "must be an integer, not string 'often'"),
    }
    assert problems(write(tmp_path, "")) == {
        "actors[0].schedule.minutes": (9, "required key is missing"),
    }
    found = problems(write(tmp_path, "minutes = 15\nminute = 15\nseconds = 5"))
    assert found == {
        "actors[0].schedule.minute": (12, "unknown key; did you mean 'minutes'?"),
        "actors[0].schedule.seconds": (13, "only applies to interval schedules, not aligned"),
    }
    path = write(tmp_path)
    path.write_text(path.read_text().replace('"aligned"', '"alinged"'))
    line, message = problems(path)["actors[0].schedule.type"]
    assert line == 10 and "did you mean 'aligned'?" in message


def test_unregistered_it_is_an_unknown_type_with_an_unknown_key(tmp_path: Path) -> None:
    found = problems(write(tmp_path))
    assert found["actors[0].schedule.type"] == (
        10, "'aligned' is not one of 'interval', 'cron', 'once', 'immediate'"
    )
    line, message = found["actors[0].schedule.minutes"]
    assert line == 11 and message.startswith("unknown key (expected one of: type, timezone")


def test_slots_stored_definition_and_description(aligned: Kind) -> None:
    cfg = AlignedConfig(type="aligned", timezone="Europe/Berlin", minutes=20, jitter_seconds=3)
    schedule = build_schedule(cfg)
    now = datetime(2026, 1, 5, 12, 7, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    expected = [datetime(2026, 1, 5, 12, m, tzinfo=UTC).astimezone(berlin) for m in (20, 40)]
    assert schedule.initial_slot(now) == expected[0]
    assert schedule.upcoming(now, 2) == expected
    assert [s.utcoffset() for s in expected] == [timedelta(hours=1)] * 2  # in its zone

    stored = definition(cfg, schedule)
    assert stored == {"type": "aligned", "minutes": 20, "timezone": "Europe/Berlin",
                      "jitter_seconds": 3.0, "catch_up": "latest"}
    assert from_definition(stored) == cfg
    again = stored_schedule(json.dumps(stored))
    assert again.hash() == schedule.hash() and again.upcoming(now, 2) == expected

    assert describe_schedule(cfg) == "every 20 min on the hour"
    keyed: Any = type("Keyed", (), {"schedule": stored})()
    assert describe_keyed(keyed) == "every 20 min on the hour (Europe/Berlin)"


def test_schedules_add_has_its_flag(tmp_path: Path, aligned: Kind) -> None:
    parser = build_parser()
    args = parser.parse_args(["schedules", "add", "chime", "k", "--aligned", "30"])
    config = load_config(write(tmp_path))
    assert _schedule_spec(args, config) == Aligned(30)
    args = parser.parse_args(["schedules", "add", "chime", "k", "--aligned", "30",
                              "--timezone", "UTC"])
    assert _schedule_spec(args, config) == Aligned(30, timezone="UTC")
    with pytest.raises(SystemExit):  # one schedule flag at most
        parser.parse_args(["schedules", "add", "chime", "k", "--aligned", "30", "--every", "5"])


runs: list[tuple[str | None, str, datetime]] = []


@actor(platform="console")
async def chime(ctx: RunContext) -> None:
    runs.append((ctx.key, ctx.trigger, ctx.scheduled_for))


async def test_the_runtime_claims_its_slots(
    tmp_path: Path, aligned: Kind, database: Database
) -> None:
    runs.clear()
    cfg = load_config(write(tmp_path)).actors[0]
    start = datetime(2026, 1, 5, 12, 5, tzinfo=UTC)
    async with ActorHarness(database, [(chime, cfg)]) as h:
        h.clock.set(start)
        await h.schedules.add("chime", key="half-hourly", schedule=Aligned(30))
        assert await h.tick() == []
        first = await h.tick(timedelta(minutes=10))  # 12:15
        second = await h.tick(timedelta(minutes=15))  # 12:30: both
    quarter = datetime(2026, 1, 5, 12, 15, tzinfo=UTC)
    half = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    assert [(r.status, r.trigger, r.scheduled_for, r.key) for r in first] == [
        ("succeeded", "schedule", quarter, None)
    ]
    assert sorted((r.scheduled_for, r.key or "") for r in second) == [
        (half, ""), (half, "half-hourly")
    ]
    assert sorted((key or "", trigger) for key, trigger, _ in runs) == [
        ("", "schedule"), ("", "schedule"), ("half-hourly", "schedule")
    ]
