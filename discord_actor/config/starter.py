"""``discord-actor init``: a starter ``actor_server.toml`` (every default spelled out and
commented) and an actor that runs on the console without a token."""

from __future__ import annotations

import re
from pathlib import Path

from ..enums import ScheduleKind
from ..schedules.registry import toml_types
from .dump import plain, render
from .model import (
    CONFIG_FILE,
    DatabaseConfig,
    DiscordConfig,
    HttpConfig,
    ServerConfig,
    platform_names,
)


def write_starter(directory: Path, force: bool = False) -> list[Path]:
    """Write a starter ``actor_server.toml`` and ``actors/hello.py`` into ``directory``.

    Refuses (``FileExistsError`` naming the file, nothing written) if either exists, unless
    ``force``. Returns the paths written. The starter runs on the console with no token.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    hello_path = directory / "actors" / "hello.py"
    if not force:
        for p in (config_path, hello_path):
            if p.exists():
                raise FileExistsError(
                    f"{p} already exists; not overwriting it (use --force to replace it)"
                )
    hello_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(_starter_config(), encoding="utf-8")
    hello_path.write_text(_STARTER_ACTOR, encoding="utf-8")
    return [config_path, hello_path]


def _choices(names: tuple[str, ...]) -> str:
    return " | ".join(f'"{name}"' for name in names)


_TYPE_CHOICES = _choices(toml_types())

_STARTER_HEADER = """\
# discord-actor server configuration. Every key is optional unless marked required;
# the values below are the defaults. Reference: docs/configuration.md.
#
# ${VAR} and ${VAR:-default} in string values are replaced from the environment.
# Secrets never go in this file: the bot token is read from the variable named by
# discord.token_env (unset -> a dry run that prints posts on the console), and a
# database password belongs in DATABASE_URL.

"""

_STARTER_FOOTER = """
# A Discord actor on a cron schedule, for when the bot has a token:
#
# [[actors]]
# name = "daily_digest"
# module = "daily_digest"              # actors/daily_digest.py, or a dotted import path
# platform = "discord"
# channel_id = 123456789012345678
# timeout_seconds = 120
# retry = { attempts = 3, backoff_seconds = 5, max_backoff_seconds = 300 }
# settings = { top_n = 10 }
#
# [actors.schedule]
""" + f"# type = \"cron\"                        # {_TYPE_CHOICES}\n" + """\
# expression = "0 9 * * 1-5"           # Debian cron: 09:00 on weekdays
# timezone = "Europe/Berlin"
# catch_up = "latest"                  # after downtime: "latest" | "skip" | "all"
"""

# Trailing comments for the starter file, by (table, key); "actors" is the [[actors]] entry.
_STARTER_COMMENTS = {
    ("server", "actors_dir"): "relative to this file; put on sys.path",
    ("server", "timezone"): "default for schedules without their own",
    ("server", "max_concurrent_runs"): "across all actors in this process",
    ("server", "max_consecutive_failures"): "circuit breaker: pause an actor after this many",
    ("server", "lease_seconds"): "a process silent this long is presumed dead",
    ("server", "poll_interval_seconds"): "how often to look for work changed elsewhere",
    ("server", "run_retention_days"): "finished runs older than this are deleted",
    ("server", "log_runs"): '"all" | "failures": "failures" logs no line per succeeded run',
    ("database", "url"): "empty -> embedded PostgreSQL under data_dir",
    ("database", "schema"): "all tables live in this PostgreSQL schema",
    ("database", "max_pool_size"): "one connection is kept for the runtime itself",
    ("database", "acquire_timeout_seconds"): "waiting for a free pooled connection",
    ("database", "idle_timeout_seconds"): "close connections idle this long (0 = never)",
    ("database", "pooler"): '"none" | "session" | "transaction" (PgBouncer, Supabase 6543)',
    ("database", "direct_url"): "not through the pooler: LISTEN, migrations",
    ("discord", "token_env"): "the variable that holds the token, not the token",
    ("discord", "owner_ids"): "may use admin commands",
    ("discord", "admin_role_ids"): "may use admin commands",
    ("discord", "alert_channel_id"): "failure and circuit-breaker alerts (0 = off)",
    ("discord", "intents"): '"default" = all but privileged (members, presences, ...)',
    ("discord", "command_guild_ids"): "sync /actors to these guilds; [] = globally",
    ("discord", "api_base_url"): "REST API (or a proxy in front of it)",
    ("discord", "gateway_url"): "gateway (or a gateway proxy)",
    ("discord", "requests_per_second"): "the token's global limit, shared by its processes",
    ("http", "enabled"): "health, /metrics, JSON API and dashboard",
    ("http", "host"): "loopback: GETs need no token; else all do",
    ("http", "token_env"): "the variable that holds the operators' token",
    ("actors", "name"): "required, unique",
    ("actors", "module"): "required: actors/hello.py",
    ("actors", "platform"): f"{_choices(platform_names())}; console prints posts",
    ("actors", "max_instances"): "overlapping runs of this actor",
    ("actors", "max_connections"): "this actor's share of the shared pool",
    ("actors.schedule", "type"): _TYPE_CHOICES,
    ("actors.schedule", "seconds"): "fixed rate: slots do not drift with run time",
    ("actors.schedule", "catch_up"): 'after downtime: "latest" | "skip" | "all"',
}


def _starter_config() -> str:
    d, db = ServerConfig(actors_dir=Path("actors")), DatabaseConfig()
    server = plain(d) | {"actors_dir": "actors"}
    database = plain(db) | {"url": "${DATABASE_URL:-}", "data_dir": str(db.data_dir),
                             "direct_url": "${DIRECT_URL:-}"}
    del database["statement_cache_size"]  # follows pooler; a key set here would pin it
    hello = {
        "name": "hello",
        "module": "hello",
        "enabled": True,
        "platform": "console",
        "timeout_seconds": 60,
        "max_instances": 1,
        "max_connections": 1,
        "settings": {"greeting": "hello"},
        "schedule": {"type": ScheduleKind.INTERVAL.value, "seconds": 10, "catch_up": "latest"},
    }
    top = {"server": server, "database": database, "discord": plain(DiscordConfig()),
           "http": plain(HttpConfig())}
    text = render(top, [hello])
    out, table = [], ""
    for line in text.split("\n"):
        header = re.fullmatch(r"\[\[?([^\]]+)\]\]?", line)
        if header:
            table = header.group(1)
        key = line.split(" = ", 1)[0]
        comment = _STARTER_COMMENTS.get((table, key)) if " = " in line else None
        out.append(f"{line:<40} # {comment}" if comment else line)
    return _STARTER_HEADER + "\n".join(out) + _STARTER_FOOTER


_STARTER_ACTOR = '''\
"""A starter actor: says hello on every run and counts its runs in durable state."""

from discord_actor import Actor, RunContext


class Hello(Actor):
    async def run(self, ctx: RunContext) -> None:
        runs = int(ctx.state.get("runs", 0)) + 1
        ctx.state["runs"] = runs  # saved with the run record, so it survives restarts
        greeting = ctx.settings.get("greeting", "hello")
        await ctx.post(f"{greeting} (run {runs})")
'''

