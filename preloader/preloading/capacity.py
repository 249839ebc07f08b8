"""A capacity for the cache: after a preload, least recently used snapshots go until the bound holds."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..cache.layout import Layout
from ..cache.locks import RepoLocks
from ..config import Settings
from ..logs import event
from ..spec import RepoSpec
from .engine import Preloader
from .results import PreloadResult

logger = logging.getLogger(__name__)


def preload_within(settings: Settings, *, progress: bool = False, metrics=None) -> list[PreloadResult]:
    """Preload what `settings` ask for, then hold the cache within PRELOADER_MAX_CACHE_SIZE."""
    preloader = Preloader(settings, progress=progress, metrics=metrics)
    results = preloader.run()
    keep_within(settings.layout, settings.max_cache_size, results, preloader.locks)
    return results


def keep_within(layout: Layout, capacity: int | None, results: Sequence[PreloadResult],
                locking: RepoLocks | None = None):
    """Evict least recently used complete snapshots until the cache is at most `capacity` bytes; never one
    of `results` (what was just preloaded), never one whose repo lock is held. The RemovalReport, or None
    without a capacity."""
    if not capacity:
        return None
    from ..cache.manage import prune  # only with a capacity: listing the cache is not a cached start's work

    keep = [RepoSpec(r.repo_type, r.repo_id, r.commit) for r in results]
    report = prune(layout, max_size=capacity, keep=keep, locking=locking, leftovers=False)
    if report.removed or report.skipped:
        event(logger, "capacity", bound=capacity, evicted=len(report.removed), freed=report.freed,
              skipped=len(report.skipped))
    return report
