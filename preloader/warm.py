"""Warming a snapshot's weights before the hand-off: into the page cache, or through the GPU.

`exec` replaces the process, so what the preloader puts in GPU memory is released at the
hand-off. What survives is the page cache (the service then reads from RAM) and the proof
that the GPU works and the model fits. GPU warming lives in `warm_gpu.py`; torch is imported
there, and only when GPU warming is asked for.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, DiskError, UnavailableError
from .logs import event

log = logging.getLogger(__name__)

WARM_FORMS = "none, page-cache, gpu or gpu:N (N a CUDA device index)"
DTYPES = ("float16", "bfloat16", "float32")
SAFETENSORS_SUFFIX = ".safetensors"
# Weight-like files worth having in RAM. Reading a pickle file's bytes is harmless; only
# unpickling runs code, and nothing here ever unpickles.
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")
DEFAULT_THREADS = 8
DEFAULT_BLOCK = 16 * 2**20
PREAD_BUFFER = 4 * 2**20

GB = 1e9


@dataclass(frozen=True)
class WarmMode:
    """What `--warm` asked for: kind is none, page-cache or gpu; gpu has a device index."""

    kind: str
    device_index: int = 0

    @property
    def device(self) -> str:
        return f"cuda:{self.device_index}" if self.kind == "gpu" else self.kind

    def __str__(self) -> str:
        return f"gpu:{self.device_index}" if self.kind == "gpu" else self.kind


@dataclass
class WarmReport:
    """What one warming did: bytes read, seconds, and where to (page-cache, cuda:0, cpu)."""

    device: str
    files: int
    bytes: int
    seconds: float
    method: str = ""
    device_name: str = ""
    tensors: int = 0
    dtype: str | None = None
    needed_bytes: int = 0
    free_bytes: int = 0
    setup_seconds: float = 0.0
    locked_bytes: int = 0
    warning: str | None = None

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / GB if self.seconds > 0 else 0.0


def _invalid(source: str | None, text: str, expected: str) -> ConfigError:
    where = f"{source}={text!r}" if source else repr(text)
    return ConfigError(f"invalid {'setting' if source else 'value'} {where}: expected {expected}")


def parse_warm(text: str | None, *, source: str | None = None) -> WarmMode:
    """`none`, `page-cache`, `gpu` or `gpu:N` (case and spaces ignored); ConfigError otherwise."""
    value = (text or "none").strip().lower()
    if value in ("none", "page-cache", "gpu"):
        return WarmMode(value)
    kind, _, index = value.partition(":")
    if kind == "gpu" and index.isdigit():
        return WarmMode("gpu", int(index))
    raise _invalid(source, text or "", WARM_FORMS)


def parse_dtype(text: str | None, *, source: str | None = None) -> str | None:
    """`float16`, `bfloat16`, `float32`, or None for `none`/empty (keep the files' dtypes)."""
    value = (text or "none").strip().lower()
    if value == "none":
        return None
    if value in DTYPES:
        return value
    raise _invalid(source, text or "", ", ".join(DTYPES) + " or none")


def weight_files(snapshot_dir: Path, *, safetensors_only: bool = False) -> list[Path]:
    """The weight files of a snapshot, sorted; one entry per blob when two names link to it.

    With `safetensors_only` (the GPU's set), a folder with a `*.safetensors.index.json` gives
    only the shards its weight map names: repos that also ship the same weights in another
    layout (Mistral's consolidated.safetensors) would otherwise count twice against GPU memory.
    """
    snapshot_dir = Path(snapshot_dir)
    suffixes = (SAFETENSORS_SUFFIX,) if safetensors_only else WEIGHT_SUFFIXES
    found: dict[Path, Path] = {}
    indexed: dict[Path, set[str] | None] = {}
    for path in sorted(snapshot_dir.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(snapshot_dir).parts):
            continue
        if not (path.name.lower().endswith(suffixes) and path.is_file()):
            continue
        if safetensors_only:
            if path.parent not in indexed:
                indexed[path.parent] = _indexed_shards(path.parent)
            shards = indexed[path.parent]
            if shards is not None and path.name not in shards:
                continue
        found.setdefault(path.resolve(), path)
    return list(found.values())


def _indexed_shards(folder: Path) -> set[str] | None:
    """File names the folder's safetensors index files map weights to; None without an index."""
    shards: set[str] | None = None
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            continue  # a damaged index: warm every file rather than guess
        shards = (shards or set()) | {str(name) for name in weight_map.values()}
    return shards


# --- page cache -----------------------------------------------------------------------------

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


# --- keeping pages resident -----------------------------------------------------------------

_PROT_READ, _MAP_SHARED = 1, 1
# mlocked mappings, kept for the life of the process: the pages stay resident until exit or exec.
_locked: list[tuple[int, int]] = []


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    for name in ("munmap", "mlock", "munlock"):
        getattr(libc, name).argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def _memlock_limit(needed: int) -> int:
    """The soft RLIMIT_MEMLOCK after raising it towards `needed` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and soft < needed + locked_bytes():
        target = hard if hard == resource.RLIM_INFINITY else min(hard, needed + locked_bytes())
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _lock_refused(needed: int, err: int, path: Path) -> UnavailableError:
    limit = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{_human(limit)} (ulimit -l {limit // 1024})"
    return UnavailableError(
        f"cannot lock the weights in RAM: mlock of {path.name} failed ({os.strerror(err)}); "
        f"{needed} bytes ({_human(needed)}) needed, RLIMIT_MEMLOCK is {shown}; raise the limit "
        "(docker run --ulimit memlock=-1, systemd LimitMEMLOCK=infinity) or grant CAP_IPC_LOCK, "
        "or check free RAM, or warm without the lock"
    )


def lock_in_memory(paths: Iterable[Path]) -> int:
    """mlock every file so its pages stay in RAM while this process lives; bytes locked.

    The lock ends at exit or exec. UnavailableError (69) naming the limit and the bytes
    needed when the kernel refuses; nothing stays locked from a refused call.
    """
    paths = [Path(p) for p in paths]
    sizes = [os.stat(path).st_size for path in paths]
    needed = sum(sizes)
    _memlock_limit(needed)
    libc = _libc()
    taken: list[tuple[int, int]] = []
    for path, size in zip(paths, sizes, strict=True):
        if size == 0:
            continue
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            address = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        finally:
            os.close(fd)  # the mapping keeps the file referenced
        if address in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            _unlock(libc, taken)
            raise DiskError(f"cannot map {path}: {os.strerror(err)}")
        if libc.mlock(address, size) != 0:
            err = ctypes.get_errno() or errno.ENOMEM
            libc.munmap(address, size)
            _unlock(libc, taken)
            raise _lock_refused(needed, err, path)
        taken.append((address, size))
    _locked.extend(taken)
    return needed


def _unlock(libc: ctypes.CDLL, mappings: list[tuple[int, int]]) -> None:
    for address, size in mappings:
        libc.munlock(address, size)
        libc.munmap(address, size)


def locked_bytes() -> int:
    """Bytes this process holds locked in RAM now."""
    return sum(size for _, size in _locked)


def release_locks() -> None:
    """Unlock and unmap everything `lock_in_memory` locked."""
    _unlock(_libc(), _locked)
    _locked.clear()


# --- per snapshot ---------------------------------------------------------------------------

def warm_snapshot(
    snapshot_dir: Path,
    mode: WarmMode,
    *,
    repo: str = "",
    dtype: str | None = None,
    lock: bool = False,
    threads: int | None = None,
) -> WarmReport | None:
    """Warm one snapshot as `mode` says and log `warm.done` with bytes, seconds, GB/s and device.

    None for mode none. GPU warming reads only *.safetensors files (UnavailableError when a
    snapshot has none); page-cache warming reads every weight file.
    """
    if mode.kind == "none":
        return None
    snapshot_dir = Path(snapshot_dir)
    gpu = mode.kind == "gpu"
    paths = weight_files(snapshot_dir, safetensors_only=gpu)
    event(log, "warm.start", repo=repo, mode=str(mode), files=len(paths))
    if gpu:
        from .warm_gpu import warm_gpu  # torch only now, and only for this

        if not paths:
            raise UnavailableError(
                f"no *.safetensors files in {snapshot_dir} ({repo or 'snapshot'}): GPU warming loads only "
                "safetensors (pickle weights are never unpickled); use --warm page-cache for this repo"
            )
        report = warm_gpu(paths, device=mode.device, dtype=dtype, threads=threads)
    else:
        report = warm_page_cache(paths, threads=threads or DEFAULT_THREADS, lock=lock)
    fields: dict[str, object] = {"repo": repo, "device": report.device}
    if report.device_name:
        fields["gpu"] = report.device_name
    fields.update(files=report.files, bytes=report.bytes, secs=f"{report.seconds:.2f}", rate=f"{report.gbps:.2f}GB/s")
    if gpu:
        fields.update(tensors=report.tensors, dtype=report.dtype or "as-stored")
        fields["setup_secs"] = f"{report.setup_seconds:.2f}"
    if report.locked_bytes:
        fields["locked"] = report.locked_bytes
    event(log, "warm.done", **fields)
    if report.warning:
        event(log, "warm.lock_failed", logging.WARNING, repo=repo, reason=report.warning)
    return report
