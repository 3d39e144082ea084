"""Drive a real runtime on a real database from a test, stepping time with a fake clock.

``ActorHarness`` builds a ``Runtime`` for the given actors without background loops. ``tick``
steps the clock through a span, stopping at each slot and retry that falls due in it, as a
server running all along would; ``advance`` jumps over a span in one move, as a server that
was down sees it (missed slots run as their ``catch_up`` says). Both wait until the runs are
recorded and return them.
``run_actor_once`` runs one actor once and returns the recorded run; ``ActorRunner`` (the
``run_actor`` fixture) runs actors again and again within one test, their state carried over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..actor import Actor, Posted
from ..alerts import AlertSink
from ..clock import FakeClock
from ..config.model import ActorConfig, Config, DatabaseConfig, DiscordConfig, ServerConfig
from ..db import Database
from ..db.records import from_row, json_column
from ..enums import RunStatus, ScheduleKind, Trigger
from ..platforms import Platform, every_platform
from ..plugins import LoadedActor, _as_actor_class, _load_one, make_importable
from ..runtime import Runtime
from ..scheduler import WINDOW_ROWS
from ..schedules.base import ScheduleConfig
from ..schedules.immediate import NO_SCHEDULE as NO_SCHEDULE_TYPE

#: At most this many moments in one ``tick``: a longer span is likely a mistake (an interval of
#: a millisecond ticked for a day); ``advance`` jumps over it.
MAX_TICK_STEPS = 10_000


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
    status: RunStatus
    trigger: Trigger
    attempt: int
    scheduled_for: datetime
    error_type: str | None
    error_message: str | None
    posted: list[dict[str, Any]]
    state: dict[str, Any]  # the actor's stored state after the run
    consecutive_failures: int = 0  # the circuit breaker's count after the run
    paused: bool = False  # the circuit breaker (or an operator) paused the actor
    paused_reason: str | None = None
    key: str | None = None  # the keyed schedule that ran (its state is ``state``)

    @classmethod
    def from_records(cls, run: Mapping[str, Any], task: Mapping[str, Any]) -> RunRecord:
        """A run as the store's ``run`` reads it, with its task's row as it is now."""
        return from_row(
            cls,
            run,
            status=RunStatus(run["status"]),
            trigger=Trigger(run["trigger"]),
            posted=json_column(run["posted"]),
            state=json_column(task["state"]),
            consecutive_failures=task["consecutive_failures"],
            paused=task["paused"],
            paused_reason=task["paused_reason"],
            key=task["key"],
        )


#: ``actor_config``'s schedule unless told: a run at the harness's start (its first ``tick``).
IMMEDIATE = ScheduleConfig(type=ScheduleKind.IMMEDIATE.value)
#: An actor without ``[actors.schedule]``: it runs only by its keyed schedules and triggers.
NO_SCHEDULE = ScheduleConfig(type=NO_SCHEDULE_TYPE)


def actor_config(
    name: str,
    module: str = "",
    *,
    schedule: ScheduleConfig | None = IMMEDIATE,
    **overrides: Any,
) -> ActorConfig:
    """An ``[[actors]]`` entry built in code: the keyword arguments are its keys, with the
    file's defaults (``platform``: the actor's own; ``timeout_seconds``: 300 ...).

    One default differs, so that a test's first ``tick`` runs the actor: the schedule is
    ``immediate``. ``schedule=None`` is an entry without ``[actors.schedule]``: the actor runs
    only by its keyed schedules and triggers.
    """
    return ActorConfig(
        name=name,
        module=module or name,
        schedule=NO_SCHEDULE if schedule is None else schedule,
        **overrides,
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


def _seconds(span: timedelta | float) -> timedelta:
    return span if isinstance(span, timedelta) else timedelta(seconds=span)


class ActorHarness:
    """A runtime without background loops, on a fake clock: ``tick`` steps time through a
    span, running each slot and retry at its moment; ``advance`` jumps over one.

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
            platforms=every_platform(self.platform),
            instance_id=instance_id,
            alerts=alerts,
        )
        self.store = self.runtime.store
        self.schedules = self.runtime.schedules  # keyed schedules, as bot code adds them

    async def __aenter__(self) -> ActorHarness:
        await self.runtime.start(loops=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()

    async def tick(self, span: timedelta | float = 0) -> list[RunRecord]:
        """Step the clock through ``span`` (seconds or a timedelta) as a server running all along
        would see it, and return the runs recorded on the way, in order.

        First whatever is due now runs; then the clock moves to each later moment within the
        span at which something falls due (an actor's slot, a keyed schedule's slot, a failed
        run's retry) and runs it, so that each run sees the state the one before left, with
        the trigger a live server gives (``schedule``, ``retry``). The clock ends at now +
        ``span``. ``advance`` jumps over a span instead.
        """
        target = self.clock.now() + _seconds(span)
        finished = await self._run_due()
        steps = 0
        while (at := await self._next_due(target)) is not None:
            if steps == MAX_TICK_STEPS:
                raise ValueError(
                    f"tick({_seconds(span).total_seconds():g} s) passes more than "
                    f"{MAX_TICK_STEPS} moments at which something is due: tick a shorter "
                    "span, or jump over it with advance()"
                )
            steps += 1
            self.clock.set(at)
            finished += await self._run_due()
        if self.clock.now() < target:
            self.clock.set(target)
        return finished

    async def advance(self, delta: timedelta | float = 0) -> list[RunRecord]:
        """Move the clock by ``delta`` in one jump, then run what is due, and return the runs.

        As a process that was down for ``delta`` sees it: the slots that passed (an actor's
        and its keyed schedules') are missed and run as each schedule's ``catch_up`` says
        (``latest``: the newest once, as a ``catch_up`` run); a retry that fell due meanwhile
        runs once, late. ``tick`` steps through the span instead.
        """
        self.clock.advance(delta)
        return await self._run_due()

    async def _run_due(self) -> list[RunRecord]:
        """Run everything due now, again and again until nothing is, and record it."""
        finished: list[RunRecord] = []
        while True:
            await self.runtime.sync()
            claimed = await self.runtime.run_due()
            if not claimed:
                return finished
            await self.runtime.wait_idle()
            for run in claimed:
                finished.append(await self.record(run.run_id))

    async def _next_due(self, until: datetime) -> datetime | None:
        """The earliest moment after now and up to ``until`` at which one of this harness's
        actors has a slot or a retry due (read from the database, as the scheduler does)."""
        now = self.clock.now()
        window = await self.store.runs.due_window(until, WINDOW_ROWS)
        due = [
            at
            for view in window.views
            if view.actor in self.runtime.actors
            for at in (view.due_at, view.retry_at)
            if at is not None and now < at <= until
        ]
        return min(due, default=None)

    async def record(self, run_id: int) -> RunRecord:
        row = await self.store.operator.run(run_id)
        assert row is not None, f"run {run_id} not found"
        task = await self.store.operator.task_row(row["task_id"])
        assert task is not None
        return RunRecord.from_records(row, task)


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
            await harness.store.operator.set_state(name, state)
        runs = await harness.tick()
        if not runs:
            raise AssertionError(f"actor {name!r} did not run")
        return runs[-1]


class ActorRunner:
    """Runs actors one run at a time on one database and fake clock: the ``run_actor`` fixture.

    The first call for an actor starts a harness for it and runs it (an ``immediate`` schedule
    by default: its start-up run). Each further call runs it again, state carried over: its
    pending retry if it has one (the clock moves to the retry's time), else a manual trigger.
    A different actor or configuration under the same name, or another name, restarts the
    harness one second later on the clock (one harness at a time: a runtime marks actors it
    does not know as removed).
    """

    def __init__(
        self,
        database: Database,
        *,
        clock: FakeClock | None = None,
        project: Callable[[], Config] | None = None,
    ) -> None:
        self.database = database
        self.clock = clock or FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
        self._project = project
        self._current: tuple[Any, ActorConfig, ActorHarness] | None = None

    @property
    def harness(self) -> ActorHarness | None:
        """The harness of the actor run last (its ``store``, ``runtime``, ``platform``)."""
        return None if self._current is None else self._current[2]

    async def __call__(
        self,
        actor: type[Actor] | Any,
        *,
        state: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        name: str | None = None,
        **config: Any,
    ) -> RunRecord:
        """Run ``actor`` (a class, an @actor function, or a name in the project's config) once
        more and return the recorded run; ``state`` replaces its stored state first."""
        impl, cfg = self._resolve(actor, settings, name, config)
        harness = await self._harness(impl, cfg)
        if state is not None:
            await harness.store.operator.set_state(cfg.name, state)
        runs = await harness.tick()
        if not runs:
            runs = await self._again(harness, cfg.name)
        return runs[-1]

    async def close(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            await current[2].__aexit__(None, None, None)

    def _resolve(
        self,
        actor: type[Actor] | Any,
        settings: dict[str, Any] | None,
        name: str | None,
        overrides: dict[str, Any],
    ) -> tuple[Any, ActorConfig]:
        if not isinstance(actor, str):
            cfg = actor_config(name or "actor_under_test", settings=settings or {}, **overrides)
            return actor, cfg
        if self._project is None:
            raise ValueError(f"run_actor({actor!r}): no project configuration to look it up in")
        project = self._project()
        try:
            configured = project.actor(actor)
        except KeyError:
            known = ", ".join(a.name for a in project.actors) or "none"
            raise ValueError(
                f"run_actor({actor!r}): no such actor in {project.path} (configured: {known})"
            ) from None
        if settings is not None:
            overrides["settings"] = settings
        if name is not None:
            overrides["name"] = name
        cfg = replace(configured, **overrides)
        make_importable(project.server.actors_dir)
        loaded = _load_one(project, cfg)
        return type(loaded.instance), cfg

    async def _harness(self, impl: Any, cfg: ActorConfig) -> ActorHarness:
        if self._current is not None:
            old_impl, old_cfg, harness = self._current
            if old_impl is impl and old_cfg == cfg:
                return harness
            await self.close()
            self.clock.advance(1)  # a new start: a new slot for an immediate schedule
        harness = ActorHarness(self.database, [(impl, cfg)], clock=self.clock)
        await harness.__aenter__()
        self._current = (impl, cfg, harness)
        return harness

    async def _again(self, harness: ActorHarness, name: str) -> list[RunRecord]:
        """Nothing was due: run the pending retry at its time, else trigger a run."""
        task = await harness.store.operator.task(name)
        assert task is not None, f"actor {name!r} has no task"
        if task["paused"]:
            raise AssertionError(f"actor {name!r} did not run: paused ({task['paused_reason']})")
        if not task["enabled"]:
            raise AssertionError(f"actor {name!r} did not run: it is disabled")
        retries = await harness.store.operator.retries(name)
        if retries:
            retry_at: datetime = retries[0]["retry_at"]
            if retry_at > self.clock.now():
                self.clock.set(retry_at)
        else:
            await harness.store.operator.trigger(name)
        runs = await harness.tick()
        if not runs:
            raise AssertionError(f"actor {name!r} did not run")
        return runs
