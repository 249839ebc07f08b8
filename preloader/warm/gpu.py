"""GPU warming: every tensor of every safetensors file onto a device, through reused pinned buffers.

Headers are read first (`safetensors`, no torch), so the free-memory check happens before any
byte is loaded. torch is imported inside `warm_gpu` only.

Each reader thread owns two pinned host buffers: it reads one chunk into a buffer while the copy
of the previous chunk (from the other buffer, on the thread's own CUDA stream) is still running,
so disk or page-cache reads overlap host-to-device copies and the buffers are reused throughout.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DiskError, UnavailableError
from .mode import Dtype
from .page_cache import segments
from .report import GB, WarmReport
from .safetensors import (
    STORED_DTYPES,
    TARGET_SIZES,
    SafetensorsHeader,
    damaged,
    needed_bytes,
    read_header,
    refuse_other_formats,
)

DEFAULT_GPU_THREADS = min(16, os.cpu_count() or 4)
DEFAULT_BUFFER = 8 * 2**20


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


class _DoubleBuffer:
    """One reader thread's two pinned host buffers and CUDA stream: it reads into one buffer while the
    copy from the other is still running."""

    def __init__(self, torch, device, buffer_bytes: int) -> None:
        self.cuda = device.type == "cuda"
        self.buffer_bytes = buffer_bytes
        self.buffers = [torch.empty(buffer_bytes, dtype=torch.uint8, pin_memory=self.cuda) for _ in range(2)]
        self.views = [memoryview(buffer.numpy()) for buffer in self.buffers]
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        # Blocking events: a thread waiting for its copy sleeps instead of spinning on a core
        # that the other readers need.
        self.copied = [torch.cuda.Event(blocking=True) for _ in self.buffers] if self.cuda else []
        self.in_use = [False, False]
        self.turn = 0

    def copy(self, header: SafetensorsHeader, raw, start: int, end: int) -> None:
        """Bytes `start`..`end` of the header's data section into `raw`, `buffer_bytes` at a time."""
        fd = _open(header.path, header.data_start + start, end - start)
        try:
            for offset in range(start, end, self.buffer_bytes):
                length = min(self.buffer_bytes, end - offset)
                turn = self.turn
                if self.in_use[turn]:
                    self.copied[turn].synchronize()  # this buffer's previous copy must be done
                _read_into(fd, self.views[turn][:length], header.data_start + offset, header.path)
                raw[offset : offset + length].copy_(self.buffers[turn][:length], non_blocking=self.cuda)
                if self.cuda:
                    self.copied[turn].record(self.stream)
                    self.in_use[turn] = True
                self.turn ^= 1
        finally:
            os.close(fd)


def _stream(torch, device, headers, raws, threads: int, buffer_bytes: int) -> None:
    """Read the data sections of `headers` into `raws` (byte tensors on `device`), in parallel.

    Each thread reads contiguous pieces front to back through its own descriptor (see
    `page_cache.segments`), `buffer_bytes` at a time, alternating between its two buffers.
    """
    cuda = device.type == "cuda"
    pieces = segments([header.data_bytes for header in headers], threads, buffer_bytes)
    pending = iter(pieces)
    take = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            # A new thread starts on cuda:0; pinning from there would make a context on that GPU too.
            with torch.cuda.device(device) if cuda else contextlib.nullcontext():
                reader = _DoubleBuffer(torch, device, buffer_bytes)
                with torch.cuda.stream(reader.stream) if cuda else contextlib.nullcontext():
                    while not failures:
                        with take:
                            piece = next(pending, None)
                        if piece is None:
                            break
                        index, start, end = piece
                        reader.copy(headers[index], raws[index], start, end)
                if cuda:
                    reader.stream.synchronize()
        except BaseException as error:  # noqa: B036 - re-raised in the caller's thread below
            failures.append(error)

    workers = min(max(1, threads), len(pieces))
    if not workers:
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="preloader-warm-gpu") as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    if failures:
        raise failures[0]


def _torch_dtype(torch, name: str, path: Path):
    dtype = getattr(torch, name, None)
    if dtype is None:
        raise UnavailableError(f"{path}: dtype {name} is not supported by torch {torch.__version__}")
    return dtype


def _tensors(torch, header: SafetensorsHeader, raw, dtype: Dtype | None):
    """(name, tensor) for every entry: views of `raw`, or fresh cast copies when the file casts."""
    fresh = header.casts(dtype)
    target = getattr(torch, dtype) if dtype else None
    for entry in header.tensors:
        size, name = STORED_DTYPES[entry.dtype]
        stored = _torch_dtype(torch, name, header.path)
        piece = raw[entry.begin : entry.end]
        if entry.begin % size:
            piece = piece.clone()  # a view as a wider dtype needs an aligned start
        tensor = piece.view(stored).reshape(entry.shape)
        if tensor.dtype != stored or tuple(tensor.shape) != entry.shape:
            raise damaged(header.path, f"tensor {entry.name!r} loaded as {tensor.dtype}{tuple(tensor.shape)}")
        if entry.casts_to(dtype):
            tensor = tensor.to(target)
        elif fresh:
            tensor = tensor.clone()  # so the raw copy of this file can be freed
        yield entry.name, tensor


def _open(path: Path, offset: int, length: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise DiskError(f"cannot open {path}: {error.strerror}") from error
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_SEQUENTIAL)
    return fd


def _load(torch, target, headers, dtype, threads, buffer_bytes, on_tensor) -> int:
    """Load every tensor, hold them all (the proof that the model fits), then drop them; the count."""
    cuda = target.type == "cuda"
    held: list = []
    # Files that cast are done one at a time, so only one raw copy is on the device at once.
    groups = [[header] for header in headers] if any(h.casts(dtype) for h in headers) else [headers]
    try:
        for group in groups:
            raws = [torch.empty(h.data_bytes, dtype=torch.uint8, device=target) for h in group]
            _stream(torch, target, group, raws, threads, buffer_bytes)
            for header, raw in zip(group, raws, strict=True):
                for name, tensor in _tensors(torch, header, raw, dtype):
                    held.append(tensor)
                    if on_tensor is not None:
                        on_tensor(name, tensor)
            raws = raw = None  # this group's raw copies go now, not at the next assignment
            if cuda:
                # Casts run on the default stream; the next group's copies run on other streams.
                torch.cuda.synchronize(target)
        return len(held)
    finally:
        held.clear()


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
    bfloat16 or float32; integer and float8 tensors stay as stored) need more than the free
    device memory. `max_free_bytes` caps what counts as free (tests simulate a small device
    with it); `device="cpu"` runs the same pipeline without CUDA. DiskError (74) on a damaged
    or unreadable file. `on_tensor(name, tensor)` sees each tensor on the device before it is freed.
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
    needed = needed_bytes(headers, dtype)
    if cuda:
        # Blocks cached by this process's allocator are free for us too.
        free = torch.cuda.mem_get_info(target)[0]
        free += torch.cuda.memory_reserved(target) - torch.cuda.memory_allocated(target)
    else:
        free = _available_ram()
    if max_free_bytes is not None:
        free = min(free, max_free_bytes)
    if needed > free:
        cast = f" as {dtype}" if dtype else ""
        raise UnavailableError(
            f"the model does not fit on {target} ({device_name}): its tensors need {needed} bytes "
            f"({needed / GB:.2f} GB){cast}, {free} bytes ({free / GB:.2f} GB) are free; free the device, "
            "pick another with --warm gpu:N, or a smaller --dtype"
        )
    ready = time.perf_counter()
    try:
        tensors = _load(torch, target, headers, dtype, threads or DEFAULT_GPU_THREADS, buffer_bytes, on_tensor)
        finished = time.perf_counter()
    finally:
        if cuda:
            torch.cuda.empty_cache()  # every tensor is gone with _load's frame: give the memory back
    return WarmReport(
        device=str(target), files=len(paths), bytes=sum(h.data_bytes for h in headers),
        seconds=finished - ready, method="pinned" if cuda else "cpu", device_name=device_name,
        tensors=tensors, dtype=dtype, needed_bytes=needed, free_bytes=free, setup_seconds=ready - started,
    )
