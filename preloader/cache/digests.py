"""The sha256 of a snapshot file, cheaply: an LFS file's blob is named by its sha256 (checked against it as it
was downloaded, cache/hashing.py), so only the others (small files whose name is a git blob id) are read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from . import hashing


def blob_of(snapshot: Path, path: str) -> Path:
    """The file a snapshot entry leads to: its blob (links followed), or the file itself."""
    return Path(os.path.realpath(snapshot / path))


def known_sha256(snapshot: Path, path: str) -> str | None:
    """The sha256 the blob's name says, or None when the name is no sha256 (a git blob id, a plain file)."""
    name = blob_of(snapshot, path).name
    return name if hashing.algorithm(name) == "sha256" else None


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
    return sha256_file(blob_of(snapshot, path)), True
