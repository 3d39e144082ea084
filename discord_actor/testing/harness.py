"""Drive a real runtime on a real database from a test, stepping time with a fake clock.

``ActorHarness`` builds a ``Runtime`` for the given actors without background loops; each
``tick`` moves the clock, runs whatever is due and waits until the runs are recorded.
``run_actor_once`` runs one actor once and returns the recorded run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..actor import Actor, Posted
from ..clock import FakeClock
from ..config import (
    ActorConfig,
    Config,
    DatabaseConfig,
    DiscordConfig,
    ScheduleConfig,
    ServerConfig,
)
from ..db import Database
from ..platforms import Platform
from ..plugins import LoadedActor, _as_actor_class
from ..runtime import AlertSink, Runtime


@dataclass
class RecordingPlatform:
    """A platform that keeps what actors post, for assertions."""

    name: str = "recording"
    posts: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        self.posts.append((actor.name, content, kwargs))
        return Posted(platform="recording", channel_id=actor.channel_id, content=content)


@dataclass(frozen=True)
class RunRecord:
    """One row of the runs table, as a test would check it."""

    id: int
    actor: str
    status: str
    trigger: str
    attempt: int
    scheduled_for: datetime
    error_type: str | None
    error_message: str | None
    posted: list[dict[str, Any]]
    state: dict[str, Any]  # the actor's stored state after the run


def actor_config(
    name: str,
    module: str = "",
    *,
    schedule: ScheduleConfig | None = None,
    **overrides: Any,
) -> ActorConfig:
    """An ActorConfig with test-friendly defaults (immediate schedule, console platform)."""
    return ActorConfig(
        name=name,
        module=module or name,
        schedule=schedule or ScheduleConfig(type="immediate", timezone="UTC"),
        **{"platform": "console", **overrides},
    )


def make_config(
    database: DatabaseConfig,
    actors: Iterable[ActorConfig] = (),
    *,
    path: Path | None = None,
    **server: Any,
) -> Config:
    """A Config built in code, for tests that do not need a TOML file."""
    here = path or Path.cwd() / "actor_server.toml"
    return Config(
        path=here,
        server=ServerConfig(actors_dir=here.parent / "actors", **server),
        database=database,
        discord=DiscordConfig(),
        actors=tuple(replace(a, index=i) for i, a in enumerate(actors)),
    )


def load(actor: type[Actor] | Any, config: ActorConfig) -> LoadedActor:
    """Turn an Actor subclass or an @actor function into a LoadedActor for ``config``."""
    cls: type[Actor] = _as_actor_class(actor, config.name)
    return LoadedActor(
        config=config, instance=cls(config), platform=config.platform or cls.platform
    )


class ActorHarness:
    """A runtime without background loops, on a fake clock; see ``tick``.

    ``actors`` pairs each implementation (Actor subclass or @actor function) with its config.
    """

    def __init__(
        self,
        database: Database,
        actors: Sequence[tuple[Any, ActorConfig]],
        *,
        clock: FakeClock | None = None,
        platform: Platform | None = None,
        instance_id: str | None = None,
        alerts: AlertSink | None = None,
        **server: Any,
    ) -> None:
        self.clock = clock or FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
        self.platform = platform or RecordingPlatform()
        self.config = make_config(database.config, [cfg for _, cfg in actors], **server)
        loaded = {
            cfg.name: load(impl, cfg)
            for (impl, _), cfg in zip(actors, self.config.actors, strict=True)
        }
        self.runtime = Runtime(
            self.config,
            database,
            loaded,
            clock=self.clock,
            platforms={"console": self.platform, "discord": self.platform, "none": self.platform},
            instance_id=instance_id,
            alerts=alerts,
        )
        self.store = self.runtime.store

    async def __aenter__(self) -> ActorHarness:
        await self.runtime.start(loops=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()

    async def tick(self, advance: timedelta | float = 0) -> list[RunRecord]:
        """Advance the clock, run everything due (repeatedly), return the recorded runs."""
        if advance:
            self.clock.advance(advance)
        finished: list[RunRecord] = []
        while True:
            await self.runtime.sync()
            claimed = await self.runtime.run_due()
            if not claimed:
                return finished
            await self.runtime.wait_idle()
            for run in claimed:
                finished.append(await self.record(run.run_id))

    async def record(self, run_id: int) -> RunRecord:
        row = await self.store.run(run_id)
        assert row is not None, f"run {run_id} not found"
        task = await self.store.task(row["actor"])
        assert task is not None
        return RunRecord(
            id=row["id"],
            actor=row["actor"],
            status=row["status"],
            trigger=row["trigger"],
            attempt=row["attempt"],
            scheduled_for=row["scheduled_for"],
            error_type=row["error_type"],
            error_message=row["error_message"],
            posted=json.loads(row["posted"]),
            state=json.loads(task["state"]),
        )


async def run_actor_once(
    database: Database,
    actor: type[Actor] | Any,
    *,
    state: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    name: str = "actor_under_test",
    **config: Any,
) -> RunRecord:
    """Run ``actor`` once (with ``state`` as its stored state) and return the recorded run."""
    cfg = actor_config(name, settings=settings or {}, **config)
    async with ActorHarness(database, [(actor, cfg)]) as harness:
        if state is not None:
            await harness.store.set_state(name, state)
        runs = await harness.tick()
        if not runs:
            raise AssertionError(f"actor {name!r} did not run")
        return runs[-1]
