"""The same bytes stored once per volume: a blob another repo already holds is linked, not downloaded.

Re-uploads, forks, mirrors and quantization repos often carry byte-identical files (same LFS sha256,
same git blob id), and the blob's name is that id. Before fetching a file, a complete blob of the same
name and size in any repo of the cache is hard-linked into this repo's `blobs/` (on the same filesystem;
elsewhere it is copied and checked). `dedup()` does the same for copies already on the volume. Xet files
that huggingface_hub keeps in its shared store are left to it.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..logs import event
from ..spec import RepoSpec
from . import atomic
from .hashing import copy_checked
from .layout import Layout, parse_folder_name

logger = logging.getLogger(__name__)


def blobs_named(layout: Layout, etag: str, size: int) -> Iterator[Path]:
    """Complete blobs of this name and size in any repo of the cache: regular files, not links into
    huggingface_hub's store, not partial downloads."""
    try:
        folders = sorted(os.listdir(layout.cache_dir))
    except OSError:
        return
    for folder in folders:
        if parse_folder_name(folder) is None or atomic.leads_out(layout.cache_dir / folder / "blobs", layout.cache_dir):
            continue  # a repo folder leading out of the cache is not a source we trust
        blob = layout.cache_dir / folder / "blobs" / etag
        try:
            st = blob.lstat()
        except OSError:
            continue
        if os.path.isfile(blob) and not blob.is_symlink() and st.st_size == size:
            yield blob


def adopt(layout: Layout, spec: RepoSpec, etag: str, size: int, tiers: tuple[Layout, ...] = ()) -> Path | None:
    """Give this repo the blob `etag` from another repo of the cache or of a read-only tier, if one has it:
    a hard link, or a copy checked against the etag where links cannot be made (another filesystem).
    The blob it came from, or None."""
    target = layout.blob(spec, etag)
    for source in (blob for where in (layout, *tiers) for blob in blobs_named(where, etag, size)):
        if source == target:
            continue
        try:
            atomic.hard_link(source, target, layout.cache_dir)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                continue  # that one went away meanwhile: try another, else download
            if not _checked_copy_into(source, target, etag, size):
                continue
        event(logger, "dedup.linked", repo=spec.repo_id, blob=etag[:12], bytes=size, source=source.parent.parent.name)
        return source
    return None


def _checked_copy_into(source: Path, target: Path, etag: str, size: int) -> bool:
    """Copy where links cannot be made (another filesystem), publishing only bytes that hash to the etag."""
    temp = atomic.temp_name(target)
    try:
        with open(source, "rb") as reader, open(temp, "wb") as writer:
            if not copy_checked(reader, writer, etag, size):
                return False
        os.replace(temp, target)
        return True
    except OSError:
        return False
    finally:
        temp.unlink(missing_ok=True)


@dataclass
class DedupReport:
    """What `dedup` linked: {etag: [blob paths now one file]}, and the bytes that freed."""

    linked: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    saved: int = 0
    dry_run: bool = False


def duplicates(layout: Layout) -> dict[str, list[Path]]:
    """{etag: blobs of that name in several repos, as separate files on one filesystem}."""
    by_name: dict[str, list[Path]] = {}
    for folder in sorted(os.listdir(layout.cache_dir)) if layout.cache_dir.is_dir() else []:
        blobs = layout.cache_dir / folder / "blobs"
        if parse_folder_name(folder) is None or not blobs.is_dir():
            continue
        outside = atomic.leads_out(blobs, layout.cache_dir)
        if outside is not None:
            logger.warning("dedup: %s leads to %s, outside the cache: left alone", blobs, outside)
            continue
        for name in sorted(os.listdir(blobs)):
            path = blobs / name
            if "." not in name and path.is_file() and not path.is_symlink():
                by_name.setdefault(name, []).append(path)
    found = {}
    for etag, paths in by_name.items():
        inodes = {(p.stat().st_dev, p.stat().st_ino) for p in paths}
        devices = {dev for dev, _ in inodes}
        if len(inodes) > 1 and len(devices) == 1 and len({p.stat().st_size for p in paths}) == 1:
            found[etag] = paths
    return found


def replace_with_link(keep: Path, other: Path, root: Path) -> int:
    """Make `other` a hard link to `keep` (atomically), `other` really inside `root`; the bytes that frees
    (0 if `other` had other links)."""
    st = other.stat()
    if (st.st_dev, st.st_ino) == (keep.stat().st_dev, keep.stat().st_ino):
        return 0
    atomic.hard_link(keep, other, root)
    return st.st_size if st.st_nlink == 1 else 0


