"""Sphinx configuration of the discord-actor documentation (``make docs``).

Markdown pages through MyST-Parser, the Furo theme, the API reference from the docstrings
(autodoc). The build needs no network: no intersphinx, so that ``make lint`` and the test
suite build the same site offline, with warnings as errors (``-W --keep-going -n``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # a checkout's package, installed or not

from discord_actor.version import __version__  # noqa: E402

project = "discord-actor"
author = "the discord-actor authors"
copyright = "the discord-actor authors"
release = __version__
version = __version__

# No napoleon: the docstrings are plain reST (``literals``), with no Google or NumPy sections.
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Anchors for every heading down to ####, so that `[text](page.md#a-heading)` links resolve
# (and a broken one is a warning, so an error in `make docs`).
myst_heading_anchors = 4
myst_enable_extensions = ["deflist"]

html_theme = "furo"
html_title = f"discord-actor {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Nitpicky mode (-n) reports every type name it cannot link. Without intersphinx (no network
# at build time) names from the standard library and from discord.py, asyncpg and Jinja2 have
# no target here; they are named, not linked.
nitpick_ignore_regex = [
    ("py:class", r"(abc|asyncio|datetime|collections\.abc|typing|pathlib|logging|argparse|"
                 r"enum|types|zoneinfo|contextlib|decimal|ssl)\..*"),
    ("py:class", r"(discord|asyncpg|aiohttp|jinja2)(\..*)?"),
    ("py:class", r"(Any|Path|datetime|timedelta|tzinfo|ZoneInfo|Callable|Awaitable|"
                 r"AsyncIterator|Iterator|Iterable|Mapping|Sequence|Coroutine|TypeVar|"
                 r"Self|ClassVar|Literal|Enum|StrEnum)"),
    ("py:obj", r"(typing|collections\.abc)\..*"),
    ("py:class", r"(os\.PathLike|AbstractAsyncContextManager|commands\.(Bot|AutoShardedBot))"),
    # The decorator's type variable (``actor(function: F) -> F``): not a class.
    ("py:class", r"discord_actor\.actor\.F"),
    # Internal types that public signatures name: the store and clock behind a runtime, a
    # loaded actor, the platform and alert sink a harness takes. Their modules are not part of
    # the API reference; the names are shown, not linked.
    ("py:class", r"(discord_actor\.[\w.]+\.)?(Store|Clock|LoadedActor|Platform|AlertSink|"
                 r"OperationError|EmbeddedPostgres)"),
]


def _config_signature(app: Any, what: str, name: str, obj: Any, options: Any,
                      signature: str | None, return_annotation: str | None
                      ) -> tuple[str, str | None] | None:
    """No constructor signature for the configuration dataclasses: their fields are the keys
    of ``actor_server.toml`` (configuration.md), and their annotations are strings that
    autodoc would split at the commas inside ``tuple[...]``."""
    if what == "class" and name.startswith("discord_actor.config.model."):
        return "", return_annotation
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _config_signature)
