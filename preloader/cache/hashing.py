"""Blob hashes: the blob's name is its hash, sha256 for LFS files, git's blob id for the rest (`hf cache
verify`'s rule).

The one place that knows how an etag is computed and checked: a file on disk (`matches`), a copy checked
while it is written (`copy_checked`: dedup across filesystems, import), and a download hashed in file order
while its chunks land (`Hasher`, `HashThread`).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import threading
from pathlib import Path
from typing import BinaryIO

from ..errors import ContentMismatch

CHUNK = 8 * 1024 * 1024  # read, or mapped, at a time while hashing: what hashing adds to RSS, per file
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
        return copy_checked(file, None, etag, os.fstat(file.fileno()).st_size)


def copy_checked(reader: BinaryIO, writer: BinaryIO | None, etag: str, size: int) -> bool:
    """Read `reader` to its end, `CHUNK` at a time, hashing each piece and writing it to `writer` (if any);
    whether the bytes hash to `etag`. The caller publishes the copy only when they do."""
    digest = blob_hasher(etag, size)
    while chunk := reader.read(CHUNK):
        digest.update(chunk)
        if writer is not None:
            writer.write(chunk)
    return digest.hexdigest() == etag



class Hasher:
    """Hashes a file in order, as far as the bytes on disk reach; `offset` is how far it got."""

    def __init__(self, etag: str, size: int) -> None:
        self.digest = blob_hasher(etag, size)
        self.offset = 0

    def update(self, data) -> None:
        """Bytes that follow `offset`, fed as they are received (a single stream)."""
        self.digest.update(data)
        self.offset += len(data)

    def advance(self, fd: int, upto: int) -> None:
        """Hash the file's bytes from `offset` to `upto`, reading them from the page cache."""
        if os.fstat(fd).st_size < upto:  # only we write it, under its lock; a shorter file would be SIGBUS below
            raise ContentMismatch("partial file shrank while hashing")
        while self.offset < upto:
            n = min(CHUNK, upto - self.offset)
            start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
            try:  # hash the page cache in place: no copy, and the GIL is released while hashing
                with mmap.mmap(fd, self.offset + n - start, offset=start, access=mmap.ACCESS_READ) as pages, \
                        memoryview(pages) as whole, whole[self.offset - start:] as part:
                    self.digest.update(part)
            except (OSError, ValueError):  # a file system that cannot map files
                data = os.pread(fd, n, self.offset)
                if len(data) != n:
                    raise ContentMismatch("partial file shrank while hashing") from None
                self.digest.update(data)
            self.offset += n

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class HashThread:
    """Runs a Hasher up to a moving target in a thread of its own, so that hashing a long run of
    finished chunks never holds up the saves of the range map (what a kill -9 loses)."""

    def __init__(self, hasher: Hasher, fd: int) -> None:
        self.hasher, self.fd = hasher, fd
        self.target = hasher.offset
        self.closing = self.aborted = False
        self.failure: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="preloader-hash", daemon=True)
        self.thread.start()

    def follow(self, upto: int) -> None:
        with self.cond:
            self.target = max(self.target, upto)
            self.cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.aborted and not self.closing and self.hasher.offset >= self.target:
                        self.cond.wait()
                    if self.aborted or self.hasher.offset >= self.target:
                        return
                    upto = min(self.target, self.hasher.offset + CHUNK)
                self.hasher.advance(self.fd, upto)
        except BaseException as error:  # noqa: BLE001 - raised by finish() in the coordinating thread
            self.failure = error

    def finish(self, abort: bool) -> None:
        """Stop: at once, or once the target is hashed. Raises what the thread failed with."""
        with self.cond:
            self.closing, self.aborted = True, abort
            self.cond.notify()
        self.thread.join()
        if self.failure is not None and not abort:
            raise self.failure
