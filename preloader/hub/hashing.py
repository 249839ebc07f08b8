"""Hashing a partial blob in file order while its chunks land, over the page cache, in a thread of its own."""

from __future__ import annotations

import mmap
import os
import threading

from ..cache.hashing import blob_hasher
from ..errors import TransientError

HASH_BLOCK = 8 * 1024 * 1024  # mapped at a time while hashing: what hashing adds to RSS, per file


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
            raise TransientError("partial file shrank while hashing")
        while self.offset < upto:
            n = min(HASH_BLOCK, upto - self.offset)
            start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
            try:  # hash the page cache in place: no copy, and the GIL is released while hashing
                with mmap.mmap(fd, self.offset + n - start, offset=start, access=mmap.ACCESS_READ) as pages, \
                        memoryview(pages) as whole, whole[self.offset - start:] as part:
                    self.digest.update(part)
            except (OSError, ValueError):  # a file system that cannot map files
                data = os.pread(fd, n, self.offset)
                if len(data) != n:
                    raise TransientError("partial file shrank while hashing") from None
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
                    upto = min(self.target, self.hasher.offset + HASH_BLOCK)
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
