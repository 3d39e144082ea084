"""A platform is one module and one line in ``platform_registry.PLATFORMS``: a platform defined
here, registered for one test, carries the post of an actor configured with it from
``actor_server.toml`` through the real runtime on a real database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Self

import pytest

from discord_actor.actor import Posted
from discord_actor.assembly import Assembly
from discord_actor.config import ActorConfig, ConfigError
from discord_actor.db import Database
from discord_actor.platform_registry import PLATFORMS
from discord_actor.plugins import load_project

ACTOR_PY = """
from discord_actor import RunContext, actor


@actor
async def courier(ctx: RunContext) -> None:
    await ctx.post("the eagle has landed", urgent=True)
"""


class PigeonPlatform:
    """Carries each post by pigeon, that is: keeps it."""

    name = "pigeon"

    def __init__(self, client: Any) -> None:
        self.client = client
        self.posts: list[tuple[str, str | None, dict[str, Any]]] = []

    @classmethod
    def for_client(cls, client: Any) -> Self:
        return cls(client)

    async def post(self, actor: ActorConfig, content: str | None, **kwargs: Any) -> Posted:
        self.posts.append((actor.name, content, kwargs))
        return Posted(platform="pigeon", channel_id=actor.channel_id, content=content)


@pytest.fixture
def pigeon(monkeypatch: pytest.MonkeyPatch) -> str:
    """``pigeon`` in the registry for this test only: the one line a new platform needs."""
    monkeypatch.setitem(PLATFORMS, "pigeon", f"{__name__}:PigeonPlatform")
    return "pigeon"


def write_project(root: Path, database_url: str, schema: str) -> Path:
    (root / "actors").mkdir()
    (root / "actors" / "courier_by_pigeon.py").write_text(ACTOR_PY)
    path = root / "actor_server.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [server]
            actors_dir = "actors"

            [database]
            url = {json.dumps(database_url)}
            schema = {json.dumps(schema)}

            [[actors]]
            name = "courier"
            module = "courier_by_pigeon"
            platform = "pigeon"
            channel_id = 42
            schedule = {{ type = "immediate" }}
            """
        )
    )
    return path


async def test_an_actor_posts_through_a_registered_platform(
    pigeon: str, tmp_path: Path, database: Database
) -> None:
    config, actors = load_project(write_project(tmp_path, database.url, database.schema))
    assert actors["courier"].platform == pigeon
    async with Assembly(config, actors, database=database) as runtime:
        platform = runtime.platforms[pigeon]
        assert isinstance(platform, PigeonPlatform) and platform.client is None
        async with asyncio.timeout(10):
            while not platform.posts:  # noqa: ASYNC110 (the platform has no event to wait on)
                await asyncio.sleep(0.02)
        await runtime.wait_idle()
    assert platform.posts == [("courier", "the eagle has landed", {"urgent": True})]
    posted = await database.pool.fetchval(
        f"SELECT r.posted FROM {database.schema}.runs r"
        f" JOIN {database.schema}.tasks t ON t.id = r.task_id WHERE t.actor = 'courier'"
    )
    [delivered] = json.loads(posted)
    assert (delivered["platform"], delivered["channel_id"], delivered["content"]) == (
        "pigeon", 42, "the eagle has landed"
    )


def test_an_unregistered_platform_is_a_configuration_error(
    tmp_path: Path, database_url: str, db_schema: str
) -> None:
    path = write_project(tmp_path, database_url, db_schema)
    with pytest.raises(ConfigError, match=r"'pigeon' is not one of"):
        load_project(path)


def test_without_a_bot_discord_actors_post_on_the_console_without_loading_discord() -> None:
    check = (
        "import sys\n"
        "from discord_actor.platforms import build_platforms\n"
        "from discord_actor.platforms.console import ConsolePlatform\n"
        "p = build_platforms(None)\n"
        "assert p['discord'] is p['console'] and isinstance(p['console'], ConsolePlatform)\n"
        "assert p.keys() == {'discord', 'console', 'none'}\n"
        "assert 'discord' not in sys.modules, 'discord.py was imported'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)
