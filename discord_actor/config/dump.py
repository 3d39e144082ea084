"""Writing a configuration back as TOML: ``config show`` and the starter file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import tomli_w

from ..schedules.registry import kind_of
from .model import Config
from .redaction import REDACTED, redact_settings, redact_strings, redact_url


def dump_config(config: Config) -> str:
    """The resolved configuration as TOML that ``load_config`` accepts again, secrets redacted.

    Paths are absolute and every default is spelled out, so the output shows exactly what the
    runtime uses. The database password and secret-looking settings become ``***``.
    """
    top = {
        "server": plain(config.server),
        "database": plain(config.database),
        "discord": plain(config.discord),
        "http": plain(config.http),
    }
    top["database"]["url"] = redact_url(config.database.url)
    top["database"]["direct_url"] = redact_url(config.database.direct_url)
    for key in ("api_base_url", "gateway_url"):  # a proxy URL may carry credentials
        top["discord"][key] = redact_url(top["discord"][key])
    top = redact_strings(top)  # any other value that embeds a credential
    actors = []
    for a in config.actors:
        d = plain(a)
        del d["index"]
        settings = redact_settings(a.settings)
        d = redact_strings(d)
        d["settings"] = settings
        if not a.settings:
            del d["settings"]
        if not kind_of(a.schedule.type).in_toml:  # written as no [actors.schedule] at all
            del d["schedule"]
        actors.append(d)
    header = (f"# Resolved configuration from {config.path}\n"
              f"# Secrets are shown as {REDACTED}.\n\n")
    return header + render(top, actors)


def plain(obj: Any) -> Any:
    """Dataclasses to TOML-ready dicts: paths to strings, tuples to lists, None left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not None}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def render(top: dict[str, Any], actors: list[dict[str, Any]]) -> str:
    """TOML via tomli-w, each actor as an ``[[actors]]`` entry (tomli-w would inline short ones)."""
    chunks = [tomli_w.dumps(top)]
    for actor in actors:
        text = tomli_w.dumps({"actors": actor})
        assert text.startswith("[actors]\n")
        chunks.append("[[actors]]\n" + text.removeprefix("[actors]\n"))
    return _ARRAY.sub(_one_line_array, "\n".join(chunks))


# tomli-w writes every array one element per line; short arrays of plain scalars read better
# on one line (intents = ["guilds", "guild_messages"]).
_SCALAR = r'(?:"(?:[^"\\\n]|\\.)*"|[-+]?[0-9][0-9_.eE+-]*|true|false)'
_ARRAY = re.compile(rf"^(\S[^\n]* = )\[\n((?: {{4}}{_SCALAR},\n)+)\]$", re.MULTILINE)


def _one_line_array(m: re.Match[str]) -> str:
    items = [line.strip().removesuffix(",") for line in m.group(2).splitlines()]
    joined = f"{m.group(1)}[{', '.join(items)}]"
    return joined if len(joined) <= 100 else m.group(0)

