"""Importing the package is cheap, and everything it exports is there.

``discord_actor/__init__.py`` imports its names on first use: a module that needs only the
schedules (the CLI's ``validate``, a config check) must not load the database layer, asyncpg or
discord.py on the way.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from types import ModuleType

import pytest

import discord_actor
import discord_actor.testing


def test_importing_the_package_and_schedules_loads_neither_asyncpg_nor_discord() -> None:
    code = (
        "import sys, discord_actor, discord_actor.schedules\n"
        "print(' '.join(sorted(name for name in ('asyncpg', 'discord') if name in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "", f"loaded by 'import discord_actor': {done.stdout.strip()}"


@pytest.mark.parametrize("package", [discord_actor, discord_actor.testing])
def test_every_exported_name_resolves(package: ModuleType) -> None:
    missing = [name for name in package.__all__ if getattr(package, name, None) is None]
    assert missing == []
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = package.NoSuchName


def test_actor_is_the_decorator_not_its_module() -> None:
    from discord_actor import actor

    assert inspect.isfunction(actor)
    assert discord_actor.actor is actor
