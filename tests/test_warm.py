"""Warming: page cache (every byte resident), GPU path on the CPU device (bit for bit), the checks before it."""

from __future__ import annotations

import builtins
import ctypes
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from preloader.config import Settings
from preloader.errors import ConfigError, DiskError, UnavailableError
from preloader.warm import gpu as warm_gpu
from preloader.warm import memlock, page_cache
from preloader.warm.mode import WarmMode
from preloader.warm.page_cache import warm_page_cache
from preloader.warm.safetensors import MARGIN, needed_bytes, read_header
from preloader.warm.snapshot import warm_snapshot, weight_files

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20


# --- helpers ----------------------------------------------------------------------------------

def write_bytes(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        file.write(os.urandom(size))
        file.flush()
        os.fsync(file.fileno())  # dirty pages cannot be evicted, and the tests evict
    return path


def write_safetensors(path: Path, tensors: list[tuple[str, str, list[int], bytes]], pad_to: int = 8) -> Path:
    """A safetensors file written by hand, so tests control offsets (misaligned ones too)."""
    header, offset, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(payload)]}
        offset += len(payload)
        data += payload
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % pad_to)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def resident(path: Path) -> float:
    """Fraction of the file's pages in the page cache (mincore on a read-only mapping)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED: maps, reads nothing
    finally:
        os.close(fd)
    pages = -(-size // os.sysconf("SC_PAGE_SIZE"))
    vector = (ctypes.c_ubyte * pages)()
    try:
        assert _libc.mincore(address, size, vector) == 0, os.strerror(ctypes.get_errno())
    finally:
        _libc.munmap(address, size)
    return sum(byte & 1 for byte in vector) / pages


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, mode", [
    ("none", WarmMode("none")),
    ("page-cache", WarmMode("page-cache")),
    (" Page-Cache ", WarmMode("page-cache")),
    ("gpu", WarmMode("gpu", 0)),
    ("gpu:0", WarmMode("gpu", 0)),
    ("GPU:3", WarmMode("gpu", 3)),
])
def test_parse_warm(text, mode):
    assert WarmMode.parse(text) == mode
    assert Settings.load({"PRELOADER_WARM": text}).warm == mode


def test_warm_mode_names_its_device():
    assert Settings.load({}).warm == WarmMode("none")
    assert (str(WarmMode.parse("gpu")), WarmMode.parse("gpu").device) == ("gpu:0", "cuda:0")
    assert (str(WarmMode.parse("gpu:2")), WarmMode.parse("gpu:2").device) == ("gpu:2", "cuda:2")
    assert (str(WarmMode.parse("page-cache")), WarmMode.parse("page-cache").device) == ("page-cache", "page-cache")


@pytest.mark.parametrize("environ, flags, message", [
    ({"PRELOADER_WARM": "gpu:x"}, {}, "invalid settings: PRELOADER_WARM='gpu:x': expected none, page-cache, gpu or gpu:N (N a CUDA device index)"),
    # the flag supplied the value, so the error names the flag, not the env var beneath it
    ({"PRELOADER_WARM": "gpu"}, {"warm": "pagecache"}, "invalid settings: --warm='pagecache': expected none, page-cache, gpu or gpu:N (N a CUDA device index)"),
    ({"PRELOADER_WARM": "gpu:-1"}, {}, "invalid settings: PRELOADER_WARM='gpu:-1': expected none, page-cache, gpu or gpu:N (N a CUDA device index)"),
    ({"PRELOADER_DTYPE": "fp16"}, {}, "invalid settings: PRELOADER_DTYPE='fp16': expected one of none, float16, bfloat16, float32"),
    ({}, {"dtype": "fp16"}, "invalid settings: --dtype='fp16': expected one of none, float16, bfloat16, float32"),
])
def test_warm_and_dtype_errors_name_their_source(environ, flags, message):
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ, flags)
    assert str(caught.value) == message
    assert caught.value.exit_code == 78


@pytest.mark.parametrize("text, dtype", [
    ("none", None), ("float16", "float16"), ("BFloat16", "bfloat16"), ("float32", "float32"),
])
def test_parse_dtype(text, dtype):
    assert Settings.load({"PRELOADER_DTYPE": text}).dtype == dtype


def test_weight_files_picks_weights_once_per_blob(tmp_path):
    blobs = tmp_path / "blobs"
    snapshot = tmp_path / "snapshots" / "abc"
    for name in ("w1", "w2", "bin", "cfg", "unet", "hidden"):
        write_bytes(blobs / name, 10)
    links = {
        "model-00001-of-00002.safetensors": "w1", "model-00002-of-00002.safetensors": "w2",
        "consolidated.safetensors": "w1",  # same blob under a second name: read once
        "pytorch_model.bin": "bin", "config.json": "cfg", "unet/diffusion.safetensors": "unet",
        ".cache/x.safetensors": "hidden",
    }
    for name, blob in links.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blobs / blob, (snapshot / name).parent))
    (snapshot / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    names = lambda paths: [str(p.relative_to(snapshot)) for p in paths]  # noqa: E731
    assert names(weight_files(snapshot)) == [
        "consolidated.safetensors", "model-00002-of-00002.safetensors", "pytorch_model.bin", "unet/diffusion.safetensors",
    ]
    # For the GPU: what the index maps (not consolidated.safetensors, the same weights again);
    # a folder without an index gives every file.
    assert names(weight_files(snapshot, safetensors_only=True)) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "unet/diffusion.safetensors",
    ]


# --- page cache -----------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, threads, block, pieces", [
    ([100 * MiB] * 4, 8, MiB, 8),  # two sequential streams per file
    ([300 * MiB, 100 * MiB], 4, MiB, 4),  # shares follow the sizes
    ([5 * MiB, 1, 0], 8, 16 * MiB, 2),  # small files: one piece each, never split below a block; empty: none
])
def test_segments_cover_every_byte_in_near_equal_pieces(sizes, threads, block, pieces):
    parts = page_cache.segments(sizes, threads, block)
    assert len(parts) == pieces
    for index, size in enumerate(sizes):
        mine = [(start, end) for i, start, end in parts if i == index]
        if size == 0:
            assert mine == []
            continue
        assert mine[0][0] == 0 and mine[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(mine, mine[1:], strict=False))
        assert all(start % 4096 == 0 for start, _ in mine)
    lengths = [end - start for _, start, end in parts if end - start >= block]
    assert not lengths or max(lengths) - min(lengths) <= 4096 * len(sizes)


@pytest.fixture
def cold_files(tmp_path):
    """Three files of a few MB, evicted from the page cache (skipped where eviction does not work)."""
    paths = [write_bytes(tmp_path / f"shard-{i}.safetensors", size) for i, size in enumerate((3 * MiB, 5 * MiB + 123, 1))]
    for path in paths:
        evict(path)
    if resident(paths[1]) > 0.5:
        pytest.skip("this filesystem keeps pages after POSIX_FADV_DONTNEED (tmpfs?)")
    return paths


@pytest.mark.parametrize("method", ["auto", "sendfile", "pread"])
def test_page_cache_warm_makes_every_byte_resident(cold_files, method):
    report = warm_page_cache(cold_files, threads=3, block=MiB, method=method)
    assert [resident(path) for path in cold_files] == [1.0, 1.0, 1.0]
    assert report.bytes == sum(path.stat().st_size for path in cold_files)
    assert (report.device, report.files) == ("page-cache", 3)
    assert report.method in ("sendfile", "pread") and (method == "auto" or report.method == method)
    assert report.seconds > 0 and report.gbps > 0


def test_page_cache_warm_counts_every_byte_read(tmp_path, monkeypatch):
    paths = [write_bytes(tmp_path / f"{i}.bin", size) for i, size in enumerate((MiB + 7, 2 * MiB, 0))]
    ranges: list[tuple[int, int, int]] = []
    real = os.preadv

    def counting(fd, buffers, offset):
        count = real(fd, buffers, offset)
        ranges.append((os.fstat(fd).st_ino, offset, count))
        return count

    monkeypatch.setattr(os, "preadv", counting)
    report = warm_page_cache(paths, threads=4, block=256 * 1024, method="pread")
    for path in paths:
        spans = sorted((offset, count) for ino, offset, count in ranges if ino == path.stat().st_ino)
        covered = 0
        for offset, count in spans:
            assert offset == covered  # no gap, no overlap
            covered += count
        assert covered == path.stat().st_size
    assert report.bytes == sum(path.stat().st_size for path in paths)


def test_page_cache_warm_missing_file_is_disk_error(tmp_path):
    with pytest.raises(DiskError, match="cannot open .*missing.bin: No such file") as caught:
        warm_page_cache([tmp_path / "missing.bin"])
    assert caught.value.exit_code == 74


def may_lock(count: int) -> bool:
    import resource

    with open("/proc/self/status") as status:
        caps = int(next(line for line in status if line.startswith("CapEff:")).split()[1], 16)
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    return bool(caps & (1 << 14)) or hard == resource.RLIM_INFINITY or hard >= count  # CAP_IPC_LOCK


@pytest.mark.skipif(not may_lock(MiB), reason="RLIMIT_MEMLOCK below 1 MiB and no CAP_IPC_LOCK")
def test_page_cache_lock_keeps_files_locked(tmp_path):
    paths = [write_bytes(tmp_path / f"{i}.bin", 256 * 1024) for i in range(2)]
    try:
        report = warm_page_cache(paths, threads=2, lock=True)
        assert (report.locked_bytes, report.warning) == (512 * 1024, None)
        assert memlock.locked_bytes() == 512 * 1024
        for path in paths:
            evict(path)  # a locked page survives DONTNEED
            assert resident(path) == 1.0
    finally:
        memlock.release_locks()
    assert memlock.locked_bytes() == 0


LOCK_CHILD = """
import json, sys
from preloader.warm import memlock, page_cache
from preloader.errors import UnavailableError
report = page_cache.warm_page_cache([sys.argv[1]], lock=True)
try:
    memlock.lock_in_memory([sys.argv[1]])
    raised = None
except UnavailableError as error:
    raised = error.exit_code
print(json.dumps({"warning": report.warning, "locked": report.locked_bytes, "held": memlock.locked_bytes(), "raised": raised}))
"""


def _without_lock_rights():
    import resource

    if os.geteuid() == 0:
        # Root locks past any limit (CAP_IPC_LOCK): drop it from the bounding set, so the
        # python we exec does not get it.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(24, 14, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_IPC_LOCK
            os._exit(99)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 * 1024, 64 * 1024))


def test_page_cache_lock_refused_names_limit_and_bytes(tmp_path):
    path = write_bytes(tmp_path / "big.bin", 2 * MiB)
    child = subprocess.run([sys.executable, "-c", LOCK_CHILD, str(path)], capture_output=True, text=True,
                           cwd=ROOT, preexec_fn=_without_lock_rights, timeout=60)
    if child.returncode == 99:
        pytest.skip("cannot drop CAP_IPC_LOCK here")
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["locked"] == 0 and result["held"] == 0 and result["raised"] == 69
    assert result["warning"].startswith("cannot lock the weights in RAM: mlock of big.bin failed (")
    assert "2097152 bytes (2.0 MiB) needed, RLIMIT_MEMLOCK is 64.0 KiB (ulimit -l 64)" in result["warning"]
    assert "docker run --ulimit memlock=-1" in result["warning"]


NO_TORCH_CHILD = """
import sys
import preloader
from preloader.warm.mode import WarmMode
from preloader.warm.snapshot import warm_snapshot
report = warm_snapshot(sys.argv[1], WarmMode.parse("page-cache"), repo="org/m")
assert report.bytes > 0, report
print(sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "numpy", "safetensors")))
"""


def test_page_cache_path_never_imports_torch(tmp_path):
    write_bytes(tmp_path / "model.safetensors", 1000)
    child = subprocess.run([sys.executable, "-c", NO_TORCH_CHILD, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[]"
    # The same probe sees torch once the GPU path runs, so the check above can fail.
    probe = "import sys; from preloader.warm.gpu import warm_gpu; warm_gpu([], device='cpu'); print('torch' in sys.modules)"
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert child.stdout.strip() == "True", child.stderr


class Events(logging.Handler):
    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, dict]] = []

    def emit(self, record):
        self.events.append((record.getMessage(), getattr(record, "fields", {})))


@pytest.fixture
def events():
    handler = Events()
    logger = logging.getLogger("preloader.warm")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler.events
    logger.setLevel(old)
    logger.removeHandler(handler)


def test_warm_snapshot_logs_bytes_seconds_rate_device(tmp_path, events):
    write_bytes(tmp_path / "model.safetensors", 3000)
    write_bytes(tmp_path / "pytorch_model.bin", 500)
    write_bytes(tmp_path / "config.json", 10)
    report = warm_snapshot(tmp_path, WarmMode.parse("page-cache"), repo="org/m")
    assert report.bytes == 3500
    assert [name for name, _ in events] == ["warm.start", "warm.done"]
    done = events[1][1]
    assert list(done) == ["repo", "device", "files", "bytes", "secs", "rate"]
    assert (done["repo"], done["device"], done["files"], done["bytes"]) == ("org/m", "page-cache", 2, 3500)
    assert done["rate"].endswith("GB/s")
    assert warm_snapshot(tmp_path, WarmMode.parse("none")) is None


def test_warm_snapshot_gpu_without_safetensors_is_unavailable(tmp_path):
    write_bytes(tmp_path / "pytorch_model.bin", 500)
    with pytest.raises(UnavailableError, match=r"no \*\.safetensors files in .* \(org/m\): GPU warming loads only safetensors") as caught:
        warm_snapshot(tmp_path, WarmMode.parse("gpu"), repo="org/m")
    assert caught.value.exit_code == 69


# --- GPU path, on the CPU device ---------------------------------------------------------------

try:  # torch is an extra: without it only the page-cache tests run
    import safetensors.torch as safetensors_torch
    import torch
except ImportError:
    torch = safetensors_torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (the warm extra)")


def make_model(directory: Path) -> list[Path]:
    """Two shards with every common dtype, a scalar, an empty tensor and a misaligned tensor."""
    g = torch.Generator().manual_seed(0)
    first = {
        "embed": torch.randn(300, 257, generator=g),
        "norm": torch.randn(257, generator=g).to(torch.bfloat16),
        "half": torch.randn(1001, generator=g).to(torch.float16),
        "double": torch.randn(17, generator=g).to(torch.float64),
        "ids": torch.arange(-50, 50, dtype=torch.int64),
        "mask": torch.rand(33, generator=g) > 0.5,
        "scale": torch.tensor(0.125),
        "empty": torch.zeros(0, 4),
        "q8": torch.randint(-128, 127, (999,), dtype=torch.int8, generator=g),
        "f8": torch.randn(64, generator=g).to(torch.float8_e4m3fn),
    }
    one = directory / "model-00001-of-00002.safetensors"
    safetensors_torch.save_file(first, str(one))
    # By hand: a 3-byte tensor first, so the float32 one after it starts at an odd offset.
    second = write_safetensors(directory / "model-00002-of-00002.safetensors", [
        ("odd", "U8", [3], bytes([1, 2, 3])),
        ("lm_head", "F32", [40, 33], torch.randn(40, 33, generator=g).numpy().tobytes()),
        ("i32", "I32", [5], torch.arange(5, dtype=torch.int32).numpy().tobytes()),
    ])
    return [one, second]


def expected_tensors(paths, dtype):
    expected = {}
    for path in paths:
        for name, tensor in safetensors_torch.load_file(str(path)).items():
            if dtype and tensor.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                tensor = tensor.to(getattr(torch, dtype))
            expected[name] = tensor
    return expected


def same_bits(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8)) if a.numel() else True


def load_all(paths, **options):
    got = {}
    report = warm_gpu.warm_gpu(paths, on_tensor=lambda name, tensor: got.__setitem__(name, tensor.cpu().clone()), **options)
    return report, got


@needs_torch
@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16", "float32"])
def test_gpu_path_on_cpu_matches_files_bit_for_bit(tmp_path, dtype):
    paths = make_model(tmp_path)
    # Small buffers: chunks split tensors and cross into the next file's reads on other threads.
    report, got = load_all(paths, device="cpu", dtype=dtype, threads=3, buffer_bytes=4096)
    expected = expected_tensors(paths, dtype)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if not same_bits(got[name], expected[name])] == []
    assert report.tensors == len(expected) == 13
    assert report.bytes == sum(read_header(p).data_bytes for p in paths)
    assert (report.device, report.dtype, report.files) == ("cpu", dtype, 2)


def test_header_sizes_and_needed_bytes(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [
        ("w", "BF16", [1024, 1024], bytes(2 * MiB)), ("b", "F32", [256], bytes(1024)), ("n", "I64", [4], bytes(32)),
    ])
    header = read_header(path)
    assert (header.data_bytes, [t.name for t in header.tensors]) == (2 * MiB + 1056, ["w", "b", "n"])
    # What the CUDA caching allocator takes: a 20 MiB segment for 1..10 MiB, 2 MiB for up to 1 MiB.
    assert needed_bytes([header]) == 20 * MiB + MARGIN  # one raw allocation; the tensors are views of it
    # float32: the raw copy and one output buffer (4 MiB + 1056 bytes, one segment) while the file is cast.
    assert header.layout("float32") == ([0, 4 * MiB, 4 * MiB + 1024], 4 * MiB + 1056)
    assert needed_bytes([header], "float32") == 40 * MiB + MARGIN
    assert header.layout("bfloat16") == ([0, 2 * MiB, 2 * MiB + 512], 2 * MiB + 544)  # only "b" casts
    assert needed_bytes([header], "bfloat16") == 40 * MiB + MARGIN
    bf16 = read_header(write_safetensors(tmp_path / "bf16.safetensors", [("w", "BF16", [8], bytes(16)), ("n", "I64", [1], bytes(8))]))
    assert needed_bytes([bf16], "bfloat16") == needed_bytes([bf16]) == 2 * MiB + MARGIN  # nothing to cast: views
    # Files read in place come first and stay; then each casting file with its raw copy, freed after.
    assert needed_bytes([header, bf16], "bfloat16") == needed_bytes([bf16, header], "bfloat16") == 42 * MiB + MARGIN
    # Above 10 MiB an allocation is rounded to 2 MiB; a misaligned tensor puts its file into an output buffer.
    big = read_header(write_safetensors(tmp_path / "big.safetensors", [
        ("odd", "U8", [3], bytes(3)), ("w", "F32", [3 * MiB], bytes(12 * MiB)),
    ]))
    assert (big.relaid(None), big.staging_bytes(None), big.staging_bytes("float16")) == (True, 0, 12 * MiB)
    assert needed_bytes([big]) == 2 * (12 * MiB + 2 * MiB) + MARGIN
    # float16: raw copy, the output buffer (3 + 6 MiB: a 20 MiB segment) and the aligned clone of "w" for its cast.
    assert needed_bytes([big], "float16") == (14 + 20 + 12) * MiB + MARGIN
    assert needed_bytes([]) == 0


@needs_torch
def test_model_larger_than_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    paths = make_model(tmp_path)
    needed = needed_bytes([read_header(p) for p in paths], "float32")
    monkeypatch.setattr(warm_gpu, "_stream", lambda *a, **k: pytest.fail("loaded despite the check"))
    with pytest.raises(UnavailableError) as caught:
        warm_gpu.warm_gpu(paths, device="cpu", dtype="float32", max_free_bytes=needed - 1)
    assert caught.value.exit_code == 69
    assert str(caught.value).startswith(
        f"the model does not fit on cpu (cpu): its tensors need {needed} bytes ({needed / 1e9:.2f} GB) as float32, "
        f"{needed - 1} bytes ({(needed - 1) / 1e9:.2f} GB) are free; "
    )
    monkeypatch.undo()
    report = warm_gpu.warm_gpu(paths, device="cpu", dtype="float32", max_free_bytes=needed)
    assert (report.needed_bytes, report.free_bytes) == (needed, needed)


@needs_torch
def test_gpu_path_never_opens_pickle_files(tmp_path, monkeypatch):
    make_model(tmp_path)
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_os_open(path, *a, **k))
    report = warm_gpu.warm_gpu(weight_files(tmp_path, safetensors_only=True), device="cpu")
    assert report.files == 2
    with pytest.raises(UnavailableError, match=r"^pytorch_model.bin is not a safetensors file: GPU warming loads only \*.safetensors \(pickle-based weights are never unpickled\)"):
        warm_gpu.warm_gpu(sorted(tmp_path.glob("*.safetensors")) + [tmp_path / "pytorch_model.bin"], device="cpu")
    assert [path for path in opened if path.endswith(".bin")] == []
    assert any(path.endswith(".safetensors") for path in opened)
    assert not marker.exists()


@needs_torch
@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-5], r"tensor 'i32' lies at \d+\.\.\d+, outside the \d+ data bytes"),
    (lambda data: struct.pack("<Q", 2**40) + data[8:], r"header length 1099511627776 in a file of"),
    (lambda data: data[:8] + b"x" + data[9:], r"header is not JSON"),
])
def test_damaged_safetensors_is_disk_error(tmp_path, damage, message):
    path = make_model(tmp_path)[1]
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DiskError, match=message) as caught:
        warm_gpu.warm_gpu([path], device="cpu")
    assert caught.value.exit_code == 74
    assert "preloader verify --repair" in str(caught.value)


def test_file_that_shrinks_while_read_is_disk_error(tmp_path, monkeypatch):
    path = make_model(tmp_path)[0]
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: 0)  # EOF: cut after the header was read
    with pytest.raises(DiskError, match=r"file ends at \d+ bytes, before its tensors do"):
        warm_gpu.warm_gpu([path], device="cpu", threads=2)


def test_header_that_lies_about_a_tensor_size_is_refused(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [("w", "F32", [3], bytes(8))])
    with pytest.raises(DiskError, match=r"tensor 'w' is 8 bytes, but F32\[3\] needs 12"):
        read_header(path)


@needs_torch
@pytest.mark.nocuda
def test_gpu_warm_without_cuda_is_unavailable(tmp_path):
    paths = make_model(tmp_path)
    with pytest.raises(UnavailableError, match=r"^--warm gpu asked for cuda:0 but CUDA is not available: ") as caught:
        warm_gpu.warm_gpu(paths, device="cuda:0")
    assert caught.value.exit_code == 69
    assert "use --warm page-cache" in str(caught.value)


@needs_torch
def test_gpu_warm_without_torch_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(UnavailableError, match=r"^GPU warming needs torch, which is not installed here: pip install 'hf-preloader\[warm\]'"):
        warm_gpu.warm_gpu(make_model(tmp_path), device="cuda:0")


# --- on a real GPU ------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [None, "bfloat16", "float32"])
def test_gpu_warm_matches_files_bit_for_bit(tmp_path, dtype):
    paths = make_model(tmp_path)
    devices = set()
    report, got = load_all(paths, device="cuda:0", dtype=dtype, threads=4, buffer_bytes=8192)
    warm_gpu.warm_gpu(paths, device="cuda:0", on_tensor=lambda name, tensor: devices.add(tensor.device.type))
    expected = expected_tensors(paths, dtype)
    assert [name for name in expected if not same_bits(got[name], expected[name])] == []
    assert (report.device, report.method, devices) == ("cuda:0", "pinned", {"cuda"})
    assert report.device_name == torch.cuda.get_device_name(0)


@pytest.mark.gpu
def test_gpu_warm_refuses_model_larger_than_free_memory(tmp_path):
    paths = make_model(tmp_path)
    with pytest.raises(UnavailableError, match=r"^the model does not fit on cuda:0 \(.*\): its tensors need \d+ bytes") as caught:
        warm_gpu.warm_gpu(paths, device="cuda:0", max_free_bytes=1000)
    assert caught.value.exit_code == 69


@pytest.mark.gpu
def test_gpu_warm_unknown_device_index(tmp_path):
    index = torch.cuda.device_count()
    with pytest.raises(UnavailableError, match=rf"^--warm gpu asked for cuda:{index} but this machine has {index} CUDA device"):
        warm_gpu.warm_gpu(make_model(tmp_path), device=f"cuda:{index}")


@pytest.mark.gpu
def test_gpu_warm_frees_device_memory(tmp_path):
    paths = make_model(tmp_path)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved(0)
    warm_gpu.warm_gpu(paths, device="cuda:0", dtype="float32")
    assert torch.cuda.memory_allocated(0) == 0
    assert torch.cuda.memory_reserved(0) <= before


@pytest.mark.gpu
def test_warm_snapshot_on_gpu_logs_device_and_rate(tmp_path, events):
    make_model(tmp_path)
    report = warm_snapshot(tmp_path, WarmMode.parse("gpu:0"), repo="org/m", dtype="bfloat16")
    done = dict(events)["warm.done"]
    assert (done["device"], done["gpu"], done["tensors"], done["dtype"]) == ("cuda:0", torch.cuda.get_device_name(0), 13, "bfloat16")
    assert done["bytes"] == report.bytes > 0 and done["rate"].endswith("GB/s")
