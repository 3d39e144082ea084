"""Deciding how a run ended: the outcome to record, and the alert it calls for once stored.

Pure functions of what they are given (what the actor's code did, the actor's configuration, the
attempt, the time it ended): no database, no clock, no I/O, so that every way a run can end is
testable in a unit test, and the executor and the writer only carry the decisions out.

The circuit breaker itself is counted by the database (``finish_run``, in the statement that
stores the outcome, so the count holds however many processes finish runs of the actor): the
outcome says whether the run counts towards it and at which count it opens, and the counters the
write returns decide the alert.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from .alerts import Alert
from .config.model import ActorConfig
from .db.records import ClaimedRun, Finished, Outcome
from .enums import RunStatus, ScheduleKind
from .errors import DiscordActorError, NotRetried
from .storable import MAX_ERROR_MESSAGE, MAX_TRACEBACK, Unstorable, clean_text, jsonb_json

# What a run's actor code did: how it ended, the error it raised (or its stop's), and its new
# state as stored (JSON text) when it succeeded.
ActorCodeResult = tuple[RunStatus, BaseException | None, str | None]

# Read once: a member read from its enum class costs a descriptor call on Python 3.11 (60 ns),
# and these are read at every run.
_SUCCEEDED, _FAILED = RunStatus.SUCCEEDED, RunStatus.FAILED
_TIMED_OUT, _CANCELLED = RunStatus.TIMED_OUT, RunStatus.CANCELLED
_FAILURES = (_FAILED, _TIMED_OUT)  # retried while attempts are left, then counted by the breaker
_IMMEDIATE = ScheduleKind.IMMEDIATE
#: The error type of the plain failure recorded when the database refused a run's own outcome.
RECORD_ERROR = "RecordError"


class StateNotSerializable(DiscordActorError, TypeError):
    """An actor left something in ``ctx.state`` that JSON cannot hold."""


def state_json(state: object) -> str:
    """The state as stored; fails the run (not the bookkeeping) when PostgreSQL cannot hold it,
    naming the key, rather than have the database refuse the outcome of a run that succeeded."""
    try:
        return jsonb_json(state, "ctx.state")
    except Unstorable as e:
        raise StateNotSerializable(
            "ctx.state must hold only JSON values (dict, list, str, int, finite float, bool,"
            f" None; no NUL character): {e}"
        ) from None


def retry_delay(attempt: int, backoff: float, max_backoff: float) -> float:
    """Exponential backoff before attempt ``attempt + 1``."""
    return float(min(backoff * 2 ** (attempt - 1), max_backoff))


def succeeded_outcome(
    cfg: ActorConfig, new_state: str | None, posted: Sequence[dict[str, Any]]
) -> Outcome:
    """The outcome of a run that succeeded: its new state and posts, nothing else to decide (the
    common case, kept cheap: it needs no time, and ``posted`` is not copied)."""
    return Outcome(
        status=_SUCCEEDED,
        posted=posted,
        state_json=new_state,
        max_consecutive_failures=cfg.max_consecutive_failures,
    )


def decide_outcome(
    cfg: ActorConfig,
    attempt: int,
    ended: ActorCodeResult,
    posted: Sequence[dict[str, Any]],
    *,
    now: datetime,
    cancel_reason: str,
) -> Outcome:
    """The outcome to record for attempt ``attempt`` of a run that ended as ``ended`` at ``now``.

    A failure or a timeout is retried with exponential backoff while attempts are left, and
    counts towards the circuit breaker only once they are used up; a run cancelled by a shutdown
    is run again at the next start (an ``immediate`` actor's start brings its own run), and
    ``cancel_reason`` says why it was cancelled."""
    status, error, new_state = ended
    if status == _SUCCEEDED:
        return succeeded_outcome(cfg, new_state, posted)
    retry = cfg.retry
    retry_at: datetime | None = None
    not_retried = isinstance(error, NotRetried)  # another attempt would meet it again
    if status in _FAILURES and attempt < retry.attempts and not not_retried:
        delay = retry_delay(attempt, retry.backoff_seconds, retry.max_backoff_seconds)
        retry_at = now + timedelta(seconds=delay)
    elif (
        status == _CANCELLED
        and attempt < retry.attempts
        and cfg.schedule.type != _IMMEDIATE  # the next start brings its own run
    ):
        retry_at = now  # interrupted by a shutdown: run it again at next start
    message = None
    if status == _TIMED_OUT:
        message = f"run exceeded timeout_seconds = {cfg.timeout_seconds:g}"
    elif status == _CANCELLED:
        message = cancel_reason
    elif error is not None:
        message = str(error) or type(error).__name__
    return Outcome(
        status=status,
        error_type=None if error is None else clean_text(type(error).__name__, 200),
        error_message=None if message is None else clean_text(message, MAX_ERROR_MESSAGE),
        error_traceback=None
        if status != _FAILED or error is None
        else clean_text("".join(traceback.format_exception(error)), MAX_TRACEBACK),
        posted=list(posted),
        state_json=new_state,
        retry_at=retry_at,
        counts_as_failure=status in _FAILURES and retry_at is None,
        max_consecutive_failures=cfg.max_consecutive_failures,
        not_retried=not_retried,
    )


def refused_outcome(refused: Outcome, error: BaseException) -> Outcome:
    """The plain failure recorded in place of an outcome that the database refused (a value it
    cannot store): the run gets a final status all the same, and counts as a failure."""
    return Outcome(
        status=_FAILED,
        error_type=RECORD_ERROR,
        error_message=clean_text(
            f"the outcome could not be recorded: {type(error).__name__}: {error}",
            MAX_ERROR_MESSAGE,
        ),
        max_consecutive_failures=refused.max_consecutive_failures,
        counts_as_failure=True,
    )


def alert_due(run: ClaimedRun, outcome: Outcome, finished: Finished) -> Alert | None:
    """The alert a stored outcome calls for: the circuit breaker pausing the actor (or the
    keyed schedule), a failure that is not retried (Discord refused the post: someone has to
    fix it), or a failure that follows another; None for anything else."""
    if finished.breaker_tripped:
        paused = True
    elif outcome.not_retried or (outcome.counts_as_failure and finished.consecutive_failures >= 2):
        paused = False
    else:
        return None
    return Alert(
        run.actor, run.run_id, outcome, finished.consecutive_failures, paused, key=run.key
    )
