"""Load and validate ``actor_server.toml``: every problem at once, each with its file, line,
dotted key and, for a near-miss key or value, a "did you mean".

A user fixes a broken file in one round instead of one error per restart. Values are read
by ``values.ValueReader`` (``${VAR}`` expansion is described there); this module reads the
sections, and each schedule kind reads its own keys (``schedules.kind.Kind.read_toml``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli  # tomllib's own code, as a compiled wheel: 3x faster on a file of 10,000 actors

from ..enums import ScheduleKind
from ..schedules.base import CATCH_UP_POLICIES, ScheduleConfig
from ..schedules.immediate import NO_SCHEDULE
from ..schedules.kind import KeyPath
from ..schedules.registry import kind_of, toml_keys, toml_types
from .lines import Duplicate, LineIndex, dotted
from .model import (
    INTENT_NAMES,
    LOG_RUNS,
    MENTION_KINDS,
    POOLERS,
    ActorConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    DiscordConfig,
    HttpConfig,
    Problem,
    RetryPolicy,
    ServerConfig,
    needs_channel_id,
    platform_names,
)
from .redaction import redact_url
from .values import ValueReader, zone_or_none


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate a configuration file.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values. Raises ``ConfigError``
    listing every problem found, sorted by line; a missing or unreadable file is one problem.
    """
    label = str(path)
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(label, "", "configuration file not found "
                                   "(create one with 'discord-actor init')")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(label, "", "is a directory, not a configuration file")]) \
            from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(label, "", f"not valid UTF-8 text ({e.reason})")]) from None
    except OSError as e:
        raise ConfigError([Problem(label, "", f"cannot read: {e.strerror or e}")]) from None
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as e:
        raise ConfigError(_syntax_problems(label, text, str(e))) from None
    reader = _Reader(label, text, os.environ if environ is None else environ)
    config = reader.read(data, file.resolve())
    if reader.problems:
        raise ConfigError(sorted(reader.problems, key=lambda p: p.line or 0), reader.partial)
    assert config is not None
    return config


_SERVER_KEYS = tuple(f.name for f in dataclasses.fields(ServerConfig))
_DATABASE_KEYS = tuple(f.name for f in dataclasses.fields(DatabaseConfig))
_DISCORD_KEYS = tuple(f.name for f in dataclasses.fields(DiscordConfig))
_HTTP_KEYS = tuple(f.name for f in dataclasses.fields(HttpConfig))
_RETRY_KEYS = tuple(f.name for f in dataclasses.fields(RetryPolicy))
_ACTOR_KEYS = tuple(
    f.name for f in dataclasses.fields(ActorConfig) if f.name not in ("index", "line")
)
_SCHEDULE_COMMON = ("type", "timezone", "jitter_seconds", "catch_up")  # each kind adds its own

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ACTOR_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Reader(ValueReader):
    """Walks the parsed TOML section by section, collecting problems instead of stopping at
    the first; ``partial`` is the sound part when there are problems (see ConfigError)."""

    def __init__(self, label: str, text: str, environ: Mapping[str, str]) -> None:
        super().__init__(label, text, environ)
        self.partial: Config | None = None

    def read(self, raw: dict[str, Any], file: Path) -> Config | None:
        data = self.expand(raw, ())
        self.known_keys(data, ("server", "database", "discord", "http", "actors"), ())
        base = file.parent
        server = self.server(self.table(data, "server", ("server",)) or {}, base)
        database = self.database(self.table(data, "database", ("database",)) or {}, base)
        discord = self.discord(self.table(data, "discord", ("discord",)) or {})
        http = self.http(self.table(data, "http", ("http",)) or {})
        actors = self.actors(data.get("actors", []), server, database)
        if self.problems:
            if not any(p.key.startswith("server.actors_dir") for p in self.problems):
                sound = tuple(a for a in actors if not self._has_problem(f"actors[{a.index}]"))
                self.partial = Config(path=file, server=server, database=database,
                                      discord=discord, actors=sound, http=http)
            return None
        return Config(path=file, server=server, database=database, discord=discord,
                      actors=actors, http=http)

    def _has_problem(self, key: str) -> bool:
        return any(p.key == key or p.key.startswith((f"{key}.", f"{key}["))
                   for p in self.problems)

    def server(self, t: dict[str, Any], base: Path) -> ServerConfig:
        p: KeyPath = ("server",)
        self.known_keys(t, _SERVER_KEYS, p)
        d = ServerConfig(actors_dir=Path("actors"))
        return ServerConfig(
            actors_dir=_resolve(base, self.path(t, "actors_dir", p, "actors")),
            timezone=self.zone(t, "timezone", p, d.timezone),
            max_concurrent_runs=self.integer(t, "max_concurrent_runs", p,
                                             d.max_concurrent_runs, minimum=1),
            max_consecutive_failures=self.integer(t, "max_consecutive_failures", p,
                                                  d.max_consecutive_failures, minimum=1),
            default_timeout_seconds=self.number(t, "default_timeout_seconds", p,
                                                d.default_timeout_seconds),
            shutdown_grace_seconds=self.number(t, "shutdown_grace_seconds", p,
                                               d.shutdown_grace_seconds, allow_minimum=True),
            run_retention_days=self.integer(t, "run_retention_days", p, d.run_retention_days,
                                            minimum=1),
            lease_seconds=self.number(t, "lease_seconds", p, d.lease_seconds),
            poll_interval_seconds=self.number(t, "poll_interval_seconds", p,
                                              d.poll_interval_seconds),
            log_runs=self.choice(t, "log_runs", p, d.log_runs, LOG_RUNS),
        )

    def path(self, t: dict[str, Any], key: str, p: KeyPath, default: str) -> str:
        value = self.string(t, key, p, default)
        if not value.strip():
            self.problem((*p, key), "must not be empty")
            return default
        return value

    def database(self, t: dict[str, Any], base: Path) -> DatabaseConfig:
        p: KeyPath = ("database",)
        self.known_keys(t, _DATABASE_KEYS, p)
        d = DatabaseConfig()
        url = self.string(t, "url", p, d.url).strip()
        if url and not url.startswith(("postgresql://", "postgres://")):
            scheme = f" (it starts with {url.split('://')[0]}://)" if "://" in url else ""
            self.problem((*p, "url"), f"must be a postgresql:// URL{scheme}, or empty for the "
                         "embedded server")
        schema = self.string(t, "schema", p, d.schema)
        if not _SCHEMA.fullmatch(schema):
            self.problem((*p, "schema"), f"{schema!r} is not a valid schema name (lower-case "
                         "letters, digits and '_', not starting with a digit, at most 63)")
        min_size = self.integer(t, "min_pool_size", p, d.min_pool_size, minimum=1)
        max_size = self.integer(t, "max_pool_size", p, d.max_pool_size, minimum=2,
                                why=" (the runtime keeps one pooled connection for its own "
                                "bookkeeping)")
        if min_size > max_size:
            self.problem((*p, "min_pool_size"),
                         f"{min_size} is more than database.max_pool_size ({max_size})")
        pooler = self.choice(t, "pooler", p, d.pooler, POOLERS)
        direct_url = self.string(t, "direct_url", p, d.direct_url).strip()
        if direct_url and not direct_url.startswith(("postgresql://", "postgres://")):
            self.problem((*p, "direct_url"), "must be a postgresql:// URL (the database's own "
                         "address, not the pooler's), or empty")
        # Behind a transaction-mode pooler, a named prepared statement made on one server
        # connection is unknown on the next ("prepared statement ... does not exist").
        cache_default = 0 if pooler == "transaction" else d.statement_cache_size
        cache_size = self.integer(t, "statement_cache_size", p, cache_default, minimum=0)
        if pooler == "transaction" and cache_size:
            self.problem((*p, "statement_cache_size"), f"must be 0 with database.pooler = "
                         f"\"transaction\" (got {cache_size}): a transaction-mode pooler keeps "
                         "no named prepared statements; leave the key out")
        return DatabaseConfig(
            url=url,
            data_dir=_resolve(base, self.path(t, "data_dir", p, str(d.data_dir))),
            schema=schema,
            min_pool_size=min_size,
            max_pool_size=max_size,
            acquire_timeout_seconds=self.number(t, "acquire_timeout_seconds", p,
                                                d.acquire_timeout_seconds),
            connect_timeout_seconds=self.number(t, "connect_timeout_seconds", p,
                                                d.connect_timeout_seconds),
            idle_timeout_seconds=self.number(t, "idle_timeout_seconds", p,
                                             d.idle_timeout_seconds, allow_minimum=True),
            command_timeout_seconds=self.number(t, "command_timeout_seconds", p,
                                                d.command_timeout_seconds),
            statement_cache_size=cache_size,
            pooler=pooler,
            direct_url=direct_url,
        )

    def discord(self, t: dict[str, Any]) -> DiscordConfig:
        p: KeyPath = ("discord",)
        self.known_keys(t, _DISCORD_KEYS, p)
        d = DiscordConfig()
        token_env = self.env_name(t, "token_env", p, d.token_env)
        shard_count = self.integer(t, "shard_count", p, d.shard_count, minimum=1)
        return DiscordConfig(
            token_env=token_env,
            owner_ids=self.ids(t, "owner_ids", p),
            admin_role_ids=self.ids(t, "admin_role_ids", p),
            alert_channel_id=self.integer(t, "alert_channel_id", p, d.alert_channel_id,
                                          minimum=0),
            intents=self.names(t, "intents", p, d.intents, ("default", *INTENT_NAMES),
                               "intent"),
            command_guild_ids=self.ids(t, "command_guild_ids", p),
            shard_count=shard_count,
            shard_ids=self.shard_ids(t, p, shard_count),
            api_base_url=self.url(t, "api_base_url", p, d.api_base_url, ("http", "https")),
            gateway_url=self.url(t, "gateway_url", p, d.gateway_url, ("ws", "wss")),
            requests_per_second=self.integer(t, "requests_per_second", p,
                                             d.requests_per_second, minimum=1),
        )

    def http(self, t: dict[str, Any]) -> HttpConfig:
        p: KeyPath = ("http",)
        self.known_keys(t, _HTTP_KEYS, p)
        d = HttpConfig()
        host = self.string(t, "host", p, d.host).strip()
        if not host or any(c.isspace() or c in "/@?#" for c in host):
            self.problem((*p, "host"), "must be an address to listen on, such as \"127.0.0.1\" "
                         f"(this machine only) or \"0.0.0.0\" (every interface), not {host!r}")
            host = d.host
        port = self.integer(t, "port", p, d.port, minimum=1)
        if port > 65535:
            self.problem((*p, "port"), f"must be at most 65535, not {port}")
            port = d.port
        token_env = self.env_name(t, "token_env", p, d.token_env)
        return HttpConfig(enabled=self.boolean(t, "enabled", p, d.enabled), host=host,
                          port=port, token_env=token_env)

    def env_name(self, t: dict[str, Any], key: str, p: KeyPath, default: str) -> str:
        """The name of an environment variable that holds a token (its default an example)."""
        name = self.string(t, key, p, default)
        if _ENV_NAME.fullmatch(name):
            return name
        # Never echo the value: a common mistake is pasting the token itself here.
        self.problem((*p, key), "must be the name of the environment variable that holds the "
                     f"token (e.g. \"{default}\"), never the token itself")
        return default

    def shard_ids(self, t: dict[str, Any], p: KeyPath,
                  shard_count: int | None) -> tuple[int, ...] | None:
        if "shard_ids" not in t:
            return None
        value, path = t["shard_ids"], (*p, "shard_ids")
        if not isinstance(value, list) or not value:
            self.problem(path, "must be a non-empty array of shard numbers (0 to shard_count"
                         f" - 1), not {self.describe(value, path)}")
            return None
        if "shard_count" not in t:
            self.problem(path, "needs discord.shard_count (the total number of shards across "
                         "all processes)")
        ids: list[int] = []
        for i, v in enumerate(value):
            n = self.integer_value(v, (*path, i), None, minimum=0)
            if n is None:
                continue
            if shard_count is not None and n >= shard_count:
                self.problem((*path, i), f"shard {n} does not exist: shard_count is "
                             f"{shard_count}, so shards are numbered 0 to {shard_count - 1}")
            elif n in ids:
                self.problem((*path, i), f"shard {n} is listed twice")
            else:
                ids.append(n)
        return tuple(ids)

    def url(self, t: dict[str, Any], key: str, p: KeyPath, default: str,
            schemes: tuple[str, ...]) -> str:
        """An absolute URL with one of ``schemes``; a REST base loses its trailing slash."""
        value = self.string(t, key, p, default).strip()
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in schemes or not rest.strip("/"):
            wanted = " or ".join(f"{s}://" for s in schemes)
            self.problem((*p, key), f"must be a URL starting with {wanted} (default "
                         f"{default!r}), not {self.describe(redact_url(value), (*p, key))}")
            return default
        return value.rstrip("/") if "http" in schemes else value

    def actors(self, value: Any, server: ServerConfig,
               database: DatabaseConfig) -> tuple[ActorConfig, ...]:
        if not isinstance(value, list):
            self.problem(("actors",), "must be an array of tables: write each actor under "
                         "its own [[actors]] header")
            return ()
        out: list[ActorConfig] = []
        seen: dict[str, int] = {}
        for i, t in enumerate(value):
            path: KeyPath = ("actors", i)
            if not isinstance(t, dict):
                self.problem(path, f"must be a table, not {self.describe(t, path)}")
                continue
            a = self.actor(t, i, server, database)
            if a is None:
                continue
            if a.name in seen:
                first = seen[a.name]
                line = self.lines.line_of(("actors", first, "name"))
                self.problem((*path, "name"), f"duplicate actor name {a.name!r} (also "
                             f"actors[{first}]{f', line {line}' if line else ''})")
            else:
                seen[a.name] = i
            out.append(a)
        return tuple(out)

    def actor(self, t: dict[str, Any], i: int, server: ServerConfig,
              database: DatabaseConfig) -> ActorConfig | None:
        p: KeyPath = ("actors", i)
        self.known_keys(t, _ACTOR_KEYS, p)
        name = ""
        if self.require(t, "name", p):
            name = self.string(t, "name", p, "")
            if isinstance(t["name"], str) and not _ACTOR_NAME.fullmatch(name):
                self.problem((*p, "name"), f"{name!r} is not a valid actor name (1 to 64 "
                             "letters, digits, '_' or '-')")
        module = ""
        if self.require(t, "module", p):
            module = self.string(t, "module", p, "")
            if isinstance(t["module"], str) and not _MODULE.fullmatch(module):
                self.problem((*p, "module"), f"{module!r} is not a module name (a module in "
                             "actors_dir such as 'daily_digest', or a dotted import path,"
                             " optionally"
                             " followed by ':NAME' to pick one actor of the module)")
        platform = self.choice(t, "platform", p, None, platform_names())
        channel_id = self.integer(t, "channel_id", p, None, minimum=1)
        # Without [actors.schedule] it runs only by keyed schedules, which bring their channel.
        if needs_channel_id(platform, scheduled="schedule" in t) and "channel_id" not in t:
            self.problem((*p, "channel_id"), "required for platform = \"discord\" (the "
                         "channel the actor posts to)", at=(*p, "platform"))
        reserved = database.max_pool_size - 1
        max_connections = self.integer(t, "max_connections", p, 1, minimum=1)
        if max_connections > reserved:
            self.problem((*p, "max_connections"), f"{max_connections} is more than the pool can "
                         f"give an actor: database.max_pool_size is {database.max_pool_size} "
                         "and the runtime keeps one connection for itself")
        schedule = self.schedule(t, p, server)
        settings = self.table(t, "settings", (*p, "settings"))
        actor = ActorConfig(
            name=name,
            module=module,
            schedule=schedule or ScheduleConfig(type=ScheduleKind.IMMEDIATE.value),
            enabled=self.boolean(t, "enabled", p, True),
            platform=platform,
            channel_id=channel_id,
            timeout_seconds=self.number(t, "timeout_seconds", p,
                                        server.default_timeout_seconds),
            max_instances=self.integer(t, "max_instances", p, 1, minimum=1),
            max_connections=max_connections,
            max_consecutive_failures=self.integer(t, "max_consecutive_failures", p,
                                                  server.max_consecutive_failures, minimum=1),
            retry=self.retry(t, p),
            allowed_mentions=self.names(t, "allowed_mentions", p, (), MENTION_KINDS, "mention"
                                        " kind"),
            max_schedules=self.integer(t, "max_schedules", p, 100_000, minimum=0),
            max_schedules_per_owner=self.integer(t, "max_schedules_per_owner", p, None,
                                                 minimum=1),
            max_payload_bytes=self.integer(t, "max_payload_bytes", p, 16 * 1024, minimum=2),
            settings=settings if settings is not None else {},
            index=i,
        )
        # A broken name is already reported; keep it out of the duplicate check.
        return actor if _ACTOR_NAME.fullmatch(name) else None

    def retry(self, t: dict[str, Any], p: KeyPath) -> RetryPolicy:
        p = (*p, "retry")
        r = self.table(t, "retry", p)
        if not r:
            return RetryPolicy()
        self.known_keys(r, _RETRY_KEYS, p)
        d = RetryPolicy()
        backoff = self.number(r, "backoff_seconds", p, d.backoff_seconds, allow_minimum=True)
        max_backoff = self.number(r, "max_backoff_seconds", p, d.max_backoff_seconds,
                                  allow_minimum=True)
        if max_backoff < backoff and "max_backoff_seconds" in r:
            self.problem((*p, "max_backoff_seconds"), f"{max_backoff:g} is less than "
                         f"backoff_seconds ({backoff:g})")
        return RetryPolicy(
            attempts=self.integer(r, "attempts", p, d.attempts, minimum=1,
                                  why=" (the total number of attempts; 1 = no retry)"),
            backoff_seconds=backoff,
            max_backoff_seconds=max_backoff,
        )

    def schedule(self, t: dict[str, Any], ap: KeyPath,
                 server: ServerConfig) -> ScheduleConfig | None:
        p = (*ap, "schedule")
        if "schedule" not in t:
            # Runs only through keyed schedules (created at run time) and manual triggers.
            return ScheduleConfig(type=NO_SCHEDULE, timezone=server.timezone)
        s = self.table(t, "schedule", p)
        if s is None:
            return None
        owners = toml_keys()
        self.known_keys(s, (*_SCHEDULE_COMMON, *owners), p)
        if not self.require(s, "type", p):
            return None
        name = self.choice(s, "type", p, None, toml_types(), fold_case=True)
        tz_ok = "timezone" not in s or zone_or_none(s["timezone"]) is not None
        timezone = self.zone(s, "timezone", p, server.timezone)
        d = ScheduleConfig(type="", timezone="")
        jitter = self.number(s, "jitter_seconds", p, d.jitter_seconds, allow_minimum=True)
        catch_up = self.choice(s, "catch_up", p, d.catch_up, CATCH_UP_POLICIES)
        if name is None:
            return None
        kind = kind_of(name)
        for key, owner in owners.items():
            if key in s and key not in kind.keys:
                self.problem((*p, key), f"only applies to {owner.name} schedules, not {name}")
        common = ScheduleConfig(type=name, timezone=timezone, jitter_seconds=jitter,
                                catch_up=catch_up)
        return kind.read_toml(s, p, self, common, zone_or_none(timezone) if tz_ok else None)


def _resolve(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()


# What the TOML parser says of a key or table given twice; it names neither.
_REDEFINED = ("Cannot overwrite a value", "Cannot declare")


def _syntax_problems(label: str, text: str, message: str) -> list[Problem]:
    """What is wrong with a file the TOML parser refused: a key or table given twice is named
    with both its lines (every such one in the file); anything else is the parser's message at
    its line."""
    problem = _syntax_problem(label, text, message)
    if not message.startswith(_REDEFINED):
        return [problem]
    duplicates = LineIndex(text).duplicates
    if not any(d.line == problem.line for d in duplicates):
        return [problem]  # a redefinition the line index does not see (a dotted table)
    return [Problem(label, dotted(d.path), _twice(d), d.line) for d in duplicates]


def _twice(d: Duplicate) -> str:
    if d.header is None:
        return f"set twice (first at line {d.first_line}); a key may be set once per table"
    return (f"{d.header} appears twice (first at line {d.first_line}); put its keys under "
            "one header")


def _syntax_problem(label: str, text: str, message: str) -> Problem:
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        line: int | None = int(m.group(1))
        message = f"{message[:m.start()]} (column {m.group(2)})"
    elif message.endswith("(at end of document)"):
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        message = message.removesuffix(" (at end of document)") + " (at end of file)"
    else:
        line = None
    return Problem(label, "", f"invalid TOML: {message}", line)

