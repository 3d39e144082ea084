"""Load, validate and write ``actor_server.toml``.

The dataclasses (``model``) are the contract every other module reads; nothing but ``reader``
parses TOML. Loading is strict and reports every problem at once (file, line, dotted key,
message, "did you mean"), so a user fixes a broken file in one round instead of one error per
restart. ``values`` reads values (and expands ``${VAR}``), ``lines`` finds the line of a key,
``redaction`` hides secrets, ``dump`` writes a configuration back and ``starter`` writes the
file ``discord-actor init`` makes.

The names below are re-exported for code outside the package; modules of ``discord_actor``
import from the module that defines a name.
"""

from __future__ import annotations

from ..schedules.base import CATCH_UP_POLICIES, ScheduleConfig
from .dump import dump_config
from .lines import line_of
from .model import (
    CONFIG_FILE,
    DEFAULT_API_BASE_URL,
    DEFAULT_GATEWAY_URL,
    INTENT_NAMES,
    LOG_RUNS,
    MENTION_KINDS,
    PLATFORMS,
    PRIVILEGED_INTENTS,
    SCHEDULE_TYPES,
    ActorConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    DiscordConfig,
    HttpConfig,
    Problem,
    RetryPolicy,
    ServerConfig,
    is_loopback,
    needs_channel_id,
    platform_names,
)
from .reader import load_config
from .redaction import REDACTED, redact_text, redact_url
from .starter import write_starter
from .values import closest

__all__ = [
    "CATCH_UP_POLICIES",
    "CONFIG_FILE",
    "DEFAULT_API_BASE_URL",
    "DEFAULT_GATEWAY_URL",
    "INTENT_NAMES",
    "LOG_RUNS",
    "MENTION_KINDS",
    "PLATFORMS",
    "PRIVILEGED_INTENTS",
    "REDACTED",
    "SCHEDULE_TYPES",
    "ActorConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DiscordConfig",
    "HttpConfig",
    "Problem",
    "RetryPolicy",
    "ScheduleConfig",
    "ServerConfig",
    "closest",
    "dump_config",
    "is_loopback",
    "line_of",
    "load_config",
    "needs_channel_id",
    "platform_names",
    "redact_text",
    "redact_url",
    "write_starter",
]
