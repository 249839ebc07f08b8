"""Warming into the page cache: every byte read with a few parallel large reads, sendfile where it works.

`exec` replaces the process, so what the preloader reads stays only in the page cache: the
service then reads its weights from RAM.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DiskError, UnavailableError
from .memlock import lock_in_memory
from .report import WarmReport

DEFAULT_THREADS = 8
DEFAULT_BLOCK = 16 * 2**20
PREAD_BUFFER = 4 * 2**20


def segments(sizes: Sequence[int], threads: int, block: int) -> list[tuple[int, int, int]]:
    """(file index, start, end): about `threads` contiguous pieces of near-equal size, in file order.

    Each piece is read front to back through its own file descriptor, so the kernel's readahead
    (kept per open file) sees one sequential stream per thread, as with a `cat` per file; blocks
    of one file handed round to threads through a shared descriptor read slower from disk.
    """
    share = max(block, -(-sum(sizes) // max(1, threads)))
    pieces = []
    for index, size in enumerate(sizes):
        count = max(1, round(size / share))
        step = -(-size // count // 4096) * 4096  # page-aligned
        pieces.extend((index, start, min(size, start + step)) for start in range(0, size, step or 1))
    return pieces


def _read_with_sendfile(fd: int, sink: int, offset: int, length: int, _buffer: memoryview) -> int:
    # The kernel pulls the pages into the page cache and hands them to /dev/null without
    # copying them to user space: several times faster than read() when they are already there.
    done = 0
    while done < length:
        count = os.sendfile(sink, fd, offset + done, length - done)
        if count == 0:
            break
        done += count
    return done


def _read_with_pread(fd: int, _sink: int, offset: int, length: int, buffer: memoryview) -> int:
    done = 0
    while done < length:
        count = os.preadv(fd, [buffer[: min(len(buffer), length - done)]], offset + done)
        if count == 0:
            break
        done += count
    return done


def _sendfile_works(path: Path) -> bool:
    """Some filesystems (FUSE, a few network mounts) cannot splice; then read() it is."""
    if not hasattr(os, "sendfile"):
        return False
    try:
        with open(path, "rb") as source, open(os.devnull, "wb") as sink:
            os.sendfile(sink.fileno(), source.fileno(), 0, 1)
        return True
    except OSError:
        return False


def _read_segment(path: Path, start: int, end: int, block: int, reader, sink: int, buffer: memoryview) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise DiskError(f"cannot open {path}: {error.strerror}") from error
    try:
        # A hint: a larger readahead window for this stream; the reads below do the work.
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_SEQUENTIAL)
        for offset in range(start, end, block):
            length = min(block, end - offset)
            if reader(fd, sink, offset, length, buffer) != length:
                raise DiskError(f"{path} shrank while being read; is another process writing it?")
        return end - start
    except OSError as error:
        raise DiskError(f"cannot read {path}: {error.strerror}") from error
    finally:
        os.close(fd)


def warm_page_cache(
    paths: Iterable[Path],
    *,
    threads: int = DEFAULT_THREADS,
    block: int = DEFAULT_BLOCK,
    method: str = "auto",
    lock: bool = False,
) -> WarmReport:
    """Read every byte of `paths` into the page cache with `threads` parallel large reads.

    method: `sendfile` (to /dev/null: no copy to user space), `pread` (into a reused buffer
    per thread), or `auto` (sendfile where the filesystem supports it). With `lock`, the
    files are then mlocked for the life of this process; a refusal (RLIMIT_MEMLOCK) is put
    in `report.warning`, since the cache is warm all the same. DiskError on a read error.
    """
    paths = [Path(p) for p in paths]
    if method not in ("auto", "sendfile", "pread"):
        raise ValueError(f"unknown method {method!r}")
    if method == "auto":
        method = "sendfile" if paths and _sendfile_works(paths[0]) else "pread"
    reader = _read_with_sendfile if method == "sendfile" else _read_with_pread
    started = time.perf_counter()
    try:
        sizes = [os.stat(path).st_size for path in paths]
    except OSError as error:
        raise DiskError(f"cannot open {error.filename}: {error.strerror}") from error
    pieces = segments(sizes, threads, block)
    pending = iter(pieces)
    take = threading.Lock()

    def work() -> int:
        # A few MiB stay in the CPU cache while the kernel copies into them: faster than one per block.
        buffer = memoryview(bytearray(min(block, PREAD_BUFFER))) if method == "pread" else memoryview(b"")
        sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        done = 0
        try:
            while True:
                with take:
                    segment = next(pending, None)
                if segment is None:
                    return done
                index, start, end = segment
                done += _read_segment(paths[index], start, end, block, reader, sink, buffer)
        finally:
            os.close(sink)

    workers = max(1, min(threads, len(pieces)))
    with ThreadPoolExecutor(workers, thread_name_prefix="preloader-warm") as pool:
        total = sum(future.result() for future in [pool.submit(work) for _ in range(workers)])
    report = WarmReport("page-cache", len(paths), total, time.perf_counter() - started, method=method)
    if lock:
        try:
            report.locked_bytes = lock_in_memory(paths)
        except UnavailableError as error:
            report.warning = str(error)
    return report
