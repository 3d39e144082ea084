"""Reading values out of parsed TOML, every problem at once.

Environment variables: in every string value (nested ``settings`` and arrays included),
``${NAME}`` is replaced by the variable's value and ``${NAME:-default}`` by the value, or by
``default`` when the variable is unset or empty (as in the shell). An unset ``${NAME}`` without
a default is a problem. That is all: ``$NAME``, ``$$`` and anything else are left as written,
there is no escaping and no nesting, and ``default`` ends at the first ``}``. A field that wants
a number or a boolean also accepts a string that used ``${...}``, converted after expansion
(``channel_id = "${ALERT_CHANNEL}"``), because the environment only holds strings.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from ..schedules.kind import KeyPath
from .lines import LineIndex, dotted
from .model import Problem
from .redaction import redact_text

_D = TypeVar("_D")
_UNCONVERTED = object()  # a value from the environment that is not what the key wants
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def describe_value(value: Any) -> str:
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


def suggest(word: str, choices: Iterable[str]) -> str:
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


class ValueReader:
    """Reads values out of parsed TOML, collecting problems instead of stopping at the first:
    each with the file, its line and its dotted key. The sections' reader (``reader.py``)
    builds on it, and schedule kinds read their keys through it (``schedules.kind.TomlReader``).
    """

    def __init__(self, label: str, text: str, environ: Mapping[str, str]) -> None:
        self.label = label
        self.text = text
        self.environ = environ
        self.problems: list[Problem] = []
        self.expanded: set[KeyPath] = set()  # string values that used ${...}

    @functools.cached_property
    def lines(self) -> LineIndex:
        """Built only when a problem needs a line: scanning 10,000 actors is not free."""
        return LineIndex(self.text)

    def problem(self, path: KeyPath, message: str, *, at: KeyPath | None = None) -> None:
        line = self.lines.line_of(path if at is None else at)
        self.problems.append(Problem(self.label, dotted(path), message, line))

    # -- environment -------------------------------------------------------------------------

    def expand(self, value: Any, path: KeyPath) -> Any:
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

    def table(self, parent: dict[str, Any], key: str, path: KeyPath) -> dict[str, Any] | None:
        """The sub-table ``key`` ({} if absent), or None (with a problem) if not a table."""
        value = parent.get(key, {})
        if isinstance(value, dict):
            return value
        self.problem(path, f"must be a table, not {self.describe(value, path)}")
        return None

    def known_keys(self, table: dict[str, Any], allowed: Iterable[str], path: KeyPath) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key not in allowed:
                hint = suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.problem((*path, key), f"unknown key{hint}")

    def require(self, table: dict[str, Any], key: str, path: KeyPath) -> bool:
        if key in table:
            return True
        self.problem((*path, key), "required key is missing")
        return False

    # -- scalars: each returns ``default`` when absent or invalid ----------------------------

    def describe(self, value: Any, path: KeyPath) -> str:
        """``describe_value``, but a value from the environment is not shown: it may be a secret."""
        if isinstance(value, str) and path in self.expanded:
            return "a string from the environment"
        return describe_value(value)

    def from_env(self, path: KeyPath, value: Any) -> bool:
        return isinstance(value, str) and path in self.expanded

    def converted(self, value: Any, path: KeyPath, convert: Callable[[str], Any],
                  what: str) -> Any:
        """``value`` converted by ``convert`` if it came from the environment (which holds only
        strings); ``_UNCONVERTED``, reported, if it does not convert."""
        if not self.from_env(path, value):
            return value
        try:
            return convert(value.strip())
        except ValueError:
            self.problem(path, f"must be {what}; the value from the environment is not")
            return _UNCONVERTED

    def integer(self, table: dict[str, Any], key: str, path: KeyPath, default: _D, *,
                minimum: int | None = None, why: str = "") -> int | _D:
        if key not in table:
            return default
        return self.integer_value(table[key], (*path, key), default, minimum=minimum, why=why)

    def integer_value(self, value: Any, path: KeyPath, default: _D, *,
                      minimum: int | None = None, why: str = "") -> int | _D:
        value = self.converted(value, path, int, "an integer")
        if value is _UNCONVERTED:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"must be an integer, not {self.describe(value, path)}")
            return default
        if minimum is not None and value < minimum:
            self.problem(path, f"must be at least {minimum}{why}, not {value}")
            return default
        return value

    def number(self, table: dict[str, Any], key: str, path: KeyPath, default: _D, *,
               minimum: float = 0.0, allow_minimum: bool = False) -> float | _D:
        """A finite int or float, greater than ``minimum`` (or equal, with ``allow_minimum``)."""
        if key not in table:
            return default
        path, value = (*path, key), table[key]
        value = self.converted(value, path, float, "a number")
        if value is _UNCONVERTED:
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

    def string(self, table: dict[str, Any], key: str, path: KeyPath, default: _D) -> str | _D:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str):
            self.problem((*path, key), f"must be a string, not {describe_value(value)}")
            return default
        return value

    def boolean(self, table: dict[str, Any], key: str, path: KeyPath, default: bool) -> bool:
        if key not in table:
            return default
        path, value = (*path, key), table[key]
        if self.from_env(path, value) and value.strip() in ("true", "false"):
            return bool(value.strip() == "true")
        if not isinstance(value, bool):
            self.problem(path, f"must be true or false, not {self.describe(value, path)}")
            return default
        return value

    def choice(self, table: dict[str, Any], key: str, path: KeyPath, default: _D,
               choices: tuple[str, ...], *, fold_case: bool = False) -> str | _D:
        value = self.string(table, key, path, None)
        if value is None:
            return default
        if fold_case:
            value = value.lower()
        if value not in choices:
            self.problem((*path, key),
                         f"{value!r} is not one of {one_of(choices)}{suggest(value, choices)}")
            return default
        return value

    def zone(self, table: dict[str, Any], key: str, path: KeyPath, default: _D) -> str | _D:
        name = self.string(table, key, path, None)
        if name is None:
            return default
        if zone_or_none(name) is None:
            self.problem((*path, key), f"unknown time zone {name!r}"
                         f"{suggest(name, available_timezones())} (use an IANA name such as "
                         "'UTC' or 'Europe/Berlin')")
            return default
        return name


    def names(self, t: dict[str, Any], key: str, p: KeyPath, default: tuple[str, ...],
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
                hint = suggest(name, choices) or f" (one of: {', '.join(choices)})"
                self.problem(path, f"unknown {what} {name!r}{hint}")
            elif name not in out:
                out.append(name)
        return tuple(out)

    def ids(self, t: dict[str, Any], key: str, p: KeyPath) -> tuple[int, ...]:
        value = t.get(key, [])
        if not isinstance(value, list):
            self.problem((*p, key),
                         f"must be an array of integer IDs, not {self.describe(value, (*p, key))}")
            return ()
        out = [self.integer_value(v, (*p, key, i), None, minimum=1) for i, v in enumerate(value)]
        return tuple(v for v in out if v is not None)


def zone_or_none(name: Any) -> ZoneInfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
