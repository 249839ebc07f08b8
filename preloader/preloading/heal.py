"""Local damage a start repairs itself: files of a snapshot the plan needs that are not what the hub lists.

A blob truncated or extended (a full disk, a crash of another writer, a hand edit) must be fetched again
as a missing one is; otherwise every restart relinks the damaged blob, fails the same check, and the
container crash-loops. What is checked:

- every wanted file's size, on every fetch (a `stat`, as `records.check` does), and a folder in a file's place;
- the content of a file present but not covered by the completion record (a download cut short, a cache
  huggingface_hub wrote, a record removed): it is hashed against its etag once, before it is recorded.

A file the record covers at its size is trusted: hashing every blob on every start is `verify`'s job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..cache import atomic, records
from ..cache.hashing import matches
from ..cache.layout import Layout
from ..logs import event
from ..spec import RepoSpec

logger = logging.getLogger(__name__)


def remove_damaged(layout: Layout, spec: RepoSpec, commit: str, files: dict, wanted: dict[str, int]) -> list[str]:
    """Remove the damaged wanted files of `commit` (the snapshot's link and the blob it leads to), so that
    the fetch gets them again; return their paths. The caller holds the repo lock."""
    record = records.read(layout, spec, commit)
    snapshot = layout.snapshot_dir(spec, commit)
    damaged = []
    for path, size in wanted.items():
        file = files[path]
        entry = snapshot / path
        recorded = record is not None and record.complete.get(path) == size
        if _damaged(entry, file.etag, size, recorded):
            damaged.append(path)
            target = entry.resolve() if entry.is_symlink() else None
            atomic.remove(entry, layout.roots)  # the link (never what it leads to), or a folder in its place
            if target is not None:
                _remove_blob(layout, spec, target)
        blob = layout.blob(spec, file.etag)
        if _size(blob) not in (None, size):  # a damaged blob no snapshot links yet: it would be linked again
            _remove_blob(layout, spec, blob)
    if damaged:
        event(logger, "heal", logging.WARNING, repo=spec.repo_id, rev=spec.revision, commit=commit,
              files=len(damaged), damaged=",".join(damaged[:5]))
    return damaged


def _damaged(entry: Path, etag: str, size: int, recorded: bool) -> bool:
    """Present but not the listed file: another size, a folder in its place, or (not recorded) other bytes."""
    if entry.is_dir() and not entry.is_symlink():
        return True  # the commit has a file there: nothing it needs can be inside
    found = _size(entry)
    if found is None:
        return False  # missing (or a dangling link): fetched as any missing file is
    if found != size or not os.path.isfile(entry):
        return True
    return not recorded and matches(entry, etag) is False


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _remove_blob(layout: Layout, spec: RepoSpec, blob: Path) -> None:
    """Remove a damaged blob, only from this repo's own `blobs/` (through atomic.remove, inside the cache's
    roots): a shared-store entry or another repo's blob is left to what links it."""
    blobs = layout.blobs_dir(spec)
    try:
        real = blob.resolve(strict=True)
    except OSError:
        return
    if real.is_file() and real.parent == blobs.resolve():
        atomic.remove(blobs / real.name, layout.roots)
