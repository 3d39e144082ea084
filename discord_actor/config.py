"""Load, validate and write ``actor_server.toml``.

The dataclasses below are the contract every other module reads; nothing else parses TOML.

Loading is strict and reports every problem at once (file, line, dotted key, message), so a
user fixes a broken file in one round instead of one error per restart.

Environment variables: in every string value (nested ``settings`` and arrays included),
``${NAME}`` is replaced by the variable's value and ``${NAME:-default}`` by the value, or by
``default`` when the variable is unset or empty (as in the shell). An unset ``${NAME}`` without
a default is a problem. That is all: ``$NAME``, ``$$`` and anything else are left as written,
there is no escaping and no nesting, and ``default`` ends at the first ``}``. A field that wants
a number or a boolean also accepts a string that used ``${...}``, converted after expansion
(``channel_id = "${ALERT_CHANNEL}"``), because the environment only holds strings.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import tomli  # tomllib's own code, as a compiled wheel: 3x faster on a file of 10,000 actors
import tomli_w

from discord_actor.platform_registry import PLATFORMS
from discord_actor.schedules import cron_error

MENTION_KINDS = ("users", "roles", "everyone")  # actors[].allowed_mentions
# discord.Intents flag names (discord.py 2.4+; a test checks them against the installed one),
# kept here so that loading a configuration does not import discord.py. "default" stands for
# discord.Intents.default(): every intent except the privileged ones.
INTENT_NAMES = (
    "auto_moderation", "auto_moderation_configuration", "auto_moderation_execution", "bans",
    "dm_messages", "dm_polls", "dm_reactions", "dm_typing", "emojis", "emojis_and_stickers",
    "expressions", "guild_messages", "guild_polls", "guild_reactions", "guild_scheduled_events",
    "guild_typing", "guilds", "integrations", "invites", "members", "message_content",
    "messages", "moderation", "polls", "presences", "reactions", "typing", "voice_states",
    "webhooks",
)
PRIVILEGED_INTENTS = ("members", "presences", "message_content")
DEFAULT_API_BASE_URL = "https://discord.com/api/v10"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"
SCHEDULE_TYPES = ("interval", "cron", "once", "immediate")
CATCH_UP_POLICIES = ("latest", "skip", "all")
LOG_RUNS = ("all", "failures")  # server.log_runs


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration, located as precisely as we can."""

    file: str
    key: str  # dotted path, e.g. "actors[2].schedule.expression"; "" for the whole file
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """All problems found in a configuration; ``str()`` lists them one per line.

    ``partial`` is the configuration without the entries that have problems (None when the
    file is unusable): enough to load the sound actors' modules and report their problems in
    the same pass (``plugins.load_project``).
    """

    def __init__(self, problems: list[Problem], partial: Config | None = None) -> None:
        self.problems = problems
        self.partial = partial
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class ServerConfig:
    actors_dir: Path  # absolute (resolved relative to the config file)
    timezone: str = "UTC"
    max_concurrent_runs: int = 32
    max_consecutive_failures: int = 5
    default_timeout_seconds: float = 300.0
    shutdown_grace_seconds: float = 30.0
    run_retention_days: int = 30
    lease_seconds: float = 30.0  # a process that misses heartbeats this long is dead
    poll_interval_seconds: float = 1.0  # how often to look for work changed by others
    log_runs: str = "all"  # "all" | "failures": whether a succeeded run logs a line


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = field(default="", repr=False)  # empty -> embedded PostgreSQL; may hold a password
    data_dir: Path = Path(".discord_actor/pgdata")  # absolute after loading
    schema: str = "discord_actor"
    min_pool_size: int = 1
    max_pool_size: int = 10
    acquire_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 300.0
    command_timeout_seconds: float = 60.0
    statement_cache_size: int = 100


@dataclass(frozen=True)
class DiscordConfig:
    token_env: str = "DISCORD_TOKEN"
    owner_ids: tuple[int, ...] = ()
    admin_role_ids: tuple[int, ...] = ()
    alert_channel_id: int = 0
    # "default" = discord.Intents.default(); privileged intents must be listed by name
    intents: tuple[str, ...] = ("default",)
    command_guild_ids: tuple[int, ...] = ()  # sync /actors to these guilds; empty = globally
    shard_count: int | None = None  # set (or shard_ids) -> discord.py's AutoShardedBot
    shard_ids: tuple[int, ...] | None = None  # the shards this process runs; needs shard_count
    api_base_url: str = DEFAULT_API_BASE_URL  # REST base (a proxy in front of Discord)
    gateway_url: str = DEFAULT_GATEWAY_URL  # gateway address (a gateway proxy)


@dataclass(frozen=True)
class HttpConfig:
    """The health, metrics, API and dashboard endpoint (``web/``)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback: GETs open; any other address needs the token for all
    port: int = 8750
    token_env: str = "DISCORD_ACTOR_HTTP_TOKEN"  # variable holding the operators' token


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: ``localhost`` or a loopback IP."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 1  # total attempts of one slot; 1 = no retry
    backoff_seconds: float = 5.0  # delay before attempt 2; doubles each attempt
    max_backoff_seconds: float = 300.0


@dataclass(frozen=True)
class ScheduleConfig:
    type: str  # normalized to lower case: one of SCHEDULE_TYPES
    timezone: str  # effective IANA zone (schedule's own, else server.timezone)
    seconds: float | None = None  # interval
    expression: str | None = None  # cron, 5 fields
    at: datetime | None = None  # once, timezone-aware
    jitter_seconds: float = 0.0
    catch_up: str = "latest"


@dataclass(frozen=True)
class ActorConfig:
    name: str
    module: str
    schedule: ScheduleConfig
    enabled: bool = True
    platform: str | None = None  # None -> the actor's own ``platform`` attribute
    channel_id: int | None = None
    timeout_seconds: float = 300.0  # effective (actor's own, else server default)
    max_instances: int = 1
    max_connections: int = 1
    max_consecutive_failures: int = 5  # effective (actor's own, else server default)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    allowed_mentions: tuple[str, ...] = ()  # subset of MENTION_KINDS; none by default
    # Schedules created at run time (keyed.py): pending ones per actor, and per owner.
    max_schedules: int = 100_000
    max_schedules_per_owner: int | None = None  # None = no limit per owner
    max_payload_bytes: int = 16 * 1024  # a keyed schedule's payload, as UTF-8 JSON
    settings: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # position in the file, for error messages: actors[index]


@dataclass(frozen=True)
class Config:
    path: Path  # absolute path of the file this came from
    server: ServerConfig
    database: DatabaseConfig
    discord: DiscordConfig
    actors: tuple[ActorConfig, ...]
    http: HttpConfig = field(default_factory=HttpConfig)

    def actor(self, name: str) -> ActorConfig:
        for a in self.actors:
            if a.name == name:
                return a
        raise KeyError(name)


# --------------------------------------------------------------------------------------------
# Public functions

CONFIG_FILE = "actor_server.toml"
REDACTED = "***"

# Settings keys whose values are never shown (matched case-insensitively as substrings).
_SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api_key", "api-key",
                 "private_key", "credential")


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
        raise ConfigError([_syntax_problem(label, text, str(e))]) from None
    reader = _Reader(label, text, os.environ if environ is None else environ)
    config = reader.read(data, file.resolve())
    if reader.problems:
        raise ConfigError(sorted(reader.problems, key=lambda p: p.line or 0), reader.partial)
    assert config is not None
    return config


def line_of(path: Path, key: tuple[str | int, ...]) -> int | None:
    """The line of ``key`` (e.g. ``("actors", 2, "module")``) in the file at ``path``, for
    errors found after loading; None if the file cannot be read."""
    try:
        return _LineIndex(path.read_text("utf-8")).line_of(key)
    except (OSError, UnicodeDecodeError):
        return None


def dump_config(config: Config) -> str:
    """The resolved configuration as TOML that ``load_config`` accepts again, secrets redacted.

    Paths are absolute and every default is spelled out, so the output shows exactly what the
    runtime uses. The database password and secret-looking settings become ``***``.
    """
    top = {
        "server": _plain(config.server),
        "database": _plain(config.database),
        "discord": _plain(config.discord),
        "http": _plain(config.http),
    }
    top["database"]["url"] = redact_url(config.database.url)
    for key in ("api_base_url", "gateway_url"):  # a proxy URL may carry credentials
        top["discord"][key] = redact_url(top["discord"][key])
    top = _redact_strings(top)  # any other value that embeds a credential
    actors = []
    for a in config.actors:
        d = _plain(a)
        del d["index"]
        settings = _redact_settings(a.settings)
        d = _redact_strings(d)
        d["settings"] = settings
        if not a.settings:
            del d["settings"]
        if a.schedule.type == "none":  # written as no [actors.schedule] at all
            del d["schedule"]
        actors.append(d)
    header = (f"# Resolved configuration from {config.path}\n"
              f"# Secrets are shown as {REDACTED}.\n\n")
    return header + _render(top, actors)


def redact_url(url: str) -> str:
    """``url`` with its credentials as ``***``: the password of the user-info part, every
    parameter whose name looks secret (``password``, ``sslpassword``, ``*password*``,
    ``*token*``...) and anything ``redact_text`` hides.

    Errs on the side of hiding too much when the URL is odd, never too little.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            user = rest[:at].split(":", 1)[0]
            rest = f"{user}:{REDACTED}{rest[at:]}"
        url = scheme + sep + rest
    return redact_text(url)


_SECRET_NAME = "|".join(re.escape(word) for word in _SECRET_WORDS)
_TOKENISH = r"(?=[\w.~+/=-]*(?:[\d.~+/=_-]|(?-i:[a-z][A-Z])))"
# Credentials as they appear inside any text (a settings value, an error message, a log line).
_CREDENTIALS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host: the password may hold ':' or '@'; the last '@' before the
    # path (or the end of the word) ends it.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*(@)"),
     rf"\g<1>{REDACTED}\g<2>"),
    # name=value where the name looks secret: URL parameters (?sslpassword=...&) and
    # key=value connection strings (password='...').
    (re.compile(rf"(?i)((?<![\w.-])[\w.-]*(?:{_SECRET_NAME})[\w.-]*\s*=\s*)"
                r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&#;,'\"]+)"),
     rf"\g<1>{REDACTED}"),
    # The same in a printed mapping: {'password': '...'} or "api_token": "...".
    (re.compile(rf"""(?i)((['"])[\w.-]*(?:{_SECRET_NAME})[\w.-]*\2\s*:\s*)"""
                r"""(['"])(?:(?!\3)[^\\]|\\.)*\3"""),
     rf"\g<1>\g<3>{REDACTED}\g<3>"),
    # HTTP authorization values and Discord's "Bot <token>". A token has some length and a
    # digit, a symbol or a capital inside, so prose ("basic setup", "Bot started") stays.
    (re.compile(rf"(?i)\b(bearer|basic)(\s+){_TOKENISH}[\w.~+/=-]{{8,}}"),
     rf"\g<1>\g<2>{REDACTED}"),
    (re.compile(rf"\b(Bot)(\s+){_TOKENISH}[\w.~+/=-]{{20,}}"), rf"\g<1>\g<2>{REDACTED}"),
    # A Discord webhook URL carries its token in the path.
    (re.compile(r"(?i)(/api/(?:v\d+/)?webhooks/\d+/)[\w.-]+"), rf"\g<1>{REDACTED}"),
    # A bare Discord bot token: three base64url parts separated by dots.
    (re.compile(r"\b[MNO][\w-]{23,27}\.[\w-]{6,7}\.[\w-]{27,40}\b"), REDACTED),
)


def redact_text(text: str) -> str:
    """``text`` with the credentials it may embed shown as ``***``: passwords in URLs,
    secret-looking ``name=value`` parameters, ``Bearer``/``Basic``/``Bot`` tokens, Discord
    webhook tokens and bot tokens. For any text that is printed or logged."""
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


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


# --------------------------------------------------------------------------------------------
# Validation

_KeyPath = tuple[str | int, ...]
_D = TypeVar("_D")

_SERVER_KEYS = tuple(f.name for f in dataclasses.fields(ServerConfig))
_DATABASE_KEYS = tuple(f.name for f in dataclasses.fields(DatabaseConfig))
_DISCORD_KEYS = tuple(f.name for f in dataclasses.fields(DiscordConfig))
_HTTP_KEYS = tuple(f.name for f in dataclasses.fields(HttpConfig))
_RETRY_KEYS = tuple(f.name for f in dataclasses.fields(RetryPolicy))
_ACTOR_KEYS = tuple(
    f.name for f in dataclasses.fields(ActorConfig) if f.name not in ("index", "line")
)
_SCHEDULE_COMMON = ("type", "timezone", "jitter_seconds", "catch_up")
_SCHEDULE_SPECIFIC = {"interval": "seconds", "cron": "expression", "once": "at"}
_SCHEDULE_KEYS = _SCHEDULE_COMMON + tuple(_SCHEDULE_SPECIFIC.values())

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_ACTOR_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AT_EXAMPLE = "e.g. 2026-12-01T09:00:00+01:00"


def _dotted(path: _KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _describe(value: Any) -> str:
    """How a wrong value is named in a message: its TOML type and, if short, itself."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {redact_text(value)!r}" if len(value) <= 40 else "a string"
    if isinstance(value, datetime):
        return f"date-time {value.isoformat()}"
    if isinstance(value, date | time):
        return f"{type(value).__name__} {value.isoformat()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells (case-insensitive), for "did you mean"."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match else ""


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


class _Reader:
    """Walks the parsed TOML, collecting problems instead of stopping at the first."""

    def __init__(self, label: str, text: str, environ: Mapping[str, str]) -> None:
        self.label = label
        self.text = text
        self.environ = environ
        self.problems: list[Problem] = []
        self.expanded: set[_KeyPath] = set()  # string values that used ${...}
        self.partial: Config | None = None  # with problems: the sound part (see ConfigError)

    @functools.cached_property
    def lines(self) -> _LineIndex:
        """Built only when a problem needs a line: scanning 10,000 actors is not free."""
        return _LineIndex(self.text)

    def problem(self, path: _KeyPath, message: str, *, at: _KeyPath | None = None) -> None:
        line = self.lines.line_of(path if at is None else at)
        self.problems.append(Problem(self.label, _dotted(path), message, line))

    # -- environment -------------------------------------------------------------------------

    def expand(self, value: Any, path: _KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: self.expand(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        missing: list[str] = []

        def substitute(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = self.environ.get(name)
            if default is not None:
                return got or default
            if got is None:
                missing.append(name)
                return ""
            return got

        result = _VAR.sub(substitute, value)
        if result != value or _VAR.search(value):
            self.expanded.add(path)
        for name in dict.fromkeys(missing):
            self.problem(path, f"environment variable {name!r} is not set "
                         f"(set it, or write ${{{name}:-default}})")
        return result

    # -- structure ---------------------------------------------------------------------------

    def table(self, parent: dict[str, Any], key: str, path: _KeyPath) -> dict[str, Any] | None:
        """The sub-table ``key`` ({} if absent), or None (with a problem) if not a table."""
        value = parent.get(key, {})
        if isinstance(value, dict):
            return value
        self.problem(path, f"must be a table, not {self.describe(value, path)}")
        return None

    def known_keys(self, table: dict[str, Any], allowed: Iterable[str], path: _KeyPath) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key not in allowed:
                hint = _suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.problem((*path, key), f"unknown key{hint}")

    def require(self, table: dict[str, Any], key: str, path: _KeyPath) -> bool:
        if key in table:
            return True
        self.problem((*path, key), "required key is missing")
        return False

    # -- scalars: each returns ``default`` when absent or invalid ----------------------------

    def describe(self, value: Any, path: _KeyPath) -> str:
        """``_describe``, but a value from the environment is not shown: it may be a secret."""
        if isinstance(value, str) and path in self.expanded:
            return "a string from the environment"
        return _describe(value)

    def from_env(self, path: _KeyPath, value: Any) -> bool:
        return isinstance(value, str) and path in self.expanded

    def integer(self, table: dict[str, Any], key: str, path: _KeyPath, default: _D, *,
                minimum: int | None = None, why: str = "") -> int | _D:
        if key not in table:
            return default
        return self.integer_value(table[key], (*path, key), default, minimum=minimum, why=why)

    def integer_value(self, value: Any, path: _KeyPath, default: _D, *,
                      minimum: int | None = None, why: str = "") -> int | _D:
        if self.from_env(path, value):
            try:
                value = int(value.strip())
            except ValueError:
                self.problem(path, "must be an integer; the value from the environment is not")
                return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be an integer, not {self.describe(value, path)}")
            return default
        if minimum is not None and value < minimum:
            self.problem(path, f"must be at least {minimum}{why}, not {value}")
            return default
        return value

    def number(self, table: dict[str, Any], key: str, path: _KeyPath, default: _D, *,
               minimum: float = 0.0, allow_minimum: bool = False) -> float | _D:
        """A finite int or float, greater than ``minimum`` (or equal, with ``allow_minimum``)."""
        if key not in table:
            return default
        path, value = (*path, key), table[key]
        if self.from_env(path, value):
            try:
                value = float(value.strip())
            except ValueError:
                self.problem(path, "must be a number; the value from the environment is not")
                return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, f"must be a number, not {self.describe(value, path)}")
            return default
        if not math.isfinite(value):
            self.problem(path, f"must be a finite number, not {value}")
            return default
        if value < minimum or (value == minimum and not allow_minimum):
            bound = "at least" if allow_minimum else "greater than"
            self.problem(path, f"must be {bound} {minimum:g}, not {value:g}")
            return default
        return float(value)

    def string(self, table: dict[str, Any], key: str, path: _KeyPath, default: _D) -> str | _D:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str):
            self.problem((*path, key), f"must be a string, not {_describe(value)}")
            return default
        return value

    def boolean(self, table: dict[str, Any], key: str, path: _KeyPath, default: bool) -> bool:
        if key not in table:
            return default
        path, value = (*path, key), table[key]
        if self.from_env(path, value) and value.strip() in ("true", "false"):
            return bool(value.strip() == "true")
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, not {self.describe(value, path)}")
            return default
        return value

    def choice(self, table: dict[str, Any], key: str, path: _KeyPath, default: _D,
               choices: tuple[str, ...], *, fold_case: bool = False) -> str | _D:
        value = self.string(table, key, path, None)
        if value is None:
            return default
        if fold_case:
            value = value.lower()
        if value not in choices:
            self.problem((*path, key),
                         f"{value!r} is not one of {_one_of(choices)}{_suggest(value, choices)}")
            return default
        return value

    def zone(self, table: dict[str, Any], key: str, path: _KeyPath, default: _D) -> str | _D:
        name = self.string(table, key, path, None)
        if name is None:
            return default
        if _zone(name) is None:
            self.problem((*path, key), f"unknown time zone {name!r}"
                         f"{_suggest(name, available_timezones())} (use an IANA name such as "
                         "'UTC' or 'Europe/Berlin')")
            return default
        return name

    # -- sections ----------------------------------------------------------------------------

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
        p: _KeyPath = ("server",)
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

    def path(self, t: dict[str, Any], key: str, p: _KeyPath, default: str) -> str:
        value = self.string(t, key, p, default)
        if not value.strip():
            self.problem((*p, key), "must not be empty")
            return default
        return value

    def database(self, t: dict[str, Any], base: Path) -> DatabaseConfig:
        p: _KeyPath = ("database",)
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
            statement_cache_size=self.integer(t, "statement_cache_size", p,
                                              d.statement_cache_size, minimum=0),
        )

    def discord(self, t: dict[str, Any]) -> DiscordConfig:
        p: _KeyPath = ("discord",)
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
        )

    def http(self, t: dict[str, Any]) -> HttpConfig:
        p: _KeyPath = ("http",)
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

    def env_name(self, t: dict[str, Any], key: str, p: _KeyPath, default: str) -> str:
        """The name of an environment variable that holds a token (its default an example)."""
        name = self.string(t, key, p, default)
        if _ENV_NAME.fullmatch(name):
            return name
        # Never echo the value: a common mistake is pasting the token itself here.
        self.problem((*p, key), "must be the name of the environment variable that holds the "
                     f"token (e.g. \"{default}\"), never the token itself")
        return default

    def names(self, t: dict[str, Any], key: str, p: _KeyPath, default: tuple[str, ...],
              choices: tuple[str, ...], what: str) -> tuple[str, ...]:
        """An array of names from ``choices`` (duplicates dropped, order kept)."""
        if key not in t:
            return default
        value = t[key]
        if not isinstance(value, list):
            self.problem((*p, key), f"must be an array of {what} names (e.g. "
                         f"[{', '.join(repr(c) for c in choices[:2])}]), not "
                         f"{self.describe(value, (*p, key))}")
            return default
        out: list[str] = []
        for i, name in enumerate(value):
            path = (*p, key, i)
            if not isinstance(name, str):
                self.problem(path, f"must be a string, not {self.describe(name, path)}")
            elif name not in choices:
                hint = _suggest(name, choices) or f" (one of: {', '.join(choices)})"
                self.problem(path, f"unknown {what} {name!r}{hint}")
            elif name not in out:
                out.append(name)
        return tuple(out)

    def shard_ids(self, t: dict[str, Any], p: _KeyPath,
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

    def url(self, t: dict[str, Any], key: str, p: _KeyPath, default: str,
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

    def ids(self, t: dict[str, Any], key: str, p: _KeyPath) -> tuple[int, ...]:
        value = t.get(key, [])
        if not isinstance(value, list):
            self.problem((*p, key),
                         f"must be an array of integer IDs, not {self.describe(value, (*p, key))}")
            return ()
        out = [self.integer_value(v, (*p, key, i), None, minimum=1) for i, v in enumerate(value)]
        return tuple(v for v in out if v is not None)

    def actors(self, value: Any, server: ServerConfig,
               database: DatabaseConfig) -> tuple[ActorConfig, ...]:
        if not isinstance(value, list):
            self.problem(("actors",), "must be an array of tables: write each actor under "
                         "its own [[actors]] header")
            return ()
        out: list[ActorConfig] = []
        seen: dict[str, int] = {}
        for i, t in enumerate(value):
            path: _KeyPath = ("actors", i)
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
        p: _KeyPath = ("actors", i)
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
        platform = self.choice(t, "platform", p, None, tuple(PLATFORMS))
        channel_id = self.integer(t, "channel_id", p, None, minimum=1)
        # Without [actors.schedule] it runs only by keyed schedules, which bring their channel.
        if platform == "discord" and "channel_id" not in t and "schedule" in t:
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
            schedule=schedule or ScheduleConfig(type="immediate", timezone="UTC"),
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

    def retry(self, t: dict[str, Any], p: _KeyPath) -> RetryPolicy:
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

    def schedule(self, t: dict[str, Any], ap: _KeyPath,
                 server: ServerConfig) -> ScheduleConfig | None:
        p = (*ap, "schedule")
        if "schedule" not in t:
            # Runs only through keyed schedules (created at run time) and manual triggers.
            return ScheduleConfig(type="none", timezone=server.timezone)
        s = self.table(t, "schedule", p)
        if s is None:
            return None
        self.known_keys(s, _SCHEDULE_KEYS, p)
        if not self.require(s, "type", p):
            return None
        kind = self.choice(s, "type", p, None, SCHEDULE_TYPES, fold_case=True)
        tz_ok = "timezone" not in s or _zone(s["timezone"]) is not None
        timezone = self.zone(s, "timezone", p, server.timezone)
        d = ScheduleConfig(type="", timezone="")
        jitter = self.number(s, "jitter_seconds", p, d.jitter_seconds, allow_minimum=True)
        catch_up = self.choice(s, "catch_up", p, d.catch_up, CATCH_UP_POLICIES)
        if kind is None:
            return None
        for other, key in _SCHEDULE_SPECIFIC.items():
            if key in s and other != kind:
                self.problem((*p, key), f"only applies to {other} schedules, not {kind}")
        seconds = expression = at = None
        if kind == "interval" and self.require(s, "seconds", p):
            seconds = self.number(s, "seconds", p, None)
        elif kind == "cron" and self.require(s, "expression", p):
            expression = self.string(s, "expression", p, None)
            error = cron_error(expression) if expression is not None else None
            if error and expression is not None:
                # cron_error usually quotes the expression itself; don't say it twice.
                quoted = repr(" ".join(expression.split())) in error or "cron" in error
                self.problem((*p, "expression"), error if quoted else
                             f"invalid cron expression {expression!r}: {error}")
        elif kind == "once" and self.require(s, "at", p):
            at = self.moment(s["at"], (*p, "at"), _zone(timezone) if tz_ok else None)
        return ScheduleConfig(type=kind, timezone=timezone, seconds=seconds,
                              expression=expression, at=at, jitter_seconds=jitter,
                              catch_up=catch_up)

    def moment(self, value: Any, path: _KeyPath, tz: ZoneInfo | None) -> datetime | None:
        """A once-schedule's ``at``: an offset date-time, or a local one read in ``tz``.

        A local time is stored with the UTC offset it has in ``tz`` (fixed offsets compare and
        dump reliably): at a fall-back it is the first of the two, and in a spring-forward gap
        it keeps the offset from before the jump (02:30 in a 02:00->03:00 gap is 03:30).
        """
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                self.problem(path, f"{value!r} is not an ISO 8601 date-time ({_AT_EXAMPLE})")
                return None
        if not isinstance(value, datetime):
            self.problem(path, f"must be a date and time ({_AT_EXAMPLE}), "
                         f"not {_describe(value)}")
            return None
        if value.tzinfo is None:
            if tz is None:
                return None  # the time zone's own problem is already reported
            offset = value.replace(tzinfo=tz).utcoffset()
            assert offset is not None
            return value.replace(tzinfo=dt_timezone(offset))
        return value


def _zone(name: Any) -> ZoneInfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _resolve(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()


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


# --------------------------------------------------------------------------------------------
# Line numbers: the TOML parser does not report them, so scan the raw text for keys and table
# headers.


class _LineIndex:
    """Maps key paths such as ``("actors", 2, "schedule", "expression")`` to line numbers.

    Understands table headers, ``[[arrays of tables]]`` (counting entries), dotted and quoted
    keys, and skips over strings and multi-line values. A path it did not see (a missing key,
    a key inside an inline table, an array element) maps to its nearest ancestor that it did.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[_KeyPath, int] = {}
        arrays: dict[_KeyPath, int] = {}  # array-of-tables path -> entries so far
        current: _KeyPath = ()
        depth, multiline = 0, ""
        for lineno, line in enumerate(text.split("\n"), 1):
            if multiline or depth:
                depth, multiline = _scan(line, 0, depth, multiline)
                continue
            start = len(line) - len(line.lstrip())
            if line.startswith("[", start):
                is_array = line.startswith("[[", start)
                key = _parse_key(line, start + (2 if is_array else 1))
                if key is not None:
                    current = self._header(key[0], is_array, arrays)
                    self._lines.setdefault(current, lineno)
                    if is_array:  # [[actor]]: the array itself is where it first appears
                        self._lines.setdefault(current[:-1], lineno)
                continue
            key = _parse_key(line, start)
            if key is not None and line.startswith("=", key[1]):
                for n in range(1, len(key[0]) + 1):  # a.b.c = 1 also defines a and a.b
                    self._lines.setdefault((*current, *key[0][:n]), lineno)
                depth, multiline = _scan(line, key[1] + 1, depth, multiline)

    @staticmethod
    def _header(parts: list[str], is_array: bool, arrays: dict[_KeyPath, int]) -> _KeyPath:
        resolved: _KeyPath = ()
        for part in parts[:-1]:
            resolved = (*resolved, part)
            if resolved in arrays:
                resolved = (*resolved, arrays[resolved] - 1)
        resolved = (*resolved, parts[-1])
        if is_array:
            arrays[resolved] = arrays.get(resolved, 0) + 1
            resolved = (*resolved, arrays[resolved] - 1)
        return resolved

    def line_of(self, path: _KeyPath) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _parse_key(line: str, i: int) -> tuple[list[str], int] | None:
    """Parse a (dotted, maybe quoted) key at ``line[i:]``: its parts and the index after it."""
    parts: list[str] = []
    n = len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return None
        if line[i] == '"':
            m = re.compile(r'"((?:[^"\\]|\\.)*)"').match(line, i)
            if m is None:
                return None
            try:
                parts.append(json.loads(m.group(0)))
            except ValueError:
                parts.append(m.group(1))
            i = m.end()
        elif line[i] == "'":
            end = line.find("'", i + 1)
            if end < 0:
                return None
            parts.append(line[i + 1:end])
            i = end + 1
        else:
            m = _BARE_KEY.match(line, i)
            if m is None:
                return None
            parts.append(m.group(0))
            i = m.end()
        while i < n and line[i] in " \t":
            i += 1
        if i < n and line[i] == ".":
            i += 1
            continue
        return parts, i


def _scan(line: str, i: int, depth: int, multiline: str) -> tuple[int, str]:
    """Follow a value through ``line``: bracket depth and an open multi-line string, if any."""
    n = len(line)
    while i < n:
        if multiline:
            end = line.find(multiline, i)
            if end < 0:
                return depth, multiline
            i, multiline = end + 3, ""
            continue
        c = line[i]
        if c == "#":
            break
        if line.startswith(('"""', "'''"), i):
            multiline, i = line[i:i + 3], i + 3
            continue
        if c == '"':
            m = re.compile(r'"(?:[^"\\]|\\.)*"').match(line, i)
            i = m.end() if m else n
            continue
        if c == "'":
            end = line.find("'", i + 1)
            i = end + 1 if end >= 0 else n
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, multiline


# --------------------------------------------------------------------------------------------
# Writing


def _plain(obj: Any) -> Any:
    """Dataclasses to TOML-ready dicts: paths to strings, tuples to lists, None left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not None}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _is_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)


def _redact_strings(value: Any) -> Any:
    """Credentials inside strings hidden (``redact_text``); keys are not looked at."""
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value


def _redact_settings(value: Any) -> Any:
    """Secret-looking keys hidden whole; credentials inside other strings hidden too."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(k) else _redact_settings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_settings(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _render(top: dict[str, Any], actors: list[dict[str, Any]]) -> str:
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


_STARTER_HEADER = """\
# discord-actor server configuration. Every key is optional unless marked required;
# the values below are the defaults. Reference: README.md ("Configuration").
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
# type = "cron"                        # "interval" | "cron" | "once" | "immediate"
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
    ("database", "statement_cache_size"): "0 behind PgBouncer in transaction mode",
    ("discord", "token_env"): "the variable that holds the token, not the token",
    ("discord", "owner_ids"): "may use admin commands",
    ("discord", "admin_role_ids"): "may use admin commands",
    ("discord", "alert_channel_id"): "failure and circuit-breaker alerts (0 = off)",
    ("discord", "intents"): '"default" = all but privileged (members, presences, ...)',
    ("discord", "command_guild_ids"): "sync /actors to these guilds; [] = globally",
    ("discord", "api_base_url"): "REST API (or a proxy in front of it)",
    ("discord", "gateway_url"): "gateway (or a gateway proxy)",
    ("http", "enabled"): "health, /metrics, JSON API and dashboard",
    ("http", "host"): "loopback: GETs need no token; else all do",
    ("http", "token_env"): "the variable that holds the operators' token",
    ("actors", "name"): "required, unique",
    ("actors", "module"): "required: actors/hello.py",
    ("actors", "platform"): '"discord" | "console" | "none"; console prints posts',
    ("actors", "max_instances"): "overlapping runs of this actor",
    ("actors", "max_connections"): "this actor's share of the shared pool",
    ("actors.schedule", "type"): '"interval" | "cron" | "once" | "immediate"',
    ("actors.schedule", "seconds"): "fixed rate: slots do not drift with run time",
    ("actors.schedule", "catch_up"): 'after downtime: "latest" | "skip" | "all"',
}


def _starter_config() -> str:
    d, db = ServerConfig(actors_dir=Path("actors")), DatabaseConfig()
    server = _plain(d) | {"actors_dir": "actors"}
    database = _plain(db) | {"url": "${DATABASE_URL:-}", "data_dir": str(db.data_dir)}
    hello = {
        "name": "hello",
        "module": "hello",
        "enabled": True,
        "platform": "console",
        "timeout_seconds": 60,
        "max_instances": 1,
        "max_connections": 1,
        "settings": {"greeting": "hello"},
        "schedule": {"type": "interval", "seconds": 10, "catch_up": "latest"},
    }
    top = {"server": server, "database": database, "discord": _plain(DiscordConfig()),
           "http": _plain(HttpConfig())}
    text = _render(top, [hello])
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
