"""The nonce of a post: what makes a repeated post the same message on Discord.

Discord returns the message it made already when a post comes again with the same ``nonce``
(and ``enforce_nonce``) within a few minutes. The nonce is derived from what the post is (the
actor, the keyed schedule's key, the slot, the post's index in the run), never from the attempt
or the process, so the runtime's retries and a run taken over after a crash between sending and
recording send the same one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

#: Discord takes nonces of at most 25 characters
NONCE_CHARS = 25


def post_nonce(actor: str, key: str | None, slot: datetime, index: int) -> str:
    """The nonce of post number ``index`` (0, 1, ...) of the run of ``actor`` [``key``] for
    ``slot``: 25 hex digits (100 bits) of a hash of those."""
    when = slot.astimezone(UTC).isoformat()
    what = "\x00".join((actor, "" if key is None else key, when, str(index)))
    return hashlib.blake2b(what.encode(), digest_size=16).hexdigest()[:NONCE_CHARS]
