"""Fetching one file into the hub cache: resumable, checked before publication, published atomically.

The bytes go to `blobs/<etag>.incomplete` (huggingface_hub's name for a partial
blob) under the blob's lock (huggingface_hub's lock file, so its downloads and
ours never write the same blob at once). Which chunks are on disk is kept in a
range map in the state dir (`rangemap`), so a restart after `kill -9` fetches
only the rest. The file is hashed as the chunks land, in order (`cache.hashing`), and
is renamed into `blobs/` only when its size and hash match the etag.

huggingface_hub's hf_transfer cannot do this: it deletes the file on any error,
reports finished chunks without their offsets, and holds whole chunks in memory.
"""

from __future__ import annotations

import contextlib
import errno
import os

from ..cache import atomic, dedup
from ..cache.hashing import Hasher, algorithm
from ..cache.layout import Layout
from ..errors import LockTimeoutError, TransientError, UnsafePathError
from ..spec import RepoSpec
from .chunks import ParallelDownload
from .errors import ContentMismatch
from .listing import RemoteFile
from .rangemap import RangeMap, Stopper
from .source import RemoteSource

MIB = 1024 * 1024
READ_SIZE = MIB  # per connection at most; also the grain of resume: progress is counted per read
BUFFER_BUDGET = 64 * MIB  # the read buffers of every connection of a fetch together, at most


def chunk_size_for(size: int, connections: int) -> int:
    """Several chunks per connection so fast ones take more, 1 to 32 MiB each."""
    return max(MIB, min(32 * MIB, (size // (connections * 4)) // MIB * MIB))


def read_size_for(connections_in_all: int) -> int:
    """Each connection's read buffer: large for speed, smaller when many connections share the budget."""
    return max(64 * 1024, min(READ_SIZE, BUFFER_BUDGET // max(1, connections_in_all)))


class Transfer:
    """Download one RemoteFile of a commit into the cache: take its lock, fetch, check, publish, link."""

    def __init__(self, layout: Layout, spec: RepoSpec, commit: str, file: RemoteFile, source: RemoteSource,
                 connections: int, tiers: tuple[Layout, ...] = (), stopper: Stopper | None = None) -> None:
        self.layout, self.spec, self.file, self.source, self.tiers = layout, spec, file, source, tiers
        self.connections = max(1, connections)
        self.blob = layout.blob(spec, file.etag)
        self.partial = layout.partial_blob(spec, file.etag)
        self.link = layout.snapshot_dir(spec, commit) / file.path
        self.lock_file = layout.blob_lock(spec, file.etag)
        chunk = chunk_size_for(file.size, self.connections)
        self.ranges = RangeMap(layout.range_map(spec, file.etag), file.etag, file.size, chunk, stopper,
                               roots=layout.roots)

    def run(self, lock_timeout: float) -> int:
        """Fetch, check and publish the file; return the bytes fetched over the network."""
        from filelock import FileLock, Timeout

        atomic.make_parent(self.lock_file, self.layout.cache_dir)  # checked before and after: no planted link
        atomic.make_parent(self.blob, self.layout.cache_dir)
        try:
            with FileLock(self.lock_file, timeout=lock_timeout, is_singleton=False, thread_local=False):
                if not self._blob_ready() and dedup.adopt(self.layout, self.spec, self.file.etag,
                                                          self.file.size, self.tiers) is None:
                    self._download_racing()
                atomic.symlink(atomic.relative_target(self.blob, self.link), self.link, root=self.layout.cache_dir)
        except Timeout:
            # Final: the process holding the blob is still fetching it; another wait would only multiply
            # PRELOADER_LOCK_TIMEOUT.
            raise LockTimeoutError(f"timed out after {lock_timeout:g} s waiting for the blob lock {self.lock_file}; "
                                   "another process is still downloading it: raise PRELOADER_LOCK_TIMEOUT or "
                                   "retry") from None
        except OSError as error:
            if error.errno == errno.ELOOP:  # filelock opens with O_NOFOLLOW: a planted symlink
                raise UnsafePathError(f"blob lock {self.lock_file} is a symlink; refusing to follow it") from None
            raise
        return self.source.fetched

    def _blob_ready(self) -> bool:
        """The blob is in place at its size; one of another size is damage (a truncated or extended file),
        removed under its lock so it is fetched again instead of linked again on every start."""
        try:
            if os.stat(self.blob).st_size == self.file.size:
                return True
        except OSError:
            return False
        if not self.blob.is_symlink():
            self.blob.unlink(missing_ok=True)
        return False

    def _download_racing(self) -> None:
        """Download, where the partial file may go from under us: on a volume several nodes write whose
        blob lock does not cross nodes, another node can publish or replace it, and on NFS or FUSE even our
        open descriptor then fails (ESTALE, ENOENT). That is a race, not a disk error."""
        try:
            self._download()
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ESTALE):
                raise
            self._published_by_another()

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.ranges.discard()

    def _download(self) -> None:
        if not self.ranges.load(self.partial):
            self.discard()
        atomic.make_parent(self.partial, self.layout.cache_dir)
        with self.ranges.stopper.writing() as allowed:
            if not allowed:  # the run is being interrupted: create nothing its clean-up would miss
                raise TransientError(f"{self.file.path}: the fetch was stopped")
            fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, self.file.size)
            if self.file.size == 0 or (self.connections == 1 and not self.ranges.done):
                hasher = self._single_stream(fd)
            else:
                hasher = ParallelDownload(self.source, fd, self.ranges, self.connections, self.file.etag).run()
            self._check(fd, hasher)
            self._publish(fd)
        finally:
            os.close(fd)
        self.ranges.discard()

    def _publish(self, fd: int) -> None:
        """Rename the checked bytes into `blobs/`: only the file this descriptor wrote and hashed.

        On a volume where the blob lock does not exclude other nodes (NFS without a lock manager, FUSE),
        another node may have published the blob, or replaced the partial file, meanwhile. The partial
        file first moves to a name of its own, so what is renamed into place is what was checked.
        """
        private = atomic.temp_name(self.partial)
        try:
            os.rename(self.partial, private)
        except FileNotFoundError:
            return self._published_by_another()
        mine, there = os.fstat(fd), os.stat(private)
        if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):  # another node's partial: not checked
            private.unlink(missing_ok=True)
            return self._published_by_another()
        os.replace(private, self.blob)

    def _published_by_another(self) -> None:
        """The partial file went from under us: fine if another node published the blob, else try again."""
        try:
            if self.blob.stat().st_size == self.file.size:
                return
        except OSError:
            pass
        raise ContentMismatch(f"{self.file.path}: another process moved the partial download away "
                             "(a node on another mount of this volume?); trying again")

    def _single_stream(self, fd: int) -> Hasher:
        """One GET of the whole file, hashed as it is written."""
        hasher = Hasher(self.file.etag, self.file.size)
        with contextlib.closing(self.source.get()) as response:
            self.source.copy(response, fd, 0, self.file.size, on_data=hasher.update)
        return hasher

    def _check(self, fd: int, hasher: Hasher) -> None:
        hasher.advance(fd, self.file.size)
        got = hasher.hexdigest()
        if os.fstat(fd).st_size != self.file.size or got != self.file.etag:
            self.discard()
            raise ContentMismatch(
                f"{self.file.path}: received bytes do not match the etag ({algorithm(self.file.etag)} {got[:12]} "
                f"!= {self.file.etag[:12]}); deleted, will fetch again"
            )
