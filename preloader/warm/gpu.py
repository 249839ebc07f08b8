"""GPU warming: every tensor of every safetensors file onto a device, through reused pinned buffers.

Headers are read first (`safetensors`, no torch), and every tensor's torch dtype resolved, so the
free-memory check happens before any byte is loaded. torch is imported inside `warm_gpu` only.

Each reader thread owns two pinned host buffers: it reads one chunk into a buffer while the copy
of the previous chunk (from the other buffer, on the thread's own CUDA stream) is still running,
so disk or page-cache reads overlap host-to-device copies and the buffers are reused throughout.
The copies go through `copier` (submit / wait / drain), which says when a buffer may be refilled.

What is allocated is what `safetensors.needed_bytes` counts: one raw buffer per file, plus, for a
file that casts (or holds a misaligned tensor), one output buffer its tensors are cast or copied
into with `copy_`, after which its raw buffer is freed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DiskError, UnavailableError
from . import placement
from .copier import make_copier
from .mode import Dtype
from .page_cache import segments
from .report import GB, WarmReport
from .safetensors import (
    TARGET_SIZES,
    SafetensorsHeader,
    damaged,
    needed_bytes,
    read_header,
    refuse_other_formats,
)

log = logging.getLogger(__name__)

MAX_GPU_THREADS = 16
DEFAULT_BUFFER = 8 * 2**20


def default_threads() -> int:
    """Reader threads when none are asked for: the CPUs this process may run on (its affinity mask,
    which `taskset` and container cpusets narrow; not the machine's count), at most MAX_GPU_THREADS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = os.cpu_count() or 4
    return max(1, min(MAX_GPU_THREADS, usable))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise UnavailableError(
            "GPU warming needs torch, which is not installed here: pip install 'hf-preloader[warm]' "
            "(or torch), or use --warm page-cache"
        ) from error
    return torch


def _open_device(torch, device: str):
    """The torch device after checking it exists: UnavailableError (69) with the reason otherwise."""
    if device == "cpu":
        return torch.device("cpu"), "cpu"
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise UnavailableError(f"unknown device {device!r}: expected cuda or cuda:N") from error
    if target.type != "cuda":
        raise UnavailableError(f"GPU warming needs a CUDA device, not {device!r}")
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is a CPU-only build" if torch.version.cuda is None
               else f"no NVIDIA GPU or driver is visible (torch {torch.__version__}, CUDA {torch.version.cuda})")
        raise UnavailableError(
            f"--warm gpu asked for {device} but CUDA is not available: {why}; "
            "run on a GPU machine (docker --gpus all) or use --warm page-cache"
        )
    count = torch.cuda.device_count()
    index = target.index if target.index is not None else torch.cuda.current_device()
    if index >= count:
        raise UnavailableError(f"--warm gpu asked for cuda:{index} but this machine has {count} CUDA device(s)")
    return torch.device("cuda", index), torch.cuda.get_device_name(index)


def require_device(device: str) -> str:
    """Check, before any download, that torch and this CUDA device are there; its name, or UnavailableError."""
    return _open_device(_import_torch(), device)[1]


def _read_into(fd: int, buffer: memoryview, offset: int, path: Path) -> None:
    done, length = 0, len(buffer)
    while done < length:
        try:
            count = os.preadv(fd, [buffer[done:]], offset + done)
        except OSError as error:
            raise DiskError(f"cannot read {path}: {error.strerror}") from error
        if count == 0:
            raise damaged(path, f"file ends at {offset + done} bytes, before its tensors do")
        done += count


class _Reader:
    """One reader thread's two host buffers (pinned for CUDA) and the copier that takes their bytes to
    the device: it reads into one buffer while the copy out of the other may still be running."""

    def __init__(self, torch, device, buffer_bytes: int, copier) -> None:
        pinned = device.type == "cuda"
        self.buffer_bytes = buffer_bytes
        self.buffers = [torch.empty(buffer_bytes, dtype=torch.uint8, pin_memory=pinned) for _ in range(2)]
        self.views = [memoryview(buffer.numpy()) for buffer in self.buffers]
        self.copier = copier
        self.turn = 0

    def copy(self, header: SafetensorsHeader, raw, start: int, end: int) -> None:
        """Bytes `start`..`end` of the header's data section into `raw`, `buffer_bytes` at a time."""
        fd = _open(header.path, header.data_start + start, end - start)
        try:
            for offset in range(start, end, self.buffer_bytes):
                length = min(self.buffer_bytes, end - offset)
                turn = self.turn
                self.copier.wait(turn)  # the copy out of this buffer must be done before it is refilled
                _read_into(fd, self.views[turn][:length], header.data_start + offset, header.path)
                self.copier.submit(turn, self.buffers[turn][:length], raw[offset : offset + length])
                self.turn ^= 1
        finally:
            os.close(fd)


def _stream(torch, device, headers, raws, threads: int, buffer_bytes: int, after=None) -> None:
    """Read the data sections of `headers` into `raws` (byte tensors on `device`), in parallel.

    Each thread reads contiguous pieces front to back through its own descriptor (see
    `page_cache.segments`), `buffer_bytes` at a time, alternating between its two buffers.
    Every thread drains its copies before it ends, error or not: when this returns or raises,
    nothing is still writing into `raws`. `after` is the caller's current CUDA stream, which
    the copies are ordered after.
    """
    cuda = device.type == "cuda"
    pieces = segments([header.data_bytes for header in headers], threads, buffer_bytes)
    pending = iter(pieces)
    take = threading.Lock()
    failures: list[BaseException] = []
    # The workers reach the device buffers through this list only, emptied once they are done: the
    # thread pool and a failed worker's frames keep the closure alive, and with it what it refers to.
    targets = list(raws)

    def work() -> None:
        try:
            # A new thread starts on cuda:0; pinning from there would make a context on that GPU too.
            with torch.cuda.device(device) if cuda else contextlib.nullcontext():
                copier = make_copier(torch, device, after)
                try:
                    reader = _Reader(torch, device, buffer_bytes, copier)
                    while not failures:
                        with take:
                            piece = next(pending, None)
                        if piece is None:
                            break
                        index, start, end = piece
                        reader.copy(headers[index], targets[index], start, end)
                finally:
                    copier.drain()
        except BaseException as error:  # noqa: B036 - re-raised in the caller's thread below
            failures.append(error)

    workers = min(max(1, threads), len(pieces))
    try:
        if workers:
            with ThreadPoolExecutor(workers, thread_name_prefix="preloader-warm-gpu") as pool:
                for future in [pool.submit(work) for _ in range(workers)]:
                    future.result()
    finally:
        targets.clear()
    if failures:
        raise failures[0]


def _allocate(torch, target, count: int):
    return torch.empty(count, dtype=torch.uint8, device=target)


def _open(path: Path, offset: int, length: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise DiskError(f"cannot open {path}: {error.strerror}") from error
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
    return fd


def _load(torch, target, headers, dtypes, dtype, threads, buffer_bytes, on_tensor, after) -> int:
    """Load every tensor, hold them all (the proof that the model fits), then drop them; the count.

    In the order `needed_bytes` counts: the files read in place all at once, then each file that
    casts on its own, its raw copy freed before the next.
    """
    held: list = []  # every device buffer, until the end
    count = 0

    def publish(header, placed, buffer) -> None:
        nonlocal count
        placement.check(torch, header, placed, buffer, dtype)
        count += len(placed)
        if on_tensor is not None:
            for entry, tensor in placed:
                on_tensor(entry.name, tensor)

    plain = [index for index, header in enumerate(headers) if not header.relaid(dtype)]
    try:
        raws = [_allocate(torch, target, headers[index].data_bytes) for index in plain]
        held.extend(raws)
        _stream(torch, target, [headers[index] for index in plain], raws, threads, buffer_bytes, after)
        for index, raw in zip(plain, raws, strict=True):
            publish(headers[index], placement.views(torch, headers[index], dtypes[index], raw), raw)
        for index, header in enumerate(headers):
            if not header.relaid(dtype):
                continue
            raw = _allocate(torch, target, header.data_bytes)
            out = _allocate(torch, target, header.layout(dtype)[1])
            held.append(out)
            _stream(torch, target, [header], [raw], threads, buffer_bytes, after)
            placed = placement.relay(torch, header, dtypes[index], raw, out, dtype,
                                     lambda size: _allocate(torch, target, size))
            raw = None  # freed now; the casts queued on this stream are ordered before any reuse
            publish(header, placed, out)
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        return count
    finally:
        held.clear()


def _forget_locals(error: BaseException) -> None:
    """Clear the locals of the finished frames that `error` and its causes hold: device tensors among
    them would stay allocated for as long as a library caller keeps the error."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # skips frames still running
        pending += [current.__cause__, current.__context__]


def _out_of_memory(torch) -> tuple[type, ...]:
    found = (getattr(torch, "OutOfMemoryError", None), getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
    return tuple({kind for kind in found if isinstance(kind, type)})


def _release_pinned(torch) -> None:
    """Give the cached pinned host memory back: torch keeps freed pinned blocks page-locked for reuse."""
    empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
    empty = empty or getattr(torch._C, "_host_emptyCache", None)
    if empty is None:
        return
    try:
        empty()
    except RuntimeError as error:  # no accelerator after all: nothing was pinned
        log.debug("cannot empty the pinned host cache: %s", error)


def warm_gpu(
    paths: Iterable[Path],
    *,
    device: str = "cuda:0",
    dtype: Dtype | None = None,
    threads: int | None = None,
    buffer_bytes: int = DEFAULT_BUFFER,
    max_free_bytes: int | None = None,
    on_tensor: Callable[[str, object], None] | None = None,
) -> WarmReport:
    """Load every tensor of the safetensors `paths` onto `device`, check them, free them; report GB/s.

    Before reading any tensor: UnavailableError (69) when torch or CUDA is missing, the device
    does not exist, a path is not *.safetensors, or the tensors (cast to `dtype`: float16,
    bfloat16 or float32; integer, float8, complex and packed tensors stay as stored) need more
    than the free device memory (`needed_bytes`, with a margin). Running out of memory anyway
    (another process took it meanwhile) is UnavailableError (69) too. A tensor whose dtype this
    torch lacks (or one packed below a byte: F4, F6_*) is loaded as a flat uint8 slice.
    `max_free_bytes` caps what counts as free (tests simulate a small device with it);
    `device="cpu"` runs the same pipeline without CUDA. DiskError (74) on a damaged or unreadable
    file. `on_tensor(name, tensor)` sees each tensor on the device before it is freed; it must not
    keep it. When this raises, no copy is still running and the error holds no device tensor.
    """
    started = time.perf_counter()
    paths = [Path(p) for p in paths]
    if dtype is not None and dtype not in TARGET_SIZES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(TARGET_SIZES)} or None")
    for path in paths:
        refuse_other_formats(path)
    torch = _import_torch()
    target, device_name = _open_device(torch, device)
    cuda = target.type == "cuda"
    headers = [read_header(path) for path in paths]
    dtypes = [[placement.device_dtype(torch, entry, dtype) for entry in header.tensors] for header in headers]
    needed = needed_bytes(headers, dtype)
    if cuda:
        # Blocks cached by this process's allocator are free for us too.
        free = torch.cuda.mem_get_info(target)[0]
        free += torch.cuda.memory_reserved(target) - torch.cuda.memory_allocated(target)
    else:
        free = _available_ram()
    if max_free_bytes is not None:
        free = min(free, max_free_bytes)
    cast = f" as {dtype}" if dtype else ""
    if needed > free:
        raise UnavailableError(
            f"the model does not fit on {target} ({device_name}): its tensors need {needed} bytes "
            f"({needed / GB:.2f} GB){cast}, {free} bytes ({free / GB:.2f} GB) are free; free the device, "
            "pick another with --warm gpu:N, or a smaller --dtype"
        )
    after = torch.cuda.current_stream(target) if cuda else None
    ready = time.perf_counter()
    try:
        tensors = _load(torch, target, headers, dtypes, dtype, threads or default_threads(), buffer_bytes,
                        on_tensor, after)
        finished = time.perf_counter()
    except BaseException as error:
        _forget_locals(error)
        if isinstance(error, _out_of_memory(torch)):
            raise UnavailableError(
                f"out of memory on {target} ({device_name}) while loading the model{cast}, although "
                f"{free} bytes were free for the {needed} bytes it needs: another process took memory "
                "meanwhile; free the device, pick another with --warm gpu:N, or a smaller --dtype"
            ) from error
        raise
    finally:
        if cuda:
            torch.cuda.empty_cache()  # every tensor is gone with _load's frame: give the memory back
            _release_pinned(torch)
    return WarmReport(
        device=str(target), files=len(paths), bytes=sum(h.data_bytes for h in headers),
        seconds=finished - ready, method="pinned" if cuda else "cpu", device_name=device_name,
        tensors=tensors, dtype=dtype, needed_bytes=needed, free_bytes=free, setup_seconds=ready - started,
    )
