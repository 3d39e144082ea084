"""Key paths and the lines they are on.

The TOML parser does not report line numbers, so :class:`LineIndex` scans the raw text for keys
and table headers; problems found after loading (``line_of``) use the same index.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..schedules.kind import KeyPath


def line_of(path: Path, key: tuple[str | int, ...]) -> int | None:
    """The line of ``key`` (e.g. ``("actors", 2, "module")``) in the file at ``path``, for
    errors found after loading; None if the file cannot be read."""
    try:
        return LineIndex(path.read_text("utf-8")).line_of(key)
    except (OSError, UnicodeDecodeError):
        return None


def dotted(path: KeyPath) -> str:
    """``("actors", 2, "name")`` as ``actors[2].name``, the form problems name keys in."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class Duplicate:
    """A key set, or a table declared, a second time: TOML allows each once."""

    path: KeyPath
    line: int
    first_line: int
    header: str | None  # the table's header as written (``[server]``); None for a key


class LineIndex:
    """Maps key paths such as ``("actors", 2, "schedule", "expression")`` to line numbers.

    Understands table headers, ``[[arrays of tables]]`` (counting entries), dotted and quoted
    keys, and skips over strings and multi-line values. A path it did not see (a missing key,
    a key inside an inline table, an array element) maps to its nearest ancestor that it did.
    ``duplicates`` lists the keys and tables given twice, which the TOML parser refuses
    without naming them.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._defined: dict[KeyPath, int] = {}  # keys set and tables declared: their line
        self.duplicates: list[Duplicate] = []
        arrays: dict[KeyPath, int] = {}  # array-of-tables path -> entries so far
        current: KeyPath = ()
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
                    else:
                        self._define(current, lineno, f"[{'.'.join(key[0])}]")
                continue
            key = _parse_key(line, start)
            if key is not None and line.startswith("=", key[1]):
                for n in range(1, len(key[0]) + 1):  # a.b.c = 1 also defines a and a.b
                    self._lines.setdefault((*current, *key[0][:n]), lineno)
                self._define((*current, *key[0]), lineno, None)
                depth, multiline = _scan(line, key[1] + 1, depth, multiline)

    def _define(self, path: KeyPath, lineno: int, header: str | None) -> None:
        first = self._defined.setdefault(path, lineno)
        if first != lineno:
            self.duplicates.append(Duplicate(path, lineno, first, header))

    @staticmethod
    def _header(parts: list[str], is_array: bool, arrays: dict[KeyPath, int]) -> KeyPath:
        resolved: KeyPath = ()
        for part in parts[:-1]:
            resolved = (*resolved, part)
            if resolved in arrays:
                resolved = (*resolved, arrays[resolved] - 1)
        resolved = (*resolved, parts[-1])
        if is_array:
            arrays[resolved] = arrays.get(resolved, 0) + 1
            resolved = (*resolved, arrays[resolved] - 1)
        return resolved

    def line_of(self, path: KeyPath) -> int | None:
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

