"""A capacity for the cache (PRELOADER_MAX_CACHE_SIZE): room made before a download, and the bound held after it.

Before a download, `make_room` evicts least recently used complete snapshots when the plan's missing bytes
would take the cache over the bound, or would not fit the free space; the engine's preflight then decides.
After a preload, `keep_within` evicts until the bound holds. Neither ever evicts a snapshot of a repo in the
plan, nor one whose repo lock is held.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence

from ..cache.layout import Layout
from ..cache.locks import RepoLocks
from ..config import Settings
from ..errors import DiskError, TransientError, UnsafePathError
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


class Room:
    """What `make_room` did: the snapshots evicted ("type repo@commit"), the bytes that freed, and the
    snapshots it left because their lock was held or a removal failed part-way. A plain class: this module is
    imported on every start, and creating a dataclass costs about a millisecond."""

    __slots__ = ("evicted", "freed", "skipped")

    def __init__(self) -> None:
        self.evicted: list[str] = []
        self.freed = 0
        self.skipped: list[str] = []


def make_room(layout: Layout, capacity: int, plan: Iterable[RepoSpec], *, needed: int, free: int | None,
              margin: int, locking: RepoLocks) -> Room | None:
    """Before downloading `needed` bytes: evict least recently used complete snapshots until the cache plus
    `needed` is within `capacity` and `needed + margin` fits the free space. None when neither asks for it.

    Every snapshot of a repo in `plan` stays (the one being replaced shares blobs with what comes), and so
    does every snapshot of a repo whose lock is held. The snapshots are chosen, and their locks taken, before
    anything goes: when all that may go would still leave the download without space, nothing is evicted and
    DiskError (74) says so with the numbers."""
    from ..cache import evict, manage  # listing the cache: only when a download is coming and a bound is set
    from ..cache.inventory import scan

    info = scan(layout)
    over = max(0, info.size + needed - capacity)  # what the bound asks to free
    short = max(0, needed + margin - free) if free is not None else 0  # what the disk asks to free
    if not over and not short:
        return None
    kept = {(s.repo_type, s.repo_id) for s in plan}
    room, chosen, gone, locked_here = Room(), {}, set(), set()
    in_plan = set()
    with contextlib.ExitStack() as held:
        for _, repo, rev in manage._eviction_order(layout, info, (), 0):
            if room.freed >= max(over, short):
                break
            name = f"{repo.repo_type} {repo.repo_id}@{rev.commit[:12]}"
            if (repo.repo_type, repo.repo_id) in kept:
                in_plan.add(name)
                continue
            if repo.unsafe is not None:
                continue
            if repo.path not in locked_here:
                try:  # held until the removals are done: a preload starting meanwhile waits, then finds it gone
                    held.enter_context(locking.hold(repo.spec, timeout=0))
                except (TransientError, UnsafePathError):
                    room.skipped.append(f"{name}: locked")
                    continue
                locked_here.add(repo.path)
            room.freed += manage._exclusive_size(layout, repo, rev, gone)
            gone.add(rev.path)
            chosen.setdefault(repo.path, set()).add(rev.commit)
            room.evicted.append(name)
        if room.freed < short:
            raise DiskError(
                f"not enough space on the cache volume {layout.cache_dir}: the plan needs {needed:,} bytes more, "
                f"{free:,} are free and {margin:,} must stay free (PRELOADER_MIN_FREE); evicting every other "
                f"complete snapshot would free only {room.freed:,} bytes (PRELOADER_MAX_CACHE_SIZE), so none "
                f"was evicted{_kept(room.skipped, in_plan)}; free space (`preloader prune`) or use a bigger volume")
        freed, room.evicted = 0, []
        for repo_dir, commits in chosen.items():
            removed, bytes_freed, failed = evict.remove_commits(layout, repo_dir, commits, "room for a download")
            freed += bytes_freed
            room.evicted += [f"{r.repo_type} {r.repo_id}@{r.commit[:12]}" for r in removed]
            room.skipped += failed
        room.freed = freed
    event(logger, "capacity.room", bound=capacity, needed=needed, evicted=len(room.evicted), freed=room.freed,
          skipped=len(room.skipped))
    for line in room.skipped:
        logger.warning("not evicted: %s", line)
    return room


def _kept(skipped: list[str], in_plan: set[str]) -> str:
    """Why the rest stays: `; kept: ...` naming the plan's own and the locked snapshots (five of each)."""
    locked = [line.removesuffix(": locked") for line in skipped]
    parts = [f"{why}: " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
             for why, names in (("in the plan", sorted(in_plan)), ("locked", locked)) if names]
    return f" (kept, {'; '.join(parts)})" if parts else ""
