"""When and how long to retry: the hub's transient failures only, with tenacity's backoff.

What is retried: the hub unreachable or busy (HubUnreachable: refused, reset, timed out, 408/429/5xx) and
bytes that are not the ones asked for (ContentMismatch). Nothing else: a lock wait that timed out has
already waited PRELOADER_LOCK_TIMEOUT and is final, and a refusal or a full disk will not change.

The `Retrying` object is built at run time from settings, so tests inject `sleep` (and the backoff) and
read the exact schedule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..hub.errors import ContentMismatch, HubUnreachable
from ..logs import event

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying
    from tenacity.wait import wait_base

logger = logging.getLogger(__name__)

BACKOFF_BASE = 1.0  # the first wait's ceiling; each one doubles it
BACKOFF_MAX = 30.0
BACKOFF_MIN = 0.1
RETRY_AFTER_CAP = 120.0  # a server asking for longer is not waited for longer than this
RETRIED = (HubUnreachable, ContentMismatch)


def full_jitter() -> wait_base:
    """Exponential backoff with full jitter (uniform in [0.1 s, min(30 s, 1 s * 2**(attempt-1))])."""
    from tenacity import wait_random_exponential

    return wait_random_exponential(multiplier=BACKOFF_BASE, max=BACKOFF_MAX, min=BACKOFF_MIN)


def retrying(
    attempts: int,
    *,
    what: str,
    seconds_left: Callable[[], float | None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
    backoff: wait_base | None = None,
    on_retry: Callable[[str], None] = lambda reason: None,
) -> Retrying:
    """Retry the RETRIED errors up to `attempts` calls in all; a server's Retry-After wins over `backoff`
    (capped at RETRY_AFTER_CAP), and no wait runs past the deadline `seconds_left()`."""
    # tenacity costs start-up time, and a cached start never retries anything.
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_any

    backoff = backoff or full_jitter()

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        delay = min(retry_after, RETRY_AFTER_CAP) if retry_after is not None else backoff(state)
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
        retry=retry_if_exception_type(RETRIED),
        reraise=True,
        sleep=sleep,
        before_sleep=before_sleep,
    )
