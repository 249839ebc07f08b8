"""Retry policy: what is retried, how long it waits, when it stops. Sleep is injected, never real."""

from __future__ import annotations

import email.utils
import time

import pytest

from preloader.errors import NotFoundError, TransientError
from preloader.hub.errors import HubUnreachable
from preloader.preloading.retry import RETRY_AFTER_CAP, backoff, parse_retry_after, retrying


def test_parse_retry_after_both_forms():
    assert parse_retry_after("7") == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_exponential_with_full_jitter_and_capped():
    assert [backoff(n, rng=lambda: 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(3, rng=lambda: 0.5) == 2.0
    assert backoff(1, rng=lambda: 0.0) == 0.1


def run(failures, attempts=5, seconds_left=lambda: None):
    sleeps = []
    calls = []

    def call():
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "ok"

    r = retrying(attempts, what="t", sleep=sleeps.append, rng=lambda: 1.0, seconds_left=seconds_left)
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
