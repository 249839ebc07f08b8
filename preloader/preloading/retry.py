"""When and how long to retry: transient hub failures only, exponential backoff with jitter.

The `Retrying` object is built at run time from settings, so tests can inject
`sleep` and read the exact schedule.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying
from ..errors import TransientError
from ..logs import event

logger = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
RETRY_AFTER_CAP = 120.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # an HTTP-date: rare, and email's import is not free

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2**(attempt-1))], at least 0.1 s."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
    return max(0.1, ceiling * rng())


def retrying(
    attempts: int,
    *,
    what: str,
    seconds_left: Callable[[], float | None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[str], None] = lambda reason: None,
) -> Retrying:
    """Retry TransientError up to `attempts` times; a server's Retry-After wins over backoff (capped)."""
    # tenacity costs start-up time, and a cached start never retries anything.
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_any

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = min(retry_after, RETRY_AFTER_CAP)
        else:
            delay = backoff(state.attempt_number, rng)
        left = seconds_left()
        return delay if left is None else max(0.0, min(delay, left))

    def out_of_time(state: RetryCallState) -> bool:
        left = seconds_left()
        return left is not None and left <= 0

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        event(
            logger, "retry", logging.WARNING, what=what, attempt=state.attempt_number,
            of=attempts, wait=f"{state.upcoming_sleep:.1f}s", error=error,
        )
        on_retry(type(error).__name__)  # the error's class: a bounded label, never a message

    return Retrying(
        stop=stop_any(stop_after_attempt(attempts), out_of_time),
        wait=wait,
        retry=retry_if_exception(lambda e: isinstance(e, TransientError)),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )

