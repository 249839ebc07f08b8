"""Waiting for another process's preload: poll the cache (no network) until every snapshot is complete."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..cache import atomic, locks, records
from ..cache.layout import Layout
from ..cache.records import Completeness
from ..config import Settings
from ..errors import TransientError, UnsafePathError
from ..logs import Clock, event
from ..spec import RepoSpec
from .deadline import Deadline
from .engine import check_requested
from .results import PreloadResult
from .tiers import Tiers

logger = logging.getLogger(__name__)


def wait_ready(settings: Settings, *, timeout: float | None, poll: float = 1.0,
               sleep: Callable[[float], None] = time.sleep) -> list[PreloadResult]:
    """Block until every requested snapshot is complete in the cache; TransientError at `timeout`."""
    check_requested(settings)
    layout = settings.layout
    clock = Clock()
    deadline = Deadline(timeout)
    logged: float | None = None
    tiers = Tiers(settings)
    while True:
        found = [_ready(layout, tiers, settings, spec) for spec in settings.repos]
        states = [state for _, state in found]
        pending = [state for state in states if not state.complete]
        if not pending:
            break
        unsafe = [state for state in pending if state.unsafe is not None]
        if unsafe:  # no other process's preload can make these ready: say so now, not at the timeout
            raise UnsafePathError("; ".join(f"{state.spec}: {state.detail}" for state in unsafe))
        left = deadline.left()
        if left is not None and left <= 0:
            raise TransientError(f"timed out after {clock.seconds():.0f} s waiting for "
                                 + "; ".join(f"{state.spec}: {state.detail}" for state in pending))
        if logged is None or clock.seconds() - logged >= locks.WAIT_LOG_INTERVAL:  # as it starts, then every 10 s
            logged = clock.seconds()
            event(logger, "wait", pending=",".join(str(state.spec) for state in pending), elapsed=f"{logged:.0f}s")
        sleep(poll if left is None else max(0.0, min(poll, left)))
    optional = atomic.DispensableWrites()
    for where, state in found:
        if where is layout:
            optional.write("last use", records.mark_used, layout, state.spec, state.commit)
    results = [PreloadResult.of(where, state, seconds=clock.seconds()) for where, state in found]
    event(logger, "done", repos=len(results), waited=clock.seconds())
    return results


def _ready(layout: Layout, tiers: Tiers, settings: Settings, spec: RepoSpec) -> tuple[Layout, Completeness]:
    """Where the request is complete: the cache, else a read-only tier (used where it is, no writes)."""
    locked = settings.lockfile.commit(spec) if settings.lockfile else None  # the lock file's commit, not refs/
    state = records.check(layout, spec, *([locked] if locked else []), selection=settings.selection(spec))
    if not state.complete:
        found = tiers.find(spec, locked)
        if found is not None:
            return found
    return layout, state
