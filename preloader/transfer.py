"""Fetching one file into the hub cache: parallel ranged requests, resumable, checked before publication.

The bytes go to `blobs/<etag>.incomplete` (huggingface_hub's name for a partial
blob) under the blob's lock (huggingface_hub's lock file, so its downloads and
ours never write the same blob at once). Which chunks are on disk is kept in
`<state>/transfers/<repo folder>/<etag>.json`, so a restart after `kill -9`
fetches only the rest. The file is hashed as the chunks land, in order, and is
renamed into `blobs/` only when its size and hash match the etag.

Each connection reads into one reused buffer and `pwrite`s it in place; a hash
thread follows the contiguous part of the file through the page cache. After the
first request, chunks go straight to the URL the hub redirected to (its CDN), as
hf_transfer does, instead of through the hub's resolve endpoint per chunk.

huggingface_hub's hf_transfer cannot do this: it deletes the file on any error,
reports finished chunks without their offsets, and holds whole chunks in memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from . import atomic
from .connections import Connections, StatusError
from .errors import TransientError, UnsafePathError
from .layout import repo_folder_name

MIB = 1024 * 1024
READ_SIZE = MIB  # per connection at most; also the grain of resume: progress is counted per read
BUFFER_BUDGET = 64 * MIB  # the read buffers of every connection of a fetch together, at most
HASH_BLOCK = 8 * MIB  # mapped at a time while hashing: what hashing adds to RSS, per file
STATE_EVERY = 0.05  # seconds between saves of the range map: a kill -9 loses at most this much progress
EXPIRED = {401, 403, 404, 410}  # from a redirect target: its signature expired, ask the hub again


class ContentMismatch(TransientError):
    """The bytes received do not hash to the etag; they were deleted and will be fetched again."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a commit, as the hub lists it."""

    path: str
    size: int
    etag: str  # sha256 for LFS files, git blob id otherwise: also the blob's file name
    xet: bool = False

    @property
    def algorithm(self) -> str:
        return "sha256" if len(self.etag) == 64 else "sha1"


def resolve_url(endpoint: str, repo_type: str, repo_id: str, commit: str, path: str) -> str:
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{endpoint}/{prefix}{repo_id}/resolve/{commit}/{quote(path)}"


def chunk_size_for(size: int, connections: int) -> int:
    """Several chunks per connection so fast ones take more, 1 to 32 MiB each."""
    return max(MIB, min(32 * MIB, (size // (connections * 4)) // MIB * MIB))


class _Hasher:
    """Hashes the file in order, as far as the chunks on disk reach; runs beside the downloads."""

    def __init__(self, file: RemoteFile) -> None:
        self.digest = hashlib.sha256() if file.algorithm == "sha256" else hashlib.sha1()  # noqa: S324 - git id
        if file.algorithm == "sha1":
            self.digest.update(b"blob %d\0" % file.size)
        self.offset = 0

    def advance(self, fd: int, upto: int) -> None:
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


class _HashThread:
    """Runs a _Hasher up to a moving target in a thread of its own, so that hashing a long run of
    finished chunks never holds up the saves of the range map (what a kill -9 loses)."""

    def __init__(self, hasher: _Hasher, fd: int) -> None:
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


class Transfer:
    """Download one RemoteFile of a commit into the cache. Thread-safe progress via `on_bytes`."""

    def __init__(self, *, cache_dir: Path, state_dir: Path, endpoint: str, repo_type: str, repo_id: str,
                 commit: str, file: RemoteFile, token: str | None, connections: int, pool: Connections,
                 on_bytes: Callable[[int], None] = lambda n: None, read_size: int = READ_SIZE) -> None:
        folder = repo_folder_name(repo_type, repo_id)
        self.cache_dir = cache_dir
        self.file = file
        self.url = resolve_url(endpoint, repo_type, repo_id, commit, file.path)
        self.blob = cache_dir / folder / "blobs" / file.etag
        self.partial = self.blob.with_name(file.etag + ".incomplete")
        self.link = cache_dir / folder / "snapshots" / commit / file.path
        self.state_file = state_dir / "transfers" / folder / f"{file.etag}.json"
        self.lock_file = cache_dir / ".locks" / folder / f"{file.etag}.lock"
        # identity: the hash is over the file's bytes, not a compressed transfer of them
        self.headers = {"Accept-Encoding": "identity"} | ({"Authorization": f"Bearer {token}"} if token else {})
        self.connections = max(1, connections)
        self.pool = pool
        self.read_size = read_size
        self.direct: str | None = None  # where the hub redirected the file's URL to (its CDN), once known
        self.on_bytes = on_bytes
        self.fetched = 0
        self._count_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._saved_at = 0.0

    # -- state ------------------------------------------------------------------------------------
    def load_state(self, chunk: int) -> tuple[set[int], dict[int, int]]:
        """What an earlier run left on disk, if it was this file: whole chunks, and bytes into others."""
        try:
            state = json.loads(self.state_file.read_text())
            if (state["etag"], state["size"], state["chunk"]) == (self.file.etag, self.file.size, chunk) \
                    and self.partial.stat().st_size == self.file.size:
                done = set(state["done"])
                partial = {int(k): int(v) for k, v in state["partial"].items()}
                # A chunk can be saved whole in `partial` before the coordinating thread moved it to
                # `done`: asking for its remaining zero bytes would be `Range: bytes=N-(N-1)`, a 416.
                done |= {i for i, n in partial.items() if n >= min(chunk, self.file.size - i * chunk)}
                return done, partial
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        return set(), {}

    def save_state(self, chunk: int, done: set[int], partial: dict[int, int]) -> None:
        """Bytes are pwritten before they are counted here, so the map never claims more than is on disk.

        Not fsynced: it has to outlive the process, and the page cache does; after a power cut the hash
        check before publication catches a map that ran ahead of the data.
        """
        atomic.write_json(self.state_file, durable=False, data={
            "etag": self.file.etag, "size": self.file.size, "chunk": chunk, "done": sorted(done),
            "partial": {str(k): v for k, v in dict(partial).items() if v and k not in done},
        })

    def save_state_if_due(self, chunk: int, done: set[int], partial: dict[int, int]) -> None:
        """Save the map if STATE_EVERY has passed, from whichever thread gets here first.

        The reading threads call it: on a busy machine they are the ones the scheduler runs, while a
        thread that wakes up only to save can wait 100 ms and more for a core, and a kill -9 loses that.
        """
        if time.monotonic() - self._saved_at < STATE_EVERY or not self._save_lock.acquire(blocking=False):
            return
        try:
            self.save_state(chunk, done, partial)
            self._saved_at = time.monotonic()
        finally:
            self._save_lock.release()

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    # -- the download -----------------------------------------------------------------------------
    def run(self, lock_timeout: float) -> int:
        """Fetch, check and publish the file; return the bytes fetched over the network."""
        from filelock import FileLock, Timeout

        atomic.make_dirs(self.lock_file.parent)
        atomic.make_dirs(self.blob.parent)
        atomic.ensure_inside(self.blob, self.cache_dir)
        try:
            with FileLock(self.lock_file, timeout=lock_timeout, is_singleton=False, thread_local=False):
                if not self.blob.exists():
                    self._download()
                self._link()
        except Timeout:
            raise TransientError(f"timed out waiting for the blob lock {self.lock_file}") from None
        except OSError as error:
            if error.errno == errno.ELOOP:  # filelock opens with O_NOFOLLOW: a planted symlink
                raise UnsafePathError(f"blob lock {self.lock_file} is a symlink; refusing to follow it") from None
            raise
        return self.fetched

    def _link(self) -> None:
        atomic.symlink(atomic.relative_target(self.blob, self.link), self.link, root=self.cache_dir)

    def _download(self) -> None:
        size = self.file.size
        chunk = chunk_size_for(size, self.connections)
        count = max(1, -(-size // chunk))
        done, partial = self.load_state(chunk)
        if not done and not partial:
            self.discard()
        atomic.make_dirs(self.partial.parent)
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, size)
            if size == 0 or (self.connections == 1 and not done):
                hasher = self._single_stream(fd)
            else:
                hasher = self._parallel(fd, chunk, count, done, partial)
            self._check(fd, hasher)
        finally:
            os.close(fd)
        os.replace(self.partial, self.blob)
        self.state_file.unlink(missing_ok=True)

    def _check(self, fd: int, hasher: _Hasher) -> None:
        hasher.advance(fd, self.file.size)
        got = hasher.digest.hexdigest()
        if os.fstat(fd).st_size != self.file.size or got != self.file.etag:
            self.discard()
            raise ContentMismatch(
                f"{self.file.path}: received bytes do not match the etag ({self.file.algorithm} {got[:12]} "
                f"!= {self.file.etag[:12]}); deleted, will fetch again"
            )

    def _get(self, start: int | None = None, end: int | None = None):
        headers = dict(self.headers)
        if start is not None:
            headers["Range"] = f"bytes={start}-{end}"
        direct = self.direct
        if direct is not None:
            try:  # the token goes only to the hub's origin, as on the first request's redirect
                return self.pool.get(direct, headers, origin=self.url)
            except StatusError as error:
                if error.status not in EXPIRED:
                    raise
                self.direct = None
        response = self.pool.get(self.url, headers)
        if response.url != self.url:
            self.direct = response.url
        return response

    def _write_stream(self, fd: int, response, offset: int, length: int, hasher: _Hasher | None,
                      on_write: Callable[[int], None] | None = None) -> int:
        """Write `length` bytes of a response body at `offset`; return them. Raises on a short or long body."""
        buffer = bytearray(min(self.read_size, max(length, 1)))
        view = memoryview(buffer)
        written = 0
        while written < length:
            n = response.readinto(view[:min(len(buffer), length - written)])
            if not n:
                raise TransientError(f"{self.file.path}: body cut short at {written} of {length} bytes")
            data = view[:n]
            done = 0
            while done < n:  # pwrite on a regular file writes it all or raises; this is for the odd one
                done += os.pwrite(fd, data[done:], offset + written + done)
            if hasher is not None:
                hasher.digest.update(data)
            written += n
            if on_write is not None:
                on_write(written)
            with self._count_lock:
                self.fetched += n
            self.on_bytes(n)
        if response.length:  # announced more than was asked for
            raise TransientError(f"{self.file.path}: server sent more than the {length} bytes asked for")
        return written

    def _single_stream(self, fd: int) -> _Hasher:
        """One GET of the whole file, hashed as it is written."""
        hasher = _Hasher(self.file)
        with contextlib.closing(self._get()) as response:
            self._write_stream(fd, response, 0, self.file.size, hasher)
        hasher.offset = self.file.size
        return hasher

    def _parallel(self, fd: int, chunk: int, count: int, done: set[int], partial: dict[int, int]) -> _Hasher:
        """Fetch the missing chunks over several connections; one stream if the server ignores Range.

        `partial` maps a chunk to the bytes of it already on disk; it is updated as bytes land.
        """
        todo: queue.Queue[int] = queue.Queue()
        for index in range(count):
            if index not in done:
                todo.put(index)
        finished: queue.Queue[tuple[int, BaseException | None]] = queue.Queue()
        stop = threading.Event()

        def fetch_chunk(index: int, response=None) -> None:
            first = index * chunk + partial.get(index, 0)
            last = min(self.file.size, (index + 1) * chunk) - 1
            if first > last:  # all of it is on disk already
                return
            response = response or self._get(first, last)
            with contextlib.closing(response):
                if response.status != 206:
                    raise TransientError(f"{self.file.path}: expected 206, got {response.status}")
                already = partial.get(index, 0)

                def on_write(n: int) -> None:
                    partial[index] = already + n
                    self.save_state_if_due(chunk, done, partial)

                self._write_stream(fd, response, first, last - first + 1, None, on_write=on_write)

        # Probe with the first missing chunk: a 200 means Range is ignored, and the body is the whole file.
        if not todo.empty():
            index = todo.get()
            response = self._get(index * chunk + partial.get(index, 0), min(self.file.size, (index + 1) * chunk) - 1)
            if response.status == 200:  # Range ignored: this body is the whole file, use it
                self.state_file.unlink(missing_ok=True)
                hasher = _Hasher(self.file)
                with contextlib.closing(response):
                    self._write_stream(fd, response, 0, self.file.size, hasher)
                hasher.offset = self.file.size
                return hasher
            todo.put(index)
            probe = {index: response}
        else:
            probe = {}

        def worker() -> None:
            while not stop.is_set():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    fetch_chunk(index, probe.pop(index, None))
                    finished.put((index, None))
                except BaseException as error:  # noqa: BLE001 - handed to the coordinating thread
                    finished.put((index, error))
                    return

        threads = [threading.Thread(target=worker, name="preloader-range", daemon=True)
                   for _ in range(min(self.connections, todo.qsize()))]
        for thread in threads:
            thread.start()
        hasher = _Hasher(self.file)
        hashing = _HashThread(hasher, fd)
        frontier = 0  # chunks before it are all on disk

        def follow() -> None:
            nonlocal frontier
            while frontier < count and frontier in done:
                frontier += 1
            hashing.follow(min(self.file.size, frontier * chunk))

        follow()
        error: BaseException | None = None
        finished_ok = False
        try:
            # Until every worker has exited and reported: each reports each chunk it finished or failed.
            while any(t.is_alive() for t in threads) or not finished.empty():
                try:
                    index, failure = finished.get(timeout=STATE_EVERY)
                except queue.Empty:
                    index, failure = None, None
                if failure is not None:
                    error = error or failure
                    stop.set()
                elif index is not None:
                    done.add(index)
                    follow()
                self.save_state_if_due(chunk, done, partial)
            finished_ok = error is None
        finally:
            stop.set()
            for response in probe.values():
                response.close()
            with self._save_lock:  # readers that have not noticed `stop` yet may be saving too
                self.save_state(chunk, done, partial)
            hashing.finish(abort=not finished_ok)
        if error is not None:
            raise error
        return hasher


def read_size_for(connections_in_all: int) -> int:
    """Each connection's read buffer: large for speed, smaller when many connections share the budget."""
    return max(64 * 1024, min(READ_SIZE, BUFFER_BUDGET // max(1, connections_in_all)))


