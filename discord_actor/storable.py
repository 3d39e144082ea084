"""Making what a run leaves behind storable: PostgreSQL refuses some values that Python holds.

A ``text`` column refuses the NUL character, and ``jsonb`` refuses NUL (``\\u0000``) and the
non-finite numbers (``NaN``, ``Infinity``). An outcome the database refuses would turn a run that
succeeded into a failure, so error texts and posts are cleaned before they are written (NUL becomes
U+FFFD, a non-finite number its name as a string), and the actor's state, which the actor reads
again, is checked instead (the run fails naming the key). Error texts are capped too: an exception
message of 20 MB would otherwise be stored, and printed by ``history``, at every run.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import DiscordActorError

MAX_ERROR_MESSAGE = 4 * 1024  # characters of an error message that are stored
MAX_TRACEBACK = 16 * 1024  # characters of a traceback that are stored
REPLACEMENT = "\ufffd"


def cap(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, keeping its head and its tail (where the exception
    and its last frames are), with what was cut said in the middle."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - 40)  # room for the marker
    head = keep * 2 // 3
    tail = keep - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[… {cut} characters cut …]\n{text[len(text) - tail:]}"


def clean_text(text: str, limit: int) -> str:
    """An error text as a ``text`` column stores it: capped, NUL replaced by U+FFFD."""
    text = cap(text, limit)
    return text.replace("\x00", REPLACEMENT) if "\x00" in text else text


def _clean(value: Any) -> Any:
    """``value`` with NUL replaced in every string and non-finite numbers named."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return _clean(str(value)) if not isinstance(value, int | float | bool | None) else value


def storable_json(value: Any) -> str:
    """JSON that ``jsonb`` accepts, for what the runtime records (posts): values JSON cannot
    hold become strings, NUL becomes U+FFFD, non-finite numbers their names."""
    try:
        text = json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_clean(value))
    return json.dumps(_clean(value)) if "\\u0000" in text else text


def refused_in(value: Any, path: str = "ctx.state") -> str | None:
    """Where ``value`` holds something ``jsonb`` refuses (``ctx.state['k'][0]``), or None."""
    if isinstance(value, str):
        return f"{path} (a NUL character)" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} ({value})"
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}[{k!r}]"
            if isinstance(k, str) and "\x00" in k:
                return f"{where} (a NUL character in the key)"
            found = refused_in(v, where)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = refused_in(v, f"{path}[{i}]")
            if found:
                return found
    elif not isinstance(value, int | None):
        return f"{path} (a {type(value).__name__}, not a JSON value)"
    return None


class Unstorable(DiscordActorError, ValueError):
    """A value ``jsonb`` would refuse; the message says where in it (``payload['when']``)."""


def jsonb_json(value: Any, path: str, *, canonical: bool = False) -> str:
    """``value`` as JSON that ``jsonb`` stores as it is, for what an actor reads back (its state,
    a payload); ``Unstorable`` naming where it holds something that cannot be stored. The value
    is walked only when encoding fails or the text holds an escaped NUL (rare). ``canonical``:
    sorted keys, no spaces, so that equal values give equal text."""
    try:
        if canonical:
            text = json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"))
        else:
            text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Unstorable(refused_in(value, path) or str(e)) from None
    if "\\u0000" in text:
        where = refused_in(value, path)
        if where is not None:  # else the six characters \u0000 themselves, which jsonb accepts
            raise Unstorable(where)
    return text
