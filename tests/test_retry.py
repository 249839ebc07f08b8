"""Retry policy: what is retried, how long it waits, when it stops. Sleep is injected, never real."""

from __future__ import annotations

import email.utils
import time

import pytest
from tenacity import wait_exponential

from preloader.errors import LockTimeoutError, NotFoundError, TransientError
from preloader.hub.errors import ContentMismatch, HubUnreachable, NetworkError, parse_retry_after, status_error
from preloader.preloading.retry import RETRY_AFTER_CAP, full_jitter, retrying

CEILING = wait_exponential(multiplier=1, max=30)  # full jitter's upper bound: what the tests schedule against


def test_parse_retry_after_both_forms():
    assert parse_retry_after("7") == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


class State:
    def __init__(self, attempt_number):
        self.attempt_number = attempt_number


def test_backoff_is_exponential_with_full_jitter_and_capped(monkeypatch):
    import tenacity.wait

    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: high)
    assert [full_jitter()(State(n)) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: low)
    assert full_jitter()(State(5)) == 0.1


def run(failures, attempts=5, seconds_left=lambda: None):
    sleeps = []
    calls = []

    def call():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    r = retrying(attempts, what="t", sleep=sleeps.append, backoff=CEILING, seconds_left=seconds_left)
    return r, call, sleeps, calls


def test_transient_errors_are_retried_with_backoff_then_succeed():
    r, call, sleeps, calls = run([HubUnreachable("503"), HubUnreachable("timeout")])
    assert r(call) == "ok"
    assert sleeps == [1.0, 2.0]
    assert len(calls) == 3


def test_retry_after_wins_and_is_capped():
    r, call, sleeps, _ = run([HubUnreachable("429", retry_after=5), HubUnreachable("429", retry_after=10_000)])
    assert r(call) == "ok"
    assert sleeps == [5.0, RETRY_AFTER_CAP]


def test_permanent_errors_are_not_retried():
    r, call, sleeps, calls = run([NotFoundError("gone")])
    with pytest.raises(NotFoundError):
        r(call)
    assert sleeps == [] and len(calls) == 1


def test_gives_up_after_attempts_with_the_last_error():
    r, call, sleeps, calls = run([HubUnreachable(str(i)) for i in range(10)], attempts=3)
    with pytest.raises(TransientError, match="2"):
        r(call)
    assert len(calls) == 3 and sleeps == [1.0, 2.0]


def test_deadline_shortens_the_wait_and_stops():
    left = iter([1.5, 1.5, 0.0, 0.0])
    r, call, sleeps, calls = run([HubUnreachable("a"), HubUnreachable("b"), HubUnreachable("c")],
                                 seconds_left=lambda: next(left))
    with pytest.raises(HubUnreachable):
        r(call)
    assert sleeps == [1.0] and len(calls) == 2


@pytest.mark.parametrize("error", [
    NetworkError("reset"), ContentMismatch("wrong hash"),
    status_error(503, "http://hub/x", {}), status_error(429, "http://hub/x", {}),
])
def test_network_hub_and_content_errors_are_retried(error):
    r, call, sleeps, calls = run([error])
    assert r(call) == "ok" and len(calls) == 2 and sleeps == [1.0]


@pytest.mark.parametrize("error", [
    LockTimeoutError("timed out after 1 s waiting for the lock"),  # it waited PRELOADER_LOCK_TIMEOUT already
    TransientError("the fetch was stopped"),
    status_error(404, "http://hub/x", {}), status_error(403, "http://hub/x", {}),
])
def test_what_is_not_transient_is_final(error):
    r, call, sleeps, calls = run([error])
    with pytest.raises(type(error)):
        r(call)
    assert sleeps == [] and len(calls) == 1


def test_retry_after_of_a_busy_answer_is_parsed_where_it_arrives():
    error = status_error(429, "http://hub/x", {"Retry-After": "7"})
    r, call, sleeps, _ = run([error])
    assert error.retry_after == 7.0 and r(call) == "ok" and sleeps == [7.0]
