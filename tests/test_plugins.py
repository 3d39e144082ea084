"""Loading actors from actors_dir, dotted paths and entry points; every failure explained."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from discord_actor.actor import Actor, FunctionActor
from discord_actor.config import ConfigError, load_config
from discord_actor.plugins import load_actors

MODULES = {
    "good_class.py": """
        from discord_actor import Actor, RunContext
        class Good(Actor):
            platform = "none"
            async def run(self, ctx: RunContext) -> None: ...
    """,
    "good_function.py": """
        from discord_actor import RunContext, actor
        @actor(platform="console")
        async def greet(ctx: RunContext) -> None: ...
    """,
    "two.py": """
        from discord_actor import RunContext, actor
        @actor
        async def first(ctx: RunContext) -> None: ...
        @actor
        async def second(ctx: RunContext) -> None: ...
    """,
    "empty.py": "X = 1\n",
    "syntax.py": "def broken(:\n",
    "raises.py": "import os\n\nraise RuntimeError('cannot start without FEED_URL')\n",
    "sync_function.py": """
        from discord_actor import actor
        @actor
        def not_async(ctx): ...
    """,
    "wants_discord.py": """
        from discord_actor import Actor, RunContext
        class Poster(Actor):
            platform = "discord"
            async def run(self, ctx: RunContext) -> None: ...
    """,
}


def project(tmp_path: Path, actors: list[tuple[str, str]]) -> Path:
    (tmp_path / "actors").mkdir()
    for name, source in MODULES.items():
        (tmp_path / "actors" / name).write_text(textwrap.dedent(source))
    entries = "".join(
        f'\n[[actors]]\nname = "{name}"\nmodule = "{module}"\n'
        'schedule = { type = "immediate" }\n'
        for name, module in actors
    )
    path = tmp_path / "actor_server.toml"
    path.write_text(f'[database]\nurl = "postgresql://localhost/x"\n{entries}')
    return path


def test_class_function_and_named_actors_load(tmp_path: Path) -> None:
    path = project(
        tmp_path,
        [("a", "good_class"), ("b", "good_function"), ("c", "two:second"),
         ("d", "discord_actor.testing.sample_actor")],
    )
    loaded = load_actors(load_config(path))
    assert loaded["a"].platform == "none" and type(loaded["a"].instance).__name__ == "Good"
    assert loaded["b"].platform == "console" and isinstance(loaded["b"].instance, FunctionActor)
    assert type(loaded["c"].instance).__name__ == "second"
    assert isinstance(loaded["d"].instance, Actor)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("no_such_module", "no module 'no_such_module'"),
        ("empty", "defines no actor"),
        ("two", "defines several actors (first, second); name one as module = \"two:NAME\""),
        ("syntax", "SyntaxError: invalid syntax"),
        ("raises", "RuntimeError: cannot start without FEED_URL"),
        ("sync_function", "must be async def"),
        ("wants_discord", "posts to Discord but has no channel_id"),
        ("two:third", "module 'two' has no 'third'"),
    ],
)
def test_each_failure_names_the_actor_module_cause_and_line(
    tmp_path: Path, module: str, expected: str
) -> None:
    path = project(tmp_path, [("ok", "good_class"), ("bad", module)])
    with pytest.raises(ConfigError) as e:
        load_actors(load_config(path))
    (problem,) = e.value.problems
    assert problem.key == "actors[1].module"
    assert problem.line == 11  # the `module` line of the second [[actors]] entry
    assert "'bad'" in problem.message and expected in problem.message
    if module in ("syntax", "raises"):
        line = 1 if module == "syntax" else 3
        assert f"{module}.py, line {line})" in problem.message
    assert "Traceback" not in str(e.value)


def test_all_failures_are_reported_together(tmp_path: Path) -> None:
    path = project(tmp_path, [("x", "empty"), ("y", "syntax"), ("z", "good_class")])
    with pytest.raises(ConfigError) as e:
        load_actors(load_config(path))
    assert [p.key for p in e.value.problems] == ["actors[0].module", "actors[1].module"]
