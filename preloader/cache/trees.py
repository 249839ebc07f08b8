"""huggingface_hub 2.x's record of a commit's files: `<repo>/trees/<commit>.json`.

With it, `snapshot_download(..., local_files_only=True)` tells a partial snapshot from a complete one
(IncompleteSnapshotError naming the missing files) and an online call skips listing the tree again.
We write the commit's whole listing, never a selection: a listing with files left out would hide them
from huggingface_hub for good. A consumer asking for the files an `--include` preload selected finds
them all; one asking for more is told they are missing, which is the truth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..spec import RepoSpec
from . import atomic
from .layout import Layout

FORMAT_VERSION = 1  # huggingface_hub's TREE_CACHE_FORMAT_VERSION


def read(layout: Layout, spec: RepoSpec, commit: str) -> dict[str, dict] | None:
    """The listing's entries (path -> size, blob_id, ...), or None when there is none we could write again
    (unreadable, another format, an entry without a git blob id)."""
    try:
        data = json.loads(layout.tree_file(spec, commit).read_text(encoding="utf-8"))
        entries = valid_entries(data["files"]) if data.get("format_version") == FORMAT_VERSION else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return entries


def valid_entries(files: object) -> dict[str, dict] | None:
    """`files` as a listing's entries if it is one (every entry an object with an int size and a blob id)."""
    if not isinstance(files, dict) or not files:
        return None
    for entry in files.values():
        if not isinstance(entry, dict) or not isinstance(entry.get("blob_id"), str) \
                or not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool):
            return None
    return {str(path): dict(entry) for path, entry in files.items()}


def write(layout: Layout, spec: RepoSpec, commit: str, entries: Mapping[str, dict]) -> bool:
    """Write the listing (path -> size, blob_id, lfs_sha256, lfs_size, xet_hash) unless one is there;
    True when written. Entries without a git blob id make no listing: huggingface_hub would reject it."""
    path = layout.tree_file(spec, commit)
    if path.exists() or not entries or not all(entry.get("blob_id") for entry in entries.values()):
        return False
    data = {"format_version": FORMAT_VERSION, "files": {name: dict(entries[name]) for name in sorted(entries)}}
    atomic.write_text(path, json.dumps(data, indent=1), root=layout.cache_dir)
    return True
