"""The configuration as the rest of discord-actor reads it: dataclasses and constants.

Nothing but ``reader.py`` parses TOML; every other module reads these.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DiscordActorError
from ..platform_registry import PLATFORMS as PLATFORM_TABLE
from ..schedules.base import DEFAULT_TIMEZONE, ScheduleConfig
from ..schedules.registry import toml_types

CONFIG_FILE = "actor_server.toml"

# The platform names of platform_registry.PLATFORMS when this module was imported; validation
# asks the registry itself (platform_names), which may hold more by then.
PLATFORMS: tuple[str, ...] = tuple(PLATFORM_TABLE)
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
# The schedule types of the kind registry when this module was imported (validation asks the
# registry itself, which may hold more by then).
SCHEDULE_TYPES: tuple[str, ...] = toml_types()
LOG_RUNS = ("all", "failures")  # server.log_runs
# database.pooler: what sits between us and PostgreSQL. "transaction" (PgBouncer's
# pool_mode = transaction, Supabase's port 6543, Neon's -pooler host) lends a server connection
# for one transaction at a time, so nothing may rely on a session there.
POOLERS = ("none", "session", "transaction")


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


class ConfigError(DiscordActorError):
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
    timezone: str = DEFAULT_TIMEZONE
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
    statement_cache_size: int = 100  # 0 when pooler = "transaction"
    pooler: str = "none"  # one of POOLERS
    # A direct address of the same database (not through the pooler), for LISTEN and
    # migrations; may hold a password. Empty with pooler = "transaction": poll only.
    direct_url: str = field(default="", repr=False)

    @property
    def transaction_pooled(self) -> bool:
        """Whether ``url`` lends connections per transaction: no session state survives."""
        return self.pooler == "transaction"


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
    # Discord's global limit for the bot's token, shared by all its processes; posts are
    # paced to 92 % of it (``platforms.pacing``)
    requests_per_second: int = 50


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


def platform_names() -> tuple[str, ...]:
    """The names ``actors[].platform`` (or an actor's own ``platform``) may take."""
    return tuple(PLATFORM_TABLE)


def needs_channel_id(platform: str | None, *, scheduled: bool) -> bool:
    """Whether an actor on ``platform`` must name its ``channel_id``: it posts to Discord on a
    schedule of its own (``scheduled``); keyed schedules bring their channel."""
    return platform == "discord" and scheduled
