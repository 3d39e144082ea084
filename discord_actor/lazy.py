"""A package's public names imported on first use (PEP 562 module ``__getattr__``).

``discord_actor`` and ``discord_actor.testing`` export this way, so that importing either (or
any module inside them) loads only what is used: ``import discord_actor.schedules`` does not
pull in the database layer, asyncpg or discord.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the package whose ``globals()`` is ``namespace``:
    each name in ``where`` comes from the module named there, once, and is then kept."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
