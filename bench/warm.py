"""Benchmark: warming a model's weights, into the page cache and onto a GPU, next to the plain ways.

    .venv/bin/python bench/warm.py [--size 4G] [--shards 4] [--runs 5] [--dir DIR] [--gpu-only | --no-gpu]

Writes a generated model (bf16 matrices and a few float32 norms) of --size in --shards
safetensors files, then times in one run, medians of --runs, interleaved run by run:
  - page cache, files already cached (hot): `warm_page_cache` (sendfile and pread) next to a
    plain sequential read (Python read(), and `cat`) and a parallel `cat` of the same files;
  - the same cold, from disk: caches dropped before every timed run (`echo 3 > drop_caches` when
    permitted, else POSIX_FADV_DONTNEED per file; the table says which and checks residency),
    next to a parallel `cat` and a parallel `dd` (one process per file) as the raw limit;
  - with CUDA: `warm_gpu` (files in page cache) next to `safetensors.torch.load_file(device=cuda)`
    and the raw limit: a pinned host-to-device copy of the same byte count; then threads and
    buffer sizes swept, a float16 cast, and (when caches can be dropped) both cold.
Prints a Markdown table. Needs only numpy (and torch + safetensors for the GPU part): it loads
preloader's warm modules without the rest of the package, so `--gpu-only` runs on a bare GPU box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20
SEQUENTIAL = "plain sequential read (Python, 1 MiB read())"
PARALLEL_CAT = "cat, one process per file (parallel)"
PARALLEL_DD = "dd bs=16M, one process per file (parallel)"
PINNED_TO = "raw limit: pinned host -> device, .to('cuda')"
PINNED_COPY = "raw limit: pinned host -> device, copy_ into allocated"
LOAD_FILE = "safetensors load_file(device='cuda')"
WARM_GPU = "warm_gpu (defaults)"
HOT, COLD, GPU_HOT, GPU_COLD = "page cache hot: ", "cold from disk: ", "GPU, page cache hot: ", "GPU, cold from disk: "

if "preloader" not in sys.modules:
    # Only the warm package and what it imports: no hub client, click or filelock needed.
    _package = types.ModuleType("preloader")
    _package.__path__ = [str(ROOT / "preloader")]
    sys.modules["preloader"] = _package

from preloader.units import parse_size  # noqa: E402
from preloader.warm import gpu as warm_gpu  # noqa: E402
from preloader.warm import page_cache as warm  # noqa: E402

# --- the model ----------------------------------------------------------------------------------

def write_shard(path: Path, size: int, block: bytes, index: int) -> None:
    """One safetensors file of about `size` bytes: 32 MiB bf16 matrices, two float32 norms, a remainder."""
    tensors, offset = {}, 0

    def add(name: str, dtype: str, shape: list[int], itemsize: int) -> None:
        nonlocal offset
        count = itemsize
        for dim in shape:
            count *= dim
        tensors[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count]}
        offset += count

    for norm in range(2):
        add(f"model.layers.{index}.norm{norm}.weight", "F32", [4096], 4)
    layer = 0
    while size - offset >= 32 * MiB:
        add(f"model.layers.{index}.proj{layer}.weight", "BF16", [4096, 4096], 2)
        layer += 1
    if (size - offset) // 2:
        add(f"model.layers.{index}.rest.weight", "BF16", [(size - offset) // 2], 2)
    header = json.dumps(tensors).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header)) + header)
        left = offset
        while left:
            left -= file.write(block[: min(left, len(block))])
        file.flush()
        os.fsync(file.fileno())


def make_model(directory: Path, size: int, shards: int) -> list[Path]:
    import numpy as np

    block = np.random.default_rng(0).bytes(64 * MiB)
    paths = []
    for index in range(shards):
        path = directory / f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        write_shard(path, size // shards, block, index)
        paths.append(path)
    return paths


# --- page cache control ---------------------------------------------------------------------------

def drop_caches(paths: list[Path], how: str) -> None:
    if how == "drop_caches":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as file:
            file.write("3\n")
    else:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def eviction_method(paths: list[Path]) -> str:
    try:
        drop_caches(paths, "drop_caches")
        return "drop_caches"
    except OSError:
        drop_caches(paths, "fadvise")
        return "fadvise"


def resident_fraction(paths: list[Path]) -> float:
    """Fraction of the files' pages in the page cache (mincore on read-only mappings)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    pages = present = 0
    for path in paths:
        size = path.stat().st_size
        fd = os.open(path, os.O_RDONLY)
        address = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        os.close(fd)
        count = -(-size // os.sysconf("SC_PAGE_SIZE"))
        vector = (ctypes.c_ubyte * count)()
        failed = libc.mincore(address, size, vector) != 0
        libc.munmap(address, size)
        if failed:
            return float("nan")
        pages += count
        present += sum(byte & 1 for byte in vector)
    return present / pages if pages else 1.0


# --- the contenders -----------------------------------------------------------------------------

def sequential_read(paths: list[Path]) -> int:
    buffer = bytearray(MiB)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while count := file.readinto(buffer):
                total += count
    return total


def processes(commands: list[list[str]]) -> None:
    running = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for command in commands]
    for process in running:
        if process.wait() != 0:
            raise RuntimeError(f"{process.args} failed")


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(cases: dict[str, Callable[[], object]], runs: int, before: Callable[[], None]) -> dict[str, list[float]]:
    """Each case `runs` times, interleaved so drift hits every case alike; `before` runs untimed."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, run in cases.items():
            before()
            times[name].append(timed(run))
    return times


def rows_for(times: dict[str, list[float]], total: int) -> list[tuple[str, float, float]]:
    medians = {name: statistics.median(values) for name, values in times.items()}
    return [(name, total / seconds / 1e9, seconds) for name, seconds in medians.items()]


# --- GPU -------------------------------------------------------------------------------------------

def gpu_rows(paths: list[Path], total: int, runs: int, args, evict: str | None) -> tuple[str, list]:
    import torch
    from safetensors.torch import load_file

    torch.zeros(1, device="cuda")  # the CUDA context, paid once and by nobody below
    name = torch.cuda.get_device_name(0)
    warm.warm_page_cache(paths)

    def hot() -> None:
        pass

    def sync_after(run: Callable[[], object]) -> Callable[[], object]:
        def wrapped() -> object:
            result = run()
            torch.cuda.synchronize()
            return result
        return wrapped

    host = torch.empty(total, dtype=torch.uint8, pin_memory=True)
    host.fill_(1)
    target = torch.empty(total, dtype=torch.uint8, device="cuda")

    def load_all() -> None:
        tensors = [load_file(str(path), device="cuda") for path in paths]
        torch.cuda.synchronize()
        del tensors

    cases: dict[str, Callable[[], object]] = {
        PINNED_TO: sync_after(lambda: host.to("cuda")),
        PINNED_COPY: sync_after(
            lambda: target.copy_(host, non_blocking=True)),
        LOAD_FILE: load_all,
        WARM_GPU: lambda: warm_gpu.warm_gpu(paths),
    }
    default = f"{warm_gpu.default_threads()} threads x {warm_gpu.DEFAULT_BUFFER // MiB} MiB"
    for threads in args.gpu_threads:
        for buffer in args.gpu_buffers:
            cases[f"warm_gpu {threads} threads x {buffer // MiB} MiB buffers"] = (
                lambda t=threads, b=buffer: warm_gpu.warm_gpu(paths, threads=t, buffer_bytes=b))
    cases["warm_gpu --dtype float16 (cast on device)"] = lambda: warm_gpu.warm_gpu(paths, dtype="float16")
    # The first call pays for the CUDA streams and the allocator's first segments; every call pins its
    # host buffers afresh (warm_gpu gives the pinned cache back when it is done).
    first = timed(lambda: warm_gpu.warm_gpu(paths))
    # One untimed round so allocator caches and pinned buffers exist for every case alike.
    for run in cases.values():
        run()
    rows = [(GPU_HOT + what, gbps, secs)
            for what, gbps, secs in rows_for(measure(cases, runs, hot), total)]
    rows.append((GPU_HOT + WARM_GPU + ", first call in the process (1 run)", total / first / 1e9, first))
    target = None  # noqa: F841 - frees the device copy before the cold runs
    if evict:
        cold = {
            WARM_GPU: lambda: warm_gpu.warm_gpu(paths),
            LOAD_FILE: load_all,
        }
        rows += [(GPU_COLD + what, gbps, secs)
                 for what, gbps, secs in rows_for(measure(cold, runs, lambda: drop_caches(paths, evict)), total)]
    host = None  # noqa: F841 - frees the pinned copy
    return f"{name}, warm_gpu default {default}", rows


def ratios(rate: dict[str, float], threads: int) -> list[str]:
    """The issue's goals, as measured ratios."""
    lines = []

    def ratio(line: str, ours: str, *others: str) -> None:
        known = [rate[name] for name in others if name in rate]
        if ours in rate and known:
            lines.append(f"{line}: {rate[ours] / max(known):.2f}x")

    sendfile = f"warm_page_cache, sendfile, {threads} threads"
    ratio("page cache hot, warm vs plain sequential read", HOT + sendfile, HOT + SEQUENTIAL)
    ratio("cold from disk, warm vs the faster of parallel cat and dd (goal >= 0.9)", COLD + sendfile,
          COLD + PARALLEL_CAT, COLD + PARALLEL_DD)
    ratio("GPU from page cache, warm_gpu vs the pinned host-to-device limit (goal >= 0.8)", GPU_HOT + WARM_GPU,
          GPU_HOT + PINNED_TO, GPU_HOT + PINNED_COPY)
    ratio("GPU from page cache, warm_gpu vs safetensors load_file (goal >= 5)", GPU_HOT + WARM_GPU, GPU_HOT + LOAD_FILE)
    ratio("GPU cold from disk, warm_gpu vs safetensors load_file", GPU_COLD + WARM_GPU, GPU_COLD + LOAD_FILE)
    return lines


# --- main ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4G", help="model size, e.g. 2G, 4G, 500M (default 4G)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", help="where to write the model (default: a temp dir); put it on the disk to test")
    parser.add_argument("--threads", type=int, default=warm.DEFAULT_THREADS, help="page-cache warm threads")
    parser.add_argument("--gpu-threads", default="4,8,16", help="warm_gpu thread counts to sweep")
    parser.add_argument("--gpu-buffers", default="8M,32M", help="warm_gpu buffer sizes to sweep")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--gpu-only", action="store_true", help="skip the page-cache part")
    part.add_argument("--no-gpu", action="store_true", help="skip the GPU part")
    parser.add_argument("--keep", action="store_true", help="keep the generated model")
    args = parser.parse_args()
    args.gpu_threads = [int(t) for t in args.gpu_threads.split(",") if t]
    args.gpu_buffers = [parse_size(b) for b in args.gpu_buffers.split(",") if b]

    size = parse_size(args.size)
    workdir = Path(tempfile.mkdtemp(prefix="preloader-warm-bench-", dir=args.dir))
    try:
        started = time.perf_counter()
        paths = make_model(workdir, size, args.shards)
        total = sum(path.stat().st_size for path in paths)
        print(f"wrote {len(paths)} shards, {total} bytes in {time.perf_counter() - started:.1f} s to {workdir}",
              file=sys.stderr)
        evict = eviction_method(paths)
        left = resident_fraction(paths)
        if left > 0.05:
            print(f"eviction left {left:.0%} of the pages cached: no cold runs", file=sys.stderr)
            evict = None
        rows: list[tuple[str, float, float]] = []
        gpu = "not run"
        names = [str(path) for path in paths]
        if not args.gpu_only:
            hot_cases: dict[str, Callable[[], object]] = {
                f"warm_page_cache, sendfile, {args.threads} threads": lambda: warm.warm_page_cache(
                    paths, threads=args.threads, method="sendfile"),
                f"warm_page_cache, pread, {args.threads} threads": lambda: warm.warm_page_cache(
                    paths, threads=args.threads, method="pread"),
                SEQUENTIAL: lambda: sequential_read(paths),
                "cat of every file (one process, sequential)": lambda: processes([["cat", *names]]),
                PARALLEL_CAT: lambda: processes([["cat", name] for name in names]),
            }
            warm.warm_page_cache(paths)
            rows += [(HOT + what, gbps, secs)
                     for what, gbps, secs in rows_for(measure(hot_cases, args.runs, lambda: None), total)]
            if evict:
                cold_cases = dict(hot_cases)
                cold_cases[PARALLEL_DD] = lambda: processes(
                    [["dd", f"if={name}", "of=/dev/null", "bs=16M", "status=none"] for name in names])
                rows += [(COLD + what, gbps, secs)
                         for what, gbps, secs in rows_for(
                             measure(cold_cases, args.runs, lambda: drop_caches(paths, evict)), total)]
        if not args.no_gpu:
            try:
                import torch

                if torch.cuda.is_available():
                    gpu, more = gpu_rows(paths, total, args.runs, args, evict)
                    rows += more
                else:
                    gpu = f"no CUDA (torch {torch.__version__})"
            except ImportError:
                gpu = "no torch"
        cpu = platform.processor() or platform.machine()
        print(f"\nModel: {len(paths)} safetensors shards, {total / 1e9:.2f} GB ({total} bytes), in {workdir.parent}. "
              f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}. GPU: {gpu}. "
              f"Cold runs: {evict or 'none (pages could not be evicted)'}. Medians of {args.runs} runs.\n")
        print("| what | GB/s | seconds |")
        print("|---|---:|---:|")
        for what, gbps, secs in rows:
            print(f"| {what} | {gbps:.2f} | {secs:.3f} |")
        print()
        for line in ratios(dict((what, gbps) for what, gbps, _ in rows), args.threads):
            print(f"- {line}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
