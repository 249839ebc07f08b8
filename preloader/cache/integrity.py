"""Re-hash cached files against their etags, and repair only what is broken.

The rule is `hf cache verify`'s: an LFS file's etag is its sha256, any other
file's etag is its git blob id (sha1 of "blob <size>\\0" + content). The blob's
file name is its etag, so no network call is needed to check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import RepoSpec
from . import atomic, hashing, records, store
from .inventory import snapshot_blobs
from .layout import Layout

logger = logging.getLogger(__name__)


@dataclass
class SnapshotCheck:
    repo_type: str
    repo_id: str
    commit: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unsafe: str | None = None  # a folder of the repo leads out of the cache: nothing was read through it

    @property
    def broken(self) -> list[str]:
        return sorted(set(self.missing + self.truncated + self.corrupt) - set(self.repaired))

    @property
    def ok(self) -> bool:
        return not self.broken and self.unsafe is None


def check_snapshot(layout: Layout, spec: RepoSpec, commit: str) -> SnapshotCheck:
    """Check every file of a snapshot: present, at the recorded size, hashing to its etag."""
    result = SnapshotCheck(spec.repo_type, spec.repo_id, commit)
    result.unsafe = atomic.first_escape(layout.guarded_folders(spec))
    if result.unsafe is not None:
        logger.warning("%s %s@%s not checked: %s", spec.repo_type, spec.repo_id, commit[:12], result.unsafe)
        return result
    snapshot = layout.snapshot_dir(spec, commit)
    blobs = snapshot_blobs(snapshot)
    record = records.read(layout, spec, commit)
    expected = dict(record.complete) if record else {}
    for rel in sorted(set(expected) | set(blobs)):
        blob = blobs.get(rel)
        if blob is None or not blob.exists():
            result.missing.append(rel)
            continue
        size = blob.stat().st_size
        if rel in expected and size != expected[rel]:
            result.truncated.append(rel)
            continue
        result.checked += 1
        if hashing.matches(blob, blob.name) is False:
            result.corrupt.append(rel)
    return result


def drop_bad_files(layout: Layout, spec: RepoSpec, check: SnapshotCheck) -> dict[str, Path]:
    """Delete the bad blobs and their snapshot links so a fetch brings them back. A blob that links into
    the shared store loses only its link (other repos may link the entry too): {file: store entry} for
    those, for `store.publish` once the good bytes are back."""
    snapshot = layout.snapshot_dir(spec, check.commit)
    blobs = snapshot_blobs(snapshot)
    stored: dict[str, Path] = {}
    for rel in check.broken:
        blob = blobs.get(rel)
        if blob is not None and blob.parent == layout.blobs_dir(spec):
            entry = store.target(blob, layout.cache_dir)
            if entry is not None:
                stored[rel] = entry
            atomic.remove(blob, layout.roots)
        atomic.remove(snapshot / rel, layout.roots)
    return stored
