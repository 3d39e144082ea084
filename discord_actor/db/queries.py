"""The store's SQL, kept as named statements in ``sql/*.sql`` and read once per process.

A file holds statements and fragments, each starting at a ``-- name: <name>`` line; the comment
lines right after it say what it is for and are not sent. A statement names the schema's tables
as ``{tasks}``, ``{runs}``, ``{retries}``, ``{instances}`` (and ``{schema}``) and a fragment as
``{<its name>}``, looked up in its own file, then in ``common.sql``: composed fragments (the
due window, the earliest retry, whether an actor is live) have one text, used wherever they
are needed. The only thing formatted into SQL text is the schema name, which the configuration
validates as a plain identifier and which is quoted here; every value is a ``$n`` parameter.

Each part of the store formats its statements once, so the text of a statement is the same at
every call and asyncpg's prepared-statement cache finds it.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import asyncpg

from .migrations import quote_ident

SQL_DIR = Path(__file__).with_name("sql")
COMMON = "common"  # the file of fragments and statements every part may use
TABLES = ("tasks", "runs", "retries", "instances", "rate_budgets")

# A write of at least this many task rows, and at least as many as the planner's statistics
# know of, refreshes those statistics at once: until autovacuum's next look (up to a minute)
# plans made for a table that looked nearly empty read every row where an index would find the
# few wanted (the due window, claims). Smaller writes leave it to autovacuum (ANALYZE of 100,000
# rows takes 0.2 s).
ANALYZE_AFTER_ROWS = 1000

_NAME_LINE = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$")


@functools.cache
def read_named(file: str) -> dict[str, str]:
    """The statements of ``sql/<file>.sql`` by name, as written (placeholders unfilled)."""
    path = SQL_DIR / f"{file}.sql"
    found: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _NAME_LINE.match(line)
        if match is not None:
            name = match.group(1)
            if name in found:
                raise ValueError(f"{path}:{number}: a second statement named {name!r}")
            lines = found[name] = []
        elif lines is not None and (lines or not line.startswith("--")):
            lines.append(line)  # not one of the comment lines right after the name
    return {name: _trimmed(body) for name, body in found.items()}


def _trimmed(lines: list[str]) -> str:
    """The statement without the blank and comment lines that end it (the next one's preamble)."""
    while lines and (not lines[-1].strip() or lines[-1].startswith("--")):
        lines = lines[:-1]
    return "\n".join(lines)


def arrays(items: Sequence[Any], *names: str) -> list[list[Any]]:
    """Each attribute ``names`` of ``items`` as a list: the arrays a statement that writes many
    rows at once takes (one ``unnest`` of them, one round trip)."""
    return [list(map(attrgetter(name), items)) for name in names]


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes running servers after operator commands."""
    channel = f"discord_actor.{schema}"
    if len(channel) > 63:  # PostgreSQL's identifier limit
        channel = "discord_actor." + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return channel


class Statements:
    """One file's statements with one schema's tables and the fragments filled in."""

    def __init__(self, schema: str, file: str) -> None:
        quoted = quote_ident(schema)
        self._tables = {"schema": quoted} | {t: f"{quoted}.{t}" for t in TABLES}
        common, own = read_named(COMMON), read_named(file)
        if file != COMMON and (shared := common.keys() & own.keys()):
            raise ValueError(f"sql/{file}.sql: names also in sql/{COMMON}.sql: {sorted(shared)}")
        self._raw = common | own
        self._filled: dict[str, str] = {}

    def table(self, name: str) -> str:
        """A table of the schema (one of ``TABLES``), quoted: ``"discord_actor".tasks``."""
        return self._tables[name]

    def __getitem__(self, name: str) -> str:
        """The statement (or fragment) ``name``, ready to send."""
        text = self._filled.get(name)
        if text is None:
            text = self._filled[name] = self.compose(name)
        return text

    def compose(self, name: str, **parts: str) -> str:
        """The statement ``name`` with its placeholders filled: ``parts`` (SQL text) first,
        then the tables, then the fragments of that name."""
        raw = self._raw[name]
        values: dict[str, str] = {}
        for _, field, _, _ in string.Formatter().parse(raw):
            if field is None or field in values:
                continue
            if field in parts:
                values[field] = parts[field]
            elif field in self._tables:
                values[field] = self._tables[field]
            elif field in self._raw and field != name:
                values[field] = self[field]
            else:
                raise KeyError(f"{name}: no table, fragment or part named {field!r}")
        return raw.format_map(values)


class Aggregate:
    """One part of the store: the pool, the schema and the statements of ``sql/<SQL_FILE>.sql``."""

    SQL_FILE = COMMON

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self.sql = Statements(schema, self.SQL_FILE)

    @property
    def channel(self) -> str:
        """The schema's LISTEN/NOTIFY channel (``notify_channel``)."""
        return notify_channel(self.schema)

    async def refresh_statistics(self, written: int) -> bool:
        """ANALYZE the tasks table if ``written`` rows (just written, by reconcile or by adding
        keyed schedules) are many and at least as many as its statistics count
        (``ANALYZE_AFTER_ROWS``); True if it did."""
        if written < ANALYZE_AFTER_ROWS:
            return False
        known = await self.pool.fetchval(self.sql["table_rows"], self.sql.table("tasks"))
        if known is not None and written < known:
            return False
        await self.pool.execute(self.sql["analyze_tasks"])
        return True
