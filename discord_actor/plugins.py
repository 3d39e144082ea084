"""Find and load the actor behind each ``[[actors]]`` entry.

``module`` names a module in ``actors_dir``, an entry point of the ``discord_actor.actors``
group (for installed packages), or a dotted import path; ``module:attr`` picks one actor when a
module defines several. Every failure becomes a configuration problem naming the actor, the
module, the cause and the line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from .actor import Actor, FunctionActor, FunctionActorSpec
from .config.lines import line_of
from .config.model import (
    ActorConfig,
    Config,
    ConfigError,
    Problem,
    needs_channel_id,
    platform_names,
)
from .config.reader import load_config
from .errors import DiscordActorError
from .schedules.immediate import NO_SCHEDULE

ENTRY_POINT_GROUP = "discord_actor.actors"


@dataclass(frozen=True)
class LoadedActor:
    config: ActorConfig
    instance: Actor
    platform: str  # effective: the config's, else the actor's own


class PluginError(DiscordActorError):
    """One actor could not be loaded; the message says why."""


def load_project(path: str | Path) -> tuple[Config, dict[str, LoadedActor]]:
    """Load the configuration and every actor, reporting all problems in one pass.

    When the configuration has problems, the modules of its sound ``[[actors]]`` entries are
    loaded anyway, so that their problems are listed with the configuration's own instead of
    appearing only once those are fixed.
    """
    try:
        config = load_config(path)
    except ConfigError as e:
        if e.partial is None:
            raise
        problems = list(e.problems)
        try:
            load_actors(e.partial)
        except ConfigError as more:
            problems += more.problems
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0)) from None
    return config, load_actors(config)


def make_importable(actors_dir: Path) -> None:
    """Put ``actors_dir`` first on ``sys.path`` (once), so that its modules import by name."""
    if str(actors_dir) not in sys.path:
        sys.path.insert(0, str(actors_dir))


def load_actors(config: Config) -> dict[str, LoadedActor]:
    """Load every configured actor (enabled or not); raise ConfigError listing all failures."""
    make_importable(config.server.actors_dir)
    loaded: dict[str, LoadedActor] = {}
    problems: list[Problem] = []
    for actor_config in config.actors:
        key = f"actors[{actor_config.index}]"
        try:
            loaded[actor_config.name] = _load_one(config, actor_config)
        except PluginError as e:
            problems.append(
                Problem(
                    _shown(config.path),
                    f"{key}.module",
                    str(e),
                    line_of(config.path, ("actors", actor_config.index, "module")),
                )
            )
    if problems:
        raise ConfigError(problems)
    return loaded


def _shown(path: Path) -> str:
    """The config path as the user would write it: relative to the working directory if inside."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# Many actors may share one module (an actor per guild or channel): look each module up once.
_targets: dict[tuple[Path, str], Any] = {}
_function_classes: dict[Any, type[Actor]] = {}


def _load_one(config: Config, actor_config: ActorConfig) -> LoadedActor:
    module_name, _, attr = actor_config.module.partition(":")
    key = (config.server.actors_dir, module_name)
    target = _targets.get(key)
    if target is None:
        target = _import_target(config.server.actors_dir, module_name, actor_config.name)
        _targets[key] = target
    if isinstance(target, ModuleType):
        found = _find_actor(target, attr, actor_config.name)
    else:
        found = target
    cls = _as_actor_class(found, actor_config.name)
    platform = actor_config.platform or cls.platform
    if platform not in platform_names():
        raise PluginError(
            f"actor {actor_config.name!r}: platform {platform!r} is not one of"
            f" {', '.join(platform_names())}"
        )
    scheduled = actor_config.schedule.type != NO_SCHEDULE  # keyed schedules bring their channel
    if needs_channel_id(platform, scheduled=scheduled) and not actor_config.channel_id:
        raise PluginError(
            f"actor {actor_config.name!r} posts to Discord but has no channel_id; add channel_id"
            " to its [[actors]] entry"
        )
    try:
        instance = cls(actor_config)
    except Exception as e:
        raise PluginError(
            f"actor {actor_config.name!r}: {cls.__name__}(config) failed: {_describe(e)}"
        ) from None
    return LoadedActor(config=actor_config, instance=instance, platform=platform)


def _import_target(actors_dir: Path, module_name: str, actor: str) -> Any:
    in_dir = (actors_dir / f"{module_name}.py").exists() or (actors_dir / module_name).is_dir()
    if not in_dir:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == module_name:
                try:
                    return ep.load()
                except Exception as e:
                    raise PluginError(
                        f"actor {actor!r}: entry point {ep.name!r} ({ep.value}) failed to load:"
                        f" {_describe(e)}"
                    ) from None
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise PluginError(
                f"actor {actor!r}: no module {module_name!r} in {actors_dir}, no entry point of"
                f" that name in group {ENTRY_POINT_GROUP!r}, and no importable module of that name"
            ) from None
        raise PluginError(
            f"actor {actor!r}: module {module_name!r} failed to import: {_describe(e)}"
        ) from None
    except Exception as e:
        raise PluginError(
            f"actor {actor!r}: module {module_name!r} failed to import: {_describe(e)}"
        ) from None


def _find_actor(module: ModuleType, attr: str, actor: str) -> Any:
    if attr:
        if not hasattr(module, attr):
            raise PluginError(f"actor {actor!r}: module {module.__name__!r} has no {attr!r}")
        return getattr(module, attr)
    found = [
        obj
        for obj in vars(module).values()
        if _is_actor_function(obj)
        or (
            inspect.isclass(obj)
            and issubclass(obj, Actor)
            and obj not in (Actor, FunctionActor)
            and obj.__module__ == module.__name__
        )
    ]
    if not found:
        raise PluginError(
            f"actor {actor!r}: module {module.__name__!r} ({module.__file__}) defines no actor:"
            " add an Actor subclass or an @actor async function"
        )
    if len(found) > 1:
        names = ", ".join(sorted(o.__name__ for o in found))
        raise PluginError(
            f"actor {actor!r}: module {module.__name__!r} defines several actors ({names});"
            f' name one as module = "{module.__name__}:NAME"'
        )
    return found[0]


def _is_actor_function(obj: Any) -> bool:
    return callable(obj) and isinstance(getattr(obj, "__discord_actor__", None), FunctionActorSpec)


def _as_actor_class(obj: Any, actor: str) -> type[Actor]:
    if inspect.isclass(obj) and issubclass(obj, Actor):
        return obj
    if _is_actor_function(obj):
        if not inspect.iscoroutinefunction(obj):
            raise PluginError(
                f"actor {actor!r}: @actor function {obj.__name__!r} must be async def"
            )
        cls = _function_classes.get(obj)
        if cls is None:
            spec: FunctionActorSpec = obj.__discord_actor__
            cls = type(
                obj.__name__,
                (FunctionActor,),
                {"function": staticmethod(obj), "platform": spec.platform},
            )
            _function_classes[obj] = cls
        return cls
    raise PluginError(
        f"actor {actor!r}: {obj!r} is neither an Actor subclass nor an @actor function"
    )


def actor_modules(actors: Mapping[str, LoadedActor]) -> list[ModuleType]:
    """The modules the loaded actors come from, each once, in config order."""
    found: dict[str, ModuleType] = {}
    for loaded in actors.values():
        cls = type(loaded.instance)
        origin = cls.function if issubclass(cls, FunctionActor) else cls
        module = inspect.getmodule(origin)
        if module is not None:
            found.setdefault(module.__name__, module)
    return list(found.values())


def _describe(error: BaseException) -> str:
    """The cause and the line, without a traceback."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} ({error.filename}, line {error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    user_frames = [f for f in frames if "importlib" not in f.filename]
    where = f" ({user_frames[-1].filename}, line {user_frames[-1].lineno})" if user_frames else ""
    return f"{type(error).__name__}: {error}{where}"
