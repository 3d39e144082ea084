"""The root of every exception discord-actor raises on purpose, and the errors that more than one
layer raises.

``except DiscordActorError`` catches them all (a bad config, a refused schedule, an operator
action on an unknown actor, the pool exhausted...). Each keeps the more specific base it had
before the root existed (``ValueError``, ``OSError``, ``RuntimeError``...), so code that
catches those keeps working.

``UnknownActor`` is raised both by the keyed schedules API and by the operator's commands, so it
is one class with both families' bases, defined here below both; ``keyed`` and ``operations``
export it (with ``ScheduleError`` and ``OperationError``) under the names they always had.
"""

from __future__ import annotations

from collections.abc import Sequence


class DiscordActorError(Exception):
    """Base class of every public discord-actor exception."""


class NotRetried(DiscordActorError):
    """An error that another attempt would meet again (Discord refused the post: a missing
    permission, an unknown channel): the run fails at once, without its retries, and is
    alerted on at once."""


class OperationError(DiscordActorError):
    """What an operator asked for and cannot have; ``str()`` says why, for a person."""


class ScheduleError(DiscordActorError):
    """Base of every error of the keyed schedules API."""


class UnknownActor(ScheduleError, OperationError):
    """No actor of that name: not in the configuration (the keyed schedules API), or neither
    configured nor ever run here (the operator's commands); most likely a typo.

    ``suggestion`` is the nearest known name (for "did you mean"), ``known`` the names there
    are; ``message``, when given, is the whole text (the keyed schedules API names the
    configuration file and its actors)."""

    def __init__(
        self,
        actor: str,
        suggestion: str | None = None,
        known: Sequence[str] = (),
        *,
        message: str | None = None,
    ) -> None:
        if message is None:
            hint = f"; did you mean {suggestion!r}?" if suggestion else ""
            message = f"unknown actor {actor!r}{hint}"
        super().__init__(message)
        self.actor = actor
        self.suggestion = suggestion
        self.known = list(known)
