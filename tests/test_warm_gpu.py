"""GPU warming's promises, on the CPU device: what is allocated is what the fit check counts, an error
mid-load leaves no copy running and no device tensor held, no host buffer is refilled before its copy
has finished, every safetensors dtype loads, and the check of each tensor against its header can fail."""

from __future__ import annotations

import os
import types
import weakref

import pytest
from test_warm import expected_tensors, load_all, make_model, same_bits, write_safetensors

from preloader.errors import DiskError, PreloaderError, UnavailableError
from preloader.warm import copier as warm_copier
from preloader.warm import gpu as warm_gpu
from preloader.warm import placement
from preloader.warm.safetensors import MARGIN, STORED_DTYPES, SafetensorsHeader, allocated, needed_bytes, read_header

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


# --- seams -----------------------------------------------------------------------------------------

class Allocations:
    """Every device buffer the loader allocates, with the bytes live at the peak (as the allocator counts)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.buffers: list[weakref.ref] = []
        self.sizes: list[int] = []
        self.live = self.peak = 0
        self.fail_at = fail_at

    def __call__(self, torch_, target, count):
        if self.fail_at is not None and len(self.sizes) + 1 == self.fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        buffer = torch.empty(count, dtype=torch.uint8, device=target)
        self.sizes.append(count)
        self.buffers.append(weakref.ref(buffer))
        self.live += allocated(count)
        self.peak = max(self.peak, self.live)
        weakref.finalize(buffer, self._freed, allocated(count))
        return buffer

    def _freed(self, size: int) -> None:
        self.live -= size

    def alive(self) -> list[int]:
        return [size for size, ref in zip(self.sizes, self.buffers, strict=True) if ref() is not None]


class LateCopier:
    """Copies that finish only when the reader waits for their buffer, or drains: as late as CUDA may.

    At submit it notes the source bytes; when the copy finally runs it checks they are unchanged,
    so a buffer refilled while its copy was pending is caught (and the late copy takes the wrong bytes).
    """

    def __init__(self, *args, honest: bool = True) -> None:
        self.pending: dict[int, tuple] = {}
        self.honest = honest
        self.refilled: list[int] = []
        self.drained = False
        self.pending_at_drain = 0

    def submit(self, turn, source, target) -> None:
        self._finish(turn)  # a second copy from a buffer: the first one goes now, whatever the buffer holds
        self.pending[turn] = (source, target, bytes(source.numpy()))

    def wait(self, turn) -> None:
        if self.honest:
            self._finish(turn)

    def drain(self) -> None:
        self.pending_at_drain = max(self.pending_at_drain, len(self.pending))
        for turn in list(self.pending):
            self._finish(turn)
        self.drained = True

    def _finish(self, turn) -> None:
        if turn in self.pending:
            source, target, noted = self.pending.pop(turn)
            if bytes(source.numpy()) != noted:
                self.refilled.append(turn)
            target.copy_(source)


@pytest.fixture
def copiers(monkeypatch):
    made: list[LateCopier] = []

    def install(honest: bool = True) -> list[LateCopier]:
        def make(*args):
            made.append(LateCopier(*args, honest=honest))
            return made[-1]

        monkeypatch.setattr(warm_gpu, "make_copier", make)
        return made

    return install


# --- what is allocated is what the check counts -------------------------------------------------------

@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16", "float32"])
def test_allocations_are_what_the_fit_check_counts(tmp_path, monkeypatch, dtype):
    paths = make_model(tmp_path)  # the second file has a float32 tensor at an odd offset
    allocations = Allocations()
    monkeypatch.setattr(warm_gpu, "_allocate", allocations)
    shared: list[bool] = []

    def seen(name, tensor):
        if tensor.numel():
            shared.append(tensor.untyped_storage().data_ptr() in {ref().data_ptr() for ref in allocations.buffers if ref() is not None})

    report = warm_gpu.warm_gpu(paths, device="cpu", dtype=dtype, threads=2, buffer_bytes=4096, on_tensor=seen)
    assert report.needed_bytes == needed_bytes([read_header(p) for p in paths], dtype)
    assert allocations.peak + MARGIN == report.needed_bytes  # the count matches the allocations at their peak
    # No tensor is an allocation of its own (no per-tensor cast, no alignment clone kept): all are in the buffers.
    assert shared and all(shared)
    headers = [read_header(p) for p in paths]
    relaid = [h for h in headers if h.relaid(dtype)]
    staged = sum(1 for h in relaid for e in h.tensors if e.casts_to(dtype) and e.misaligned)
    assert len(allocations.sizes) == len(headers) + len(relaid) + staged
    assert allocations.alive() == []


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_out_of_memory_while_loading_is_69_and_the_error_holds_no_buffer(tmp_path, monkeypatch, fail_at):
    paths = make_model(tmp_path)
    allocations = Allocations(fail_at=fail_at)
    monkeypatch.setattr(warm_gpu, "_allocate", allocations)
    with pytest.raises(UnavailableError) as caught:
        warm_gpu.warm_gpu(paths, device="cpu", dtype="float32", threads=2, buffer_bytes=4096)
    needed = needed_bytes([read_header(p) for p in paths], "float32")
    assert caught.value.exit_code == 69
    assert str(caught.value).startswith("out of memory on cpu (cpu) while loading the model as float32, although ")
    assert f"were free for the {needed} bytes it needs: another process took memory meanwhile; free the device" in str(caught.value)
    assert "\n" not in str(caught.value)
    # A library caller keeps the error (and its traceback): no device buffer stays allocated through it.
    assert allocations.alive() == []


def test_other_errors_are_not_called_out_of_memory(tmp_path, monkeypatch):
    def broken(torch_, target, count):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(warm_gpu, "_allocate", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        warm_gpu.warm_gpu(make_model(tmp_path), device="cpu")


def test_a_read_error_mid_load_drains_every_copy_and_drops_every_buffer(tmp_path, monkeypatch, copiers):
    paths = make_model(tmp_path)
    made = copiers()
    allocations = Allocations()
    monkeypatch.setattr(warm_gpu, "_allocate", allocations)
    header = read_header(paths[0])
    real = os.preadv

    def cut(fd, buffers, offset):  # the second chunk of the first file's first piece: one copy is pending
        return 0 if offset == header.data_start + 4096 else real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", cut)
    with pytest.raises(DiskError, match=r"file ends at \d+ bytes, before its tensors do") as caught:
        warm_gpu.warm_gpu(paths, device="cpu", threads=3, buffer_bytes=4096)
    assert caught.value.exit_code == 74
    assert made and all(copier.drained and not copier.pending for copier in made)
    assert max(copier.pending_at_drain for copier in made) >= 1  # the drain had copies to finish
    assert allocations.alive() == []


# --- the copy seam ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_no_buffer_is_refilled_before_its_copy_finishes(tmp_path, copiers, dtype):
    paths = make_model(tmp_path)
    made = copiers()
    report, got = load_all(paths, device="cpu", dtype=dtype, threads=2, buffer_bytes=4096)
    expected = expected_tensors(paths, dtype)
    assert [name for name in expected if not same_bits(got[name], expected[name])] == []
    assert report.tensors == 13
    assert made and [copier.refilled for copier in made] == [[] for _ in made]
    assert all(copier.drained and not copier.pending for copier in made)


def test_late_copies_catch_a_reader_that_does_not_wait(tmp_path, copiers):
    """The check above can fail: copies that the reader never waits for are refilled under them."""
    paths = make_model(tmp_path)
    made = copiers(honest=False)
    _, got = load_all(paths, device="cpu", threads=1, buffer_bytes=4096)
    assert any(copier.refilled for copier in made)
    expected = expected_tensors(paths, None)
    assert [name for name in expected if not same_bits(got[name], expected[name])] != []


def test_threads_default_to_the_cpus_this_process_may_use(tmp_path, monkeypatch, copiers):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert warm_gpu.default_threads() == 3
    made = copiers()
    path = make_model(tmp_path)[0]  # read in place: one pass over it, one copier per reader thread
    warm_gpu.warm_gpu([path], device="cpu", buffer_bytes=4096)
    assert len(made) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(40)))
    assert warm_gpu.default_threads() == warm_gpu.MAX_GPU_THREADS == 16


class Recorder:
    """A stand-in for torch's CUDA API that logs the calls the CUDA copier makes."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        recorder = self

        class Stream:
            def __init__(self, device):
                recorder.calls.append(("stream", device))

            def wait_stream(self, other):
                recorder.calls.append(("wait_stream", other))

            def synchronize(self):
                recorder.calls.append(("stream.synchronize",))

        class Event:
            count = 0

            def __init__(self, blocking):
                assert blocking
                self.index = Event.count
                Event.count += 1

            def record(self, stream):
                recorder.calls.append(("record", self.index))

            def synchronize(self):
                recorder.calls.append(("event.synchronize", self.index))

        class StreamContext:
            def __init__(self, stream):
                self.stream = stream

            def __enter__(self):
                recorder.calls.append(("enter",))

            def __exit__(self, *exc):
                recorder.calls.append(("exit",))

        self.cuda = types.SimpleNamespace(Stream=Stream, Event=Event, stream=StreamContext)

    def target(self, name):
        recorder = self

        class Target:
            def copy_(self, source, non_blocking=False):
                recorder.calls.append(("copy", name, source, non_blocking))

        return Target()


def test_cuda_copier_orders_after_the_callers_stream_and_waits_per_buffer():
    fake = Recorder()
    copier = warm_copier.make_copier(fake, types.SimpleNamespace(type="cuda"), "caller-stream")
    assert isinstance(copier, warm_copier.CudaCopier)
    copier.wait(0)  # nothing pending yet: no wait
    copier.submit(0, "buffer0", fake.target("a"))
    copier.submit(1, "buffer1", fake.target("b"))
    copier.wait(0)
    copier.wait(0)  # already waited for
    copier.drain()
    assert [call[0] for call in fake.calls[:1]] == ["stream"]
    assert fake.calls[1] == ("wait_stream", "caller-stream")  # before any copy
    assert fake.calls[2:] == [
        ("enter",), ("copy", "a", "buffer0", True), ("exit",), ("record", 0),
        ("enter",), ("copy", "b", "buffer1", True), ("exit",), ("record", 1),
        ("event.synchronize", 0),
        ("stream.synchronize",),
    ]
    assert copier.pending == [False, False]
    assert isinstance(warm_copier.make_copier(fake, types.SimpleNamespace(type="cpu"), None), warm_copier.SyncCopier)


@pytest.mark.parametrize("present, called", [
    ({"accelerator": "empty_host_cache", "_C": "_host_emptyCache"}, ["accelerator"]),
    ({"_C": "_host_emptyCache"}, ["_C"]),
    ({}, []),
])
def test_pinned_host_cache_is_emptied_with_whatever_this_torch_has(present, called):
    calls: list[str] = []
    fake = types.SimpleNamespace(_C=types.SimpleNamespace())
    for module, name in present.items():
        if module == "accelerator":
            fake.accelerator = types.SimpleNamespace()
        setattr(getattr(fake, module), name, lambda module=module: calls.append(module))
    warm_gpu._release_pinned(fake)
    assert calls == called

    def refuse():
        raise RuntimeError("Cannot access accelerator device when none is available.")

    warm_gpu._release_pinned(types.SimpleNamespace(accelerator=types.SimpleNamespace(empty_host_cache=refuse), _C=None))


# --- every dtype ----------------------------------------------------------------------------------------

def every_dtype_file(path):
    """One tensor of every safetensors dtype, packed back to back (most at offsets their dtype cannot view)."""
    tensors = []
    for index, (name, (bits, _)) in enumerate(sorted(STORED_DTYPES.items())):
        count = 8 + index  # a whole number of bytes for the 4- and 6-bit types too
        count += -count % 4
        payload = bytes((index * 37 + i * 11) % 251 for i in range(count * bits // 8))
        if name == "BOOL":
            payload = bytes(b & 1 for b in payload)
        tensors.append((f"t_{name}", name, [count // 4, 4], payload))
    return write_safetensors(path, tensors), tensors


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_every_safetensors_dtype_loads(tmp_path, dtype):
    path, tensors = every_dtype_file(tmp_path / "all.safetensors")
    _, got = load_all([path], device="cpu", dtype=dtype, threads=2, buffer_bytes=64)
    assert sorted(got) == sorted(f"t_{name}" for name in STORED_DTYPES)
    for name, kind, shape, payload in tensors:
        tensor = got[name]
        torch_name = STORED_DTYPES[kind][1]
        if torch_name is None:  # packed below a byte: the bytes, as stored
            assert (tensor.dtype, tensor.shape, bytes(tensor.numpy())) == (torch.uint8, (len(payload),), payload)
            continue
        stored = torch.frombuffer(bytearray(payload), dtype=getattr(torch, torch_name)).reshape(shape)
        if kind in ("F32", "F64", "BF16") and dtype == "float16":
            stored = stored.to(torch.float16)
        assert same_bits(tensor, stored), name


def test_a_dtype_this_torch_lacks_stays_bytes(tmp_path, monkeypatch):
    payload = bytes([127, 128, 1, 254])
    path = write_safetensors(tmp_path / "m.safetensors", [("scale", "F8_E8M0", [2, 2], payload)])
    monkeypatch.delattr(torch, "float8_e8m0fnu")
    _, got = load_all([path], device="cpu")
    assert (got["scale"].dtype, got["scale"].shape, bytes(got["scale"].numpy())) == (torch.uint8, (4,), payload)


def test_every_torch_dtype_is_resolved_before_the_fit_check(tmp_path, monkeypatch):
    paths = make_model(tmp_path)
    entries = sum(len(read_header(p).tensors) for p in paths)
    resolved: list[str] = []
    real = placement.device_dtype
    monkeypatch.setattr(placement, "device_dtype", lambda torch_, entry, dtype: resolved.append(entry.name) or real(torch_, entry, dtype))
    monkeypatch.setattr(warm_gpu, "_allocate", lambda *args: pytest.fail("allocated after a failed check"))
    with pytest.raises(UnavailableError, match=r"^the model does not fit on cpu"):
        warm_gpu.warm_gpu(paths, device="cpu", dtype="float16", max_free_bytes=1)
    assert len(resolved) == entries == 13


def test_sub_byte_tensor_of_a_fractional_size_is_damaged(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", [("w", "F4", [3], bytes(2))])
    with pytest.raises(DiskError, match=r"tensor 'w' is F4\[3\]: 12 bits, not a whole number of bytes") as caught:
        read_header(path)
    assert caught.value.exit_code == 74


# --- the check against the header can fail -------------------------------------------------------------------

def test_a_tensor_that_disagrees_with_its_header_is_caught(tmp_path, monkeypatch):
    paths = make_model(tmp_path)
    real = placement.views

    def flattened(torch_, header, dtypes, raw):
        return [(entry, tensor.reshape(-1) if entry.name == "embed" else tensor)
                for entry, tensor in real(torch_, header, dtypes, raw)]

    monkeypatch.setattr(placement, "views", flattened)
    with pytest.raises(PreloaderError) as caught:
        warm_gpu.warm_gpu(paths, device="cpu")
    assert str(caught.value) == (f"{paths[0]}: tensor 'embed' loaded as torch.float32[77100] (308400 bytes), "
                                 "but the header says F32[300, 257]: a bug in preloader")
    assert caught.value.exit_code == 70


def test_tensors_placed_over_each_other_are_caught(tmp_path, monkeypatch):
    paths = make_model(tmp_path)
    real = SafetensorsHeader.layout
    monkeypatch.setattr(SafetensorsHeader, "layout", lambda self, dtype: ([0] * len(self.tensors), real(self, dtype)[1]))
    with pytest.raises(PreloaderError, match=r": tensors '\w+' and '\w+' overlap: a bug in preloader$"):
        warm_gpu.warm_gpu(paths, device="cpu", dtype="float16")


# --- on a real GPU ----------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_out_of_memory_after_the_check_is_69_and_frees_everything(tmp_path):
    paths = make_model(tmp_path)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(1e-6, 0)  # mem_get_info still says free: the check passes
    try:
        with pytest.raises(UnavailableError, match=r"^out of memory on cuda:0 \(.*\) while loading the model") as caught:
            warm_gpu.warm_gpu(paths, device="cuda:0", dtype="float32")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    assert caught.value.exit_code == 69
    assert torch.cuda.memory_allocated(0) == 0


@pytest.mark.gpu
def test_gpu_copies_follow_the_callers_stream_and_pinned_memory_is_given_back(tmp_path, monkeypatch):
    paths = make_model(tmp_path)
    seen = []
    real = warm_copier.make_copier
    monkeypatch.setattr(warm_gpu, "make_copier", lambda torch_, device, after: seen.append(after) or real(torch_, device, after))
    side = torch.cuda.Stream(0)
    with torch.cuda.stream(side):
        report, got = load_all(paths, device="cuda:0", dtype="bfloat16", threads=2, buffer_bytes=4096)
    assert seen and all(after == side for after in seen)
    expected = expected_tensors(paths, "bfloat16")
    assert [name for name in expected if not same_bits(got[name], expected[name])] == []
    assert torch.cuda.host_memory_stats().get("allocated_bytes.current", 0) == 0


@pytest.mark.gpu
def test_gpu_loads_every_safetensors_dtype(tmp_path):
    path, tensors = every_dtype_file(tmp_path / "all.safetensors")
    _, got = load_all([path], device="cuda:0", threads=2, buffer_bytes=64)
    for name, _kind, _shape, payload in tensors:
        assert got[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes() == payload, name
