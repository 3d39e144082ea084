"""Log set-up for every command: level, text or JSON lines, and which run a line is about.

Text lines carry the date and time with its UTC offset; JSON lines are one object per line
(``time``, ``level``, ``logger``, ``actor``, ``run_id``, ``message``, ``exception``) for a log
collector. ``actor`` and ``run_id`` are those of the run whose task logged the line (the
runtime's own lines about it and the actor's code alike), taken from ``current_run``, which the
executor sets in each run's task; lines about no run have them null.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from .errors import DiscordActorError

LOG_LEVEL_ENV = "DISCORD_ACTOR_LOG_LEVEL"
LOG_FORMAT_ENV = "DISCORD_ACTOR_LOG_FORMAT"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

#: (actor, run id) of the run the current task belongs to; set by the executor
current_run: ContextVar[tuple[str, int] | None] = ContextVar("discord_actor_run", default=None)


class LogSettingError(DiscordActorError, ValueError):
    """A log level or format that is not one of the known ones (named with where it came from)."""


_second: list[Any] = [None, "", ""]  # the second last formatted: [it, date and time, offset]


def _timestamp(record: logging.LogRecord) -> str:
    """The record's time in the local zone, with its offset, to the millisecond.

    The date, time and offset of a second are worked out once for all its lines (a line per run,
    a thousand runs a second): only the milliseconds are per line."""
    at = datetime.fromtimestamp(record.created)
    second = at.replace(microsecond=0)
    if second != _second[0]:
        whole = second.astimezone().isoformat()
        _second[:] = [second, whole[:19], whole[19:]]
    return f"{_second[1]}.{at.microsecond // 1000:03d}{_second[2]}"


class TextFormatter(logging.Formatter):
    """``2026-01-05T13:00:00.123+01:00 INFO discord_actor.runtime: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``exception`` is the formatted traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "run", None)
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        return json.dumps(
            {
                "time": _timestamp(record),
                "level": record.levelname,
                "logger": record.name,
                "actor": run[0] if run else None,
                "run_id": run[1] if run else None,
                "message": record.getMessage(),
                "exception": exception,
            },
            ensure_ascii=False,
        )


class _RunFilter(logging.Filter):
    """Puts the current run (``current_run``) on each record, for the JSON lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.run = current_run.get()
        return True


class DiscordLogFilter(logging.Filter):
    """discord.py logs reconnect attempts with tracebacks (an operator needs one line) and
    warns about voice support, which a bot that posts does not use."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("discord."):
            return True
        if record.name == "discord.client" and "voice will NOT be supported" in str(record.msg):
            return False
        if record.exc_info:
            error = record.exc_info[1]
            if error is not None:
                record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def resolve_level(
    level: str | None, verbose: int, quiet: int, default: int, env: Any = os.environ
) -> int:
    """The level to log at: ``--log-level``, else ``$DISCORD_ACTOR_LOG_LEVEL``, else the
    command's ``default``; each ``-v`` is one step more detail, each ``-q`` one step less."""
    source = "--log-level"
    if level is None and env.get(LOG_LEVEL_ENV):
        level, source = env[LOG_LEVEL_ENV], f"${LOG_LEVEL_ENV}"
    if level is None:
        number = default
    else:
        name = level.strip().lower()
        if name not in LEVELS:
            raise LogSettingError(
                f"{source}: unknown log level {level!r} (expected one of {', '.join(LEVELS)})"
            )
        number = logging.getLevelNamesMapping()[name.upper()]
    number += 10 * (quiet - verbose)
    return min(max(number, logging.DEBUG), logging.ERROR)


def resolve_format(fmt: str | None, env: Any = os.environ) -> str:
    """``--log-format``, else ``$DISCORD_ACTOR_LOG_FORMAT``, else text."""
    source = "--log-format"
    if fmt is None and env.get(LOG_FORMAT_ENV):
        fmt, source = env[LOG_FORMAT_ENV], f"${LOG_FORMAT_ENV}"
    name = (fmt or "text").strip().lower()
    if name not in FORMATS:
        raise LogSettingError(
            f"{source}: unknown log format {fmt!r} (expected one of {', '.join(FORMATS)})"
        )
    return name


def configure_logging(level: int = logging.INFO, fmt: str = "text") -> None:
    """One handler on the root logger, to stderr, in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(DiscordLogFilter())
    handler.addFilter(_RunFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
