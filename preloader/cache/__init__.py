"""The shared cache on disk, and managing it as a Python API: list, status, verify, remove, prune.

    from preloader import cache
    info = cache.list_cache("/cache/hub")
    report = cache.prune("/cache/hub", max_size=200 * 2**30, dry_run=True)

Inside: `layout` (every path), `atomic` (publication by rename), `locks`, `records`
(completion: the one judge of "complete"), `trees` (huggingface_hub's tree listings), `publication` (the one
way a snapshot is published), `hashing` (etags: files, checked copies, downloads), `store` (huggingface_hub's
shared blob store), `inventory` (what is there), `evict` (removal), `integrity` (re-hashing against etags),
`manage` (the API below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "CacheInfo", "RepoInfo", "RevisionInfo", "SnapshotStatus", "SnapshotCheck", "Removal", "RemovalReport",
    "DedupReport", "list_cache", "status", "verify", "remove", "prune", "dedup",
]

if TYPE_CHECKING:
    from .manage import (
        CacheInfo,
        DedupReport,
        Removal,
        RemovalReport,
        RepoInfo,
        RevisionInfo,
        SnapshotCheck,
        SnapshotStatus,
        dedup,
        list_cache,
        prune,
        remove,
        status,
        verify,
    )


def __getattr__(name: str):
    # The management API loads on first use: every start imports this package (for its layout and
    # records), and a cached start before exec is a hot path that never lists or removes anything.
    if name in __all__:
        from . import manage

        return getattr(manage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
