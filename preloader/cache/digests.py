"""The sha256 of a snapshot file, cheaply: an LFS file's blob is named by its sha256 (checked against it as it
was downloaded, cache/hashing.py), so only the others (small files whose name is a git blob id) are read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from . import hashing


def blob_name(snapshot: Path, path: str) -> str | None:
    """The name of the repo blob a snapshot entry links to (`blobs/<etag>`), or None for a plain file. One hop
    only: a blob may link on into huggingface_hub's shared store, whose entries are named by their Xet hash
    (also 64 hex), not their sha256."""
    try:
        return Path(os.readlink(snapshot / path)).name
    except OSError:  # not a link: a copy of the file, named by its path
        return None


def known_sha256(snapshot: Path, path: str) -> str | None:
    """The sha256 the blob's name says, or None when the name is no sha256 (a git blob id, a plain file)."""
    name = blob_name(snapshot, path)
    return name if name is not None and hashing.algorithm(name) == "sha256" else None


def sha256_file(file: Path) -> str:
    """Hash a file's bytes, `hashing.CHUNK` at a time."""
    digest = hashlib.sha256()
    with file.open("rb") as reader:
        while chunk := reader.read(hashing.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(snapshot: Path, path: str, *, rehash: bool = False) -> tuple[str, bool]:
    """(the sha256 of the snapshot's `path`, whether its bytes were read for it). `rehash`: read them even
    where the blob's name says it (what `verify --signature` does: it trusts nothing on the volume)."""
    known = None if rehash else known_sha256(snapshot, path)
    if known is not None:
        return known, False
    return sha256_file(snapshot / path), True  # links followed
