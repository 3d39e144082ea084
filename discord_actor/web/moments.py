"""Times as the dashboard shows them: relative to the page's ``now`` ("in 4 s", "3 min ago"),
with the exact time and its zone for the hover.

Each actor's times are in its schedule's zone, so one column of ISO strings mixed ``+00:00``
and ``+01:00``; relative times read alike whatever the zone, and the exact one is a hover away.
They are computed when the page is rendered (so they need no JavaScript) and are as fresh as
the rest of the page: the refresh script reloads them with it, which keeps "next run: in 2 s"
and "last result: succeeded" one consistent picture instead of a countdown running past a run
the page has not seen yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

# Each unit is used until this many of it; then the next one takes over (90 s, then 2 min).
_UNITS = (("s", 1, 90), ("min", 60, 90), ("h", 3600, 48), ("d", 86400, 730))
_YEAR = 365.25 * 86400


@dataclass(frozen=True)
class Moment:
    """One time on a page: ``<time datetime="{iso}" title="{exact}">{relative}</time>``."""

    iso: str  # ISO 8601 with its offset, for the datetime attribute
    relative: str  # "in 4 s", "3 min ago", "now"
    exact: str  # "2026-03-29 03:00:00 CEST (UTC+02:00, Europe/Berlin)"


def moment(value: datetime | None, tz: tzinfo | None, now: datetime) -> Moment | None:
    """``value`` (aware) as seen at ``now``, shown in ``tz`` (UTC when None); None for none."""
    if value is None:
        return None
    local = value.astimezone(tz or UTC)
    return Moment(
        iso=local.isoformat(timespec="seconds"),
        relative=relative((value - now).total_seconds()),
        exact=exact(value, tz),
    )


def relative(seconds: float) -> str:
    """``seconds`` from now as a person says it: ``in 4 s``, ``3 min ago``, ``now``."""
    if abs(seconds) < 1:
        return "now"
    return f"in {amount(seconds)}" if seconds > 0 else f"{amount(seconds)} ago"


def amount(seconds: float) -> str:
    """A length of time, rounded down to its largest sensible unit: ``4 s``, ``3 min``, ``6 y``."""
    left = abs(seconds)
    for unit, size, most in _UNITS:
        if left < size * most:
            return f"{int(left // size)} {unit}"
    return f"{int(left // _YEAR)} y"


def exact(value: datetime, tz: tzinfo | None) -> str:
    """``value`` to the second in ``tz``, naming the zone: ``2026-03-29 03:00:00 CEST
    (UTC+02:00, Europe/Berlin)``; just ``... UTC`` in UTC."""
    local = value.astimezone(tz or UTC)
    name = local.tzname() or ""
    offset = _offset(local)
    details = []
    if name not in ("UTC", offset):
        details.append(offset)
    key = getattr(tz, "key", None)
    if key and key != name:
        details.append(key)
    shown = f"{local:%Y-%m-%d %H:%M:%S} {name}"
    return f"{shown} ({', '.join(details)})" if details else shown


def _offset(local: datetime) -> str:
    """``UTC+02:00``: the UTC offset to the minute (old zones' seconds are dropped)."""
    total = int((local.utcoffset() or timedelta()).total_seconds()) // 60
    hours, minutes = divmod(abs(total), 60)
    return f"UTC{'-' if total < 0 else '+'}{hours:02d}:{minutes:02d}"
