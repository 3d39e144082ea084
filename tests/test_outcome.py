"""How a run's ending becomes the outcome stored and the alert sent: the pure decision, without a
database or a clock (what the actor's code did, its configuration and the time are given)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from discord_actor import executor
from discord_actor.config import ActorConfig, RetryPolicy, ScheduleConfig
from discord_actor.db.records import ClaimedRun, Finished, Outcome, TaskView
from discord_actor.enums import RunStatus
from discord_actor.errors import DiscordActorError
from discord_actor.outcome import (
    StateNotSerializable,
    alert_due,
    decide_outcome,
    refused_outcome,
    retry_delay,
    state_json,
    succeeded_outcome,
)
from discord_actor.outcome_writer import RunNoLongerOwned
from discord_actor.storable import MAX_ERROR_MESSAGE

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
REASON = "the server is shutting down"


def config(
    attempts: int = 3,
    *,
    kind: str = "interval",
    backoff: float = 5.0,
    max_backoff: float = 300.0,
    max_failures: int = 5,
) -> ActorConfig:
    return ActorConfig(
        name="digest",
        module="digest",
        schedule=ScheduleConfig(type=kind, timezone="UTC", seconds=60.0),
        timeout_seconds=2.5,
        max_consecutive_failures=max_failures,
        retry=RetryPolicy(
            attempts=attempts, backoff_seconds=backoff, max_backoff_seconds=max_backoff
        ),
    )


def raised(error: BaseException) -> BaseException:
    """``error`` as the executor sees it: raised, with its traceback."""
    try:
        raise error
    except BaseException as e:
        return e


def failed(
    error: BaseException, cfg: ActorConfig | None = None, *, attempt: int = 1
) -> Outcome:
    return decide_outcome(
        cfg or config(),
        attempt,
        (RunStatus.FAILED, raised(error), None),
        [],
        now=NOW,
        cancel_reason=REASON,
    )


def timed_out(cfg: ActorConfig, attempt: int) -> Outcome:
    ended = (RunStatus.TIMED_OUT, TimeoutError(), None)
    return decide_outcome(cfg, attempt, ended, [], now=NOW, cancel_reason=REASON)


def cancelled(cfg: ActorConfig, attempt: int = 1) -> Outcome:
    ended = (RunStatus.CANCELLED, asyncio.CancelledError(), None)
    return decide_outcome(cfg, attempt, ended, [], now=NOW, cancel_reason=REASON)


def finished(consecutive_failures: int, *, tripped: bool = False) -> Finished:
    """What writing an outcome reports back: the failure counter after it, and whether it
    paused the actor (the database counts the breaker in the same statement)."""
    task = TaskView(1, "digest", True, tripped, 1, NOW, NOW, None, None, None, None)
    return Finished(task, consecutive_failures, "paused" if tripped else None, tripped)


def claimed(key: str | None = None) -> ClaimedRun:
    return ClaimedRun(7, 1, "digest", NOW, 3, "schedule", "running", {}, key=key)


# -- success ---------------------------------------------------------------------------------


def test_a_run_that_returned_succeeds_with_its_state_and_posts() -> None:
    posted = [{"message_id": 1, "content": "hi"}]
    outcome = decide_outcome(
        config(max_failures=4),
        2,
        (RunStatus.SUCCEEDED, None, '{"seen": 3}'),
        posted,
        now=NOW,
        cancel_reason=REASON,
    )
    assert outcome == Outcome(
        status="succeeded", posted=posted, state_json='{"seen": 3}', max_consecutive_failures=4
    )
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.retry_at is None and not outcome.counts_as_failure
    assert outcome == succeeded_outcome(config(max_failures=4), '{"seen": 3}', posted)


# -- failures --------------------------------------------------------------------------------


def test_a_failure_with_attempts_left_stores_the_error_and_schedules_a_retry() -> None:
    outcome = failed(RuntimeError("feed unreachable"), attempt=1)
    assert outcome.status is RunStatus.FAILED
    assert (outcome.error_type, outcome.error_message) == ("RuntimeError", "feed unreachable")
    assert outcome.error_traceback is not None
    assert outcome.error_traceback.startswith("Traceback (most recent call last):")
    assert outcome.error_traceback.endswith("RuntimeError: feed unreachable\n")
    assert outcome.retry_at == NOW + timedelta(seconds=5)
    assert not outcome.counts_as_failure  # not towards the breaker while it is retried
    assert outcome.state_json is None  # the stored state is kept


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    cfg = config(attempts=10, backoff=5.0, max_backoff=30.0)
    delays = [
        (failed(ValueError("x"), cfg, attempt=a).retry_at or NOW) - NOW for a in range(1, 6)
    ]
    assert delays == [timedelta(seconds=s) for s in (5, 10, 20, 30, 30)]
    assert [retry_delay(a, 5.0, 30.0) for a in range(1, 6)] == [5.0, 10.0, 20.0, 30.0, 30.0]


def test_a_failure_on_the_last_attempt_is_not_retried_and_counts_towards_the_breaker() -> None:
    outcome = failed(RuntimeError("still down"), config(attempts=3), attempt=3)
    assert (outcome.status, outcome.error_type) == ("failed", "RuntimeError")
    assert outcome.retry_at is None
    assert outcome.counts_as_failure
    assert outcome.max_consecutive_failures == 5


def test_no_retry_policy_means_the_first_failure_counts() -> None:
    outcome = failed(KeyError("id"), config(attempts=1))
    assert (outcome.error_type, outcome.error_message) == ("KeyError", "'id'")
    assert outcome.retry_at is None and outcome.counts_as_failure


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    outcome = failed(RuntimeError())
    assert (outcome.error_type, outcome.error_message) == ("RuntimeError", "RuntimeError")


def test_a_huge_error_message_is_capped_and_nul_replaced() -> None:
    outcome = failed(RuntimeError("a\x00b" + "x" * 100_000))
    assert outcome.error_message is not None
    assert len(outcome.error_message) <= MAX_ERROR_MESSAGE
    assert outcome.error_message.startswith("a\ufffdb")
    assert "characters cut" in outcome.error_message


def test_state_that_cannot_be_stored_fails_the_run_naming_the_key() -> None:
    with pytest.raises(StateNotSerializable) as caught:
        state_json({"last": float("nan")})
    assert "ctx.state['last'] (nan)" in str(caught.value)
    outcome = failed(caught.value, attempt=1)
    assert (outcome.status, outcome.error_type) == ("failed", "StateNotSerializable")
    assert "ctx.state['last'] (nan)" in (outcome.error_message or "")
    assert outcome.state_json is None  # what was stored before stays
    assert outcome.retry_at == NOW + timedelta(seconds=5)  # a failure like any other


def test_state_json_is_the_stored_text() -> None:
    assert state_json({"n": 1, "tags": ["a"]}) == '{"n": 1, "tags": ["a"]}'


# -- timeouts --------------------------------------------------------------------------------


def test_a_timeout_says_the_limit_and_is_retried_like_a_failure() -> None:
    outcome = timed_out(config(attempts=2), attempt=1)
    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.error_type == "TimeoutError"
    assert outcome.error_message == "run exceeded timeout_seconds = 2.5"
    assert outcome.error_traceback is None  # where it was cancelled says nothing useful
    assert outcome.retry_at == NOW + timedelta(seconds=5)
    assert not outcome.counts_as_failure


def test_a_timeout_on_the_last_attempt_counts_towards_the_breaker() -> None:
    outcome = timed_out(config(attempts=2), attempt=2)
    assert outcome.retry_at is None and outcome.counts_as_failure


# -- cancellation ----------------------------------------------------------------------------


def test_a_run_cancelled_by_a_shutdown_runs_again_at_the_next_start() -> None:
    outcome = cancelled(config(attempts=3))
    assert outcome.status is RunStatus.CANCELLED
    assert (outcome.error_type, outcome.error_message) == ("CancelledError", REASON)
    assert outcome.error_traceback is None
    assert outcome.retry_at == NOW  # due at once: the next process to start runs it
    assert not outcome.counts_as_failure  # a shutdown is not the actor's failure


def test_a_cancelled_immediate_actor_is_not_retried_its_next_start_runs_it() -> None:
    outcome = cancelled(config(attempts=3, kind="immediate"))
    assert outcome.status == "cancelled" and outcome.retry_at is None
    assert not outcome.counts_as_failure


def test_a_cancelled_last_attempt_is_not_retried_nor_counted() -> None:
    outcome = cancelled(config(attempts=2), attempt=2)
    assert outcome.retry_at is None and not outcome.counts_as_failure


# -- the outcome the database refused --------------------------------------------------------


def test_an_outcome_the_database_refused_is_replaced_by_a_plain_failure() -> None:
    refused = failed(RuntimeError("boom"), config(attempts=3, max_failures=2))
    plain = refused_outcome(refused, ValueError("invalid input syntax"))
    assert plain.status is RunStatus.FAILED
    assert plain.error_type == "RecordError"
    assert plain.error_message == (
        "the outcome could not be recorded: ValueError: invalid input syntax"
    )
    assert plain.retry_at is None and plain.posted == () and plain.state_json is None
    assert plain.counts_as_failure and plain.max_consecutive_failures == 2


# -- the circuit breaker and alerts ----------------------------------------------------------


def test_the_breaker_opening_at_max_consecutive_failures_alerts_that_the_actor_paused() -> None:
    outcome = failed(RuntimeError("down"), config(attempts=1, max_failures=3))
    assert outcome.counts_as_failure and outcome.max_consecutive_failures == 3
    alert = alert_due(claimed(), outcome, finished(3, tripped=True))
    assert alert is not None and alert.paused
    assert (alert.actor, alert.run_id, alert.consecutive_failures) == ("digest", 7, 3)
    assert alert.text() == (
        "actor digest paused after 3 consecutive failures (last: run 7, RuntimeError: down);"
        " resume it with: discord-actor resume digest"
    )


def test_the_breaker_of_a_keyed_schedule_pauses_only_that_key() -> None:
    outcome = failed(RuntimeError("down"), config(attempts=1, max_failures=2))
    alert = alert_due(claimed(key="guild-1"), outcome, finished(2, tripped=True))
    assert alert is not None and alert.paused and alert.key == "guild-1"
    assert alert.text().startswith("schedule 'guild-1' of actor digest paused after 2")


def test_a_second_failure_in_a_row_alerts_before_the_breaker_opens() -> None:
    outcome = failed(RuntimeError("down"), config(attempts=1, max_failures=5))
    alert = alert_due(claimed(), outcome, finished(2))
    assert alert is not None and not alert.paused
    assert alert.text() == (
        "actor digest failed 2 times in a row (last: run 7, RuntimeError: down)"
    )


def test_a_first_failure_a_retried_one_or_a_success_alerts_nobody() -> None:
    last = failed(RuntimeError("down"), config(attempts=1))
    assert alert_due(claimed(), last, finished(1)) is None
    retried = failed(RuntimeError("down"), config(attempts=3), attempt=1)
    assert alert_due(claimed(), retried, finished(4)) is None
    ok = succeeded_outcome(config(), "{}", [])
    assert alert_due(claimed(), ok, finished(0)) is None


# -- the errors ------------------------------------------------------------------------------


def test_the_run_errors_keep_their_bases_under_the_root_and_their_old_import_place() -> None:
    assert issubclass(StateNotSerializable, TypeError)
    assert issubclass(StateNotSerializable, DiscordActorError)
    assert issubclass(RunNoLongerOwned, RuntimeError)
    assert issubclass(RunNoLongerOwned, DiscordActorError)
    assert (executor.StateNotSerializable, executor.RunNoLongerOwned) == (
        StateNotSerializable,
        RunNoLongerOwned,
    )
    assert (executor.retry_delay, executor.state_json) == (retry_delay, state_json)
