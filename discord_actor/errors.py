"""The root of every exception discord-actor raises on purpose.

``except DiscordActorError`` catches them all (a bad config, a refused schedule, an operator
action on an unknown actor, the pool exhausted...). Each keeps the more specific base it had
before the root existed (``LookupError``, ``ValueError``, ``RuntimeError``...), so code that
catches those keeps working.
"""

from __future__ import annotations


class DiscordActorError(Exception):
    """Base class of every public discord-actor exception."""
