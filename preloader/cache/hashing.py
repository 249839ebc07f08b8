"""The blob's name is its hash: sha256 for LFS files, git's blob id for the rest (`hf cache verify`'s rule).

The one place that knows how an etag is computed; downloads and `verify` both ask it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

CHUNK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


def algorithm(etag: str) -> str | None:
    """`sha256` or `sha1` (git blob id) for an etag we can check, None otherwise."""
    if _SHA256.fullmatch(etag):
        return "sha256"
    return "sha1" if _SHA1.fullmatch(etag) else None


def blob_hasher(etag: str, size: int):
    """A hashlib object that, fed the blob's `size` bytes, gives `etag` if they are right."""
    if algorithm(etag) == "sha256":
        return hashlib.sha256()
    digest = hashlib.sha1()  # noqa: S324 - git's object id, not security
    digest.update(b"blob %d\0" % size)
    return digest


def matches(path: Path, etag: str) -> bool | None:
    """True/False if the file at `path` hashes to `etag`; None when the etag is no hash we know."""
    if algorithm(etag) is None:
        return None
    with path.open("rb") as file:
        digest = blob_hasher(etag, file.seek(0, 2))
        file.seek(0)
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == etag
