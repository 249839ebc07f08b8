"""Waiting for another process's preload: poll the cache (no network) until every snapshot is complete."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..cache import atomic, locks, records
from ..config import Settings
from ..errors import TransientError
from ..logs import Clock, event
from .deadline import Deadline
from .engine import check_requested
from .results import PreloadResult

logger = logging.getLogger(__name__)


def wait_ready(settings: Settings, *, timeout: float | None, poll: float = 1.0,
               sleep: Callable[[float], None] = time.sleep) -> list[PreloadResult]:
    """Block until every requested snapshot is complete in the cache; TransientError at `timeout`."""
    check_requested(settings)
    layout = settings.layout
    clock = Clock()
    deadline = Deadline(timeout)
    logged = 0.0
    while True:
        states = [records.check(layout, spec, include=settings.include, exclude=settings.exclude)
                  for spec in settings.repos]
        pending = [state for state in states if not state.complete]
        if not pending:
            break
        left = deadline.left()
        if left is not None and left <= 0:
            raise TransientError(f"timed out after {clock.seconds():.0f} s waiting for "
                                 + "; ".join(f"{state.spec}: {state.detail}" for state in pending))
        if clock.seconds() - logged >= locks.WAIT_LOG_INTERVAL:
            logged = clock.seconds()
            event(logger, "wait", pending=",".join(str(state.spec) for state in pending), elapsed=f"{logged:.0f}s")
        sleep(poll if left is None else max(0.0, min(poll, left)))
    optional = atomic.Optional()
    for state in states:
        optional.write("last use", records.mark_used, layout, state.spec, state.commit)
    results = [PreloadResult.of(layout, state, seconds=clock.seconds()) for state in states]
    event(logger, "done", repos=len(results), waited=clock.seconds())
    return results
