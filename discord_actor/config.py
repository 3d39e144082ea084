"""Load, validate and write ``actor_server.toml``.

The dataclasses below are the contract every other module reads; nothing else parses TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

PLATFORMS = ("discord", "console", "none")
SCHEDULE_TYPES = ("interval", "cron", "once", "immediate")
CATCH_UP_POLICIES = ("latest", "skip", "all")


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
    """All problems found in a configuration; ``str()`` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
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


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""  # empty -> embedded PostgreSQL under data_dir
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
    settings: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # position in the file, for error messages: actors[index]


@dataclass(frozen=True)
class Config:
    path: Path  # absolute path of the file this came from
    server: ServerConfig
    database: DatabaseConfig
    discord: DiscordConfig
    actors: tuple[ActorConfig, ...]

    def actor(self, name: str) -> ActorConfig:
        for a in self.actors:
            if a.name == name:
                return a
        raise KeyError(name)
