"""The shared cache on disk, and managing it as a Python API: list, status, verify, remove, prune.

    from preloader import cache
    info = cache.list_cache("/cache/hub")
    report = cache.prune("/cache/hub", max_size=200 * 2**30, dry_run=True)

Inside: `layout` (every path), `atomic` (publication by rename), `locks`, `records`
(completion: the one judge of "complete"), `hashing` (etags), `inventory` (what is there),
`evict` (removal), `verify` (re-hashing), `manage` (the API below).
"""

from .manage import (
    CacheInfo,
    Removal,
    RemovalReport,
    RepoInfo,
    RevisionInfo,
    SnapshotCheck,
    SnapshotStatus,
    list_cache,
    prune,
    remove,
    status,
    verify,
)

__all__ = [
    "CacheInfo", "RepoInfo", "RevisionInfo", "SnapshotStatus", "SnapshotCheck", "Removal", "RemovalReport",
    "list_cache", "status", "verify", "remove", "prune",
]
