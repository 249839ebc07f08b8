"""huggingface_hub 2.x's cache-wide shared blob store, the layout a Xet download leaves.

A Xet file lives once per cache at `<cache>/blobs/<2 hex>/<xet hash>` (the folder is marked by
`.huggingface-shared-blobs`); each repo's `blobs/<etag>` is a relative symlink to it, listed in the
entry's `.refs` manifest, and a `.lock` beside it serialises publication, new references and removal.
Telling a store link from a blob, and the layout's names, needs no import. Freeing and publishing
entries goes through huggingface_hub's own functions, so its locks and manifests are honoured exactly.
A store, or a prefix folder of it, that is a symlink leading out of the cache is not the cache's: its
entries are not counted, freed or written (`atomic.leads_out`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from . import atomic

logger = logging.getLogger(__name__)

STORE_DIR = "blobs"
MARKER = ".huggingface-shared-blobs"
_HASH = re.compile(r"[0-9a-f]{64}")


def store_dir(cache_dir: Path) -> Path:
    return cache_dir / STORE_DIR


def is_on(cache_dir: Path) -> bool:
    """Whether this cache has a marked store (huggingface_hub makes it on its first Xet download)."""
    try:
        return (store_dir(cache_dir) / MARKER).read_text() == "1\n"
    except OSError:
        return False


def entries(cache_dir: Path) -> dict[Path, int]:
    """Every store entry (a payload, not its `.refs` or `.lock`) with its size."""
    found: dict[Path, int] = {}
    if not is_on(cache_dir):
        return found
    outside = atomic.leads_out(store_dir(cache_dir), cache_dir)
    if outside is not None:
        logger.warning("the shared blob store %s leads to %s, outside the cache: not counted or freed",
                       store_dir(cache_dir), outside)
        return found
    for prefix in os.scandir(store_dir(cache_dir)):
        if len(prefix.name) != 2 or not prefix.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(prefix.path):
            if _HASH.fullmatch(entry.name) and entry.name.startswith(prefix.name) \
                    and entry.is_file(follow_symlinks=False):
                found[Path(entry.path)] = entry.stat(follow_symlinks=False).st_size
    return found


def target(blob: Path, cache_dir: Path) -> Path | None:
    """The store entry a repo's `blobs/<etag>` links to, or None for a blob of its own (or a broken link)."""
    try:
        link = os.readlink(blob)
    except OSError:
        return None
    entry = Path(os.path.normpath(blob.parent / link))
    store = store_dir(cache_dir)
    if entry.parent.parent != store or not _HASH.fullmatch(entry.name) or entry.parent.name != entry.name[:2]:
        return None
    outside = atomic.leads_out(entry.parent, cache_dir)
    if outside is not None:  # a store folder leading elsewhere: the link is just a link, its target not ours
        logger.warning("%s links into %s, which leads to %s, outside the cache: the entry is left alone",
                       blob, entry.parent, outside)
        return None
    return entry if entry.is_file() and not entry.is_symlink() else None


def sweep(entries_: set[Path], cache_dir: Path) -> int:
    """Remove the store entries no repo links to any more, as `hf cache rm` does; the bytes freed.

    Under each entry's lock its `.refs` manifest is checked against the links on disk: an entry
    another repo still links is kept (and its manifest tidied), and missing or unreadable metadata
    keeps it too.
    """
    entries_ = {entry for entry in entries_ if atomic.leads_out(entry.parent, cache_dir) is None}
    if not entries_:
        return 0
    from huggingface_hub.utils._shared_blobs import sweep_shared_blob

    return sum(sweep_shared_blob(entry, cache_dir=cache_dir) for entry in sorted(entries_))


def freed_with(blob: Path, going: set[Path], cache_dir: Path) -> int:
    """What removing `blob` together with the repo blobs `going` frees: its own bytes, or for a store link
    its entry's, when every reference the entry's manifest lists is going too (huggingface_hub's rule)."""
    entry = target(blob, cache_dir)
    if entry is None:
        try:
            st = blob.lstat()
        except OSError:
            return 0
        if blob.is_symlink():
            return 0
        # A blob hard-linked into several repos (dedup) frees its bytes with its last link.
        same = sum(1 for other in going if _same_file(other, st))
        return st.st_size if same >= st.st_nlink else 0
    from huggingface_hub.utils._shared_blobs import expected_shared_blob_freed_size

    absolute = {Path(os.path.abspath(path)) for path in going}
    return expected_shared_blob_freed_size(entry, blob_paths_to_delete=absolute, cache_dir=cache_dir)


def _same_file(path: Path, st: os.stat_result) -> bool:
    try:
        other = path.lstat()
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def publish(blob: Path, entry_name: str, size: int, cache_dir: Path) -> bool:
    """Move a checked, repaired blob into the store in place of a damaged entry, and link the repo blob to
    it again: every repo linking the entry then reads the right bytes."""
    from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

    atomic.ensure_inside(store_dir(cache_dir) / entry_name[:2] / entry_name, cache_dir)
    return publish_blob_to_shared_store(blob_path=str(blob), xet_hash=entry_name, cache_dir=cache_dir,
                                        expected_size=size, replace_existing=True)
