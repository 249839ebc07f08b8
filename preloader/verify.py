"""Re-hash cached files against their etags, and repair only what is broken.

The rule is `hf cache verify`'s: an LFS file's etag is its sha256, any other
file's etag is its git blob id (sha1 of "blob <size>\\0" + content). The blob's
file name is its etag, so no network call is needed to check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import records
from .inventory import snapshot_blobs
from .layout import Layout
from .spec import RepoSpec

CHUNK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


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

    @property
    def broken(self) -> list[str]:
        return sorted(set(self.missing + self.truncated + self.corrupt) - set(self.repaired))

    @property
    def ok(self) -> bool:
        return not self.broken


def file_digest(path: Path, algorithm: str) -> str:
    """sha256, or git's blob sha1 of the file, read in chunks."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()  # noqa: S324 - git's object id, not security
        digest.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def etag_matches(blob: Path, etag: str) -> bool | None:
    """True/False if `blob` hashes to `etag`; None when the etag is no hash we know."""
    if _SHA256.fullmatch(etag):
        return file_digest(blob, "sha256") == etag
    if _SHA1.fullmatch(etag):
        return file_digest(blob, "sha1") == etag
    return None


def check_snapshot(layout: Layout, spec: RepoSpec, commit: str) -> SnapshotCheck:
    """Check every file of a snapshot: present, at the recorded size, hashing to its etag."""
    result = SnapshotCheck(spec.repo_type, spec.repo_id, commit)
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
        if etag_matches(blob, blob.name) is False:
            result.corrupt.append(rel)
    return result


def drop_bad_files(layout: Layout, spec: RepoSpec, check: SnapshotCheck) -> None:
    """Delete the bad blobs and their snapshot links so a fetch brings them back."""
    snapshot = layout.snapshot_dir(spec, check.commit)
    blobs = snapshot_blobs(snapshot)
    for rel in check.broken:
        blob = blobs.get(rel)
        if blob is not None and blob.parent == layout.blobs_dir(spec):
            blob.unlink(missing_ok=True)
        (snapshot / rel).unlink(missing_ok=True)
