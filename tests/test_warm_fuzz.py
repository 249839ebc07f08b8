"""Fuzzing the safetensors header reader and the GPU loader (on the CPU device) with hypothesis.

No generated file may end in anything but the loaded tensors, DiskError (74) or UnavailableError (69)
with one short line. CI runs a fixed seed and a few examples per test; to run it long:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_warm_fuzz.py      # 20,000 random examples per test
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preloader.errors import DiskError, UnavailableError
from preloader.warm.safetensors import STORED_DTYPES, read_header

torch = pytest.importorskip("torch")
from preloader.warm import gpu as warm_gpu  # noqa: E402

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
fuzzing = settings(max_examples=20_000 if LONG else 60, derandomize=not LONG, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
dtypes = st.sampled_from(sorted(STORED_DTYPES)) | st.sampled_from(["F128", "f32", "", "Q4_K"]) | json_values


@st.composite
def headers(draw):
    """A header of plausible entries (right sizes, packed or overlapping, offsets in or out of range), now and
    then junk in any place."""

    def rarely(value, junk=json_values):  # most values plausible, one in twenty junk
        return draw(junk) if draw(st.integers(0, 19)) == 0 else value

    entries, offset = {}, 0
    for index in range(draw(st.integers(0, 6))):
        dtype = rarely(draw(st.sampled_from(sorted(STORED_DTYPES))), dtypes)
        shape = rarely(draw(st.lists(st.integers(0, 5), max_size=3)))
        bits = STORED_DTYPES.get(dtype, (8, None))[0] if isinstance(dtype, str) else 8
        count = 1
        if isinstance(shape, list) and all(type(d) is int and 0 <= d <= 64 for d in shape):
            for d in shape:
                count *= d
        size = count * bits // 8 + rarely(0, st.sampled_from([1, -1]))
        begin = offset + draw(st.sampled_from([0, 0, 0, 1, 3])) + rarely(0, st.sampled_from([-2, -1]))
        offsets = rarely([begin, begin + size])
        entries[f"t{index}"] = rarely({"dtype": dtype, "shape": shape, "data_offsets": offsets})
        offset = max(offset, begin + max(size, 0))
    if draw(st.booleans()):
        entries["__metadata__"] = draw(json_values)
    text = json.dumps(entries).encode()
    if draw(st.booleans()):
        text += b" " * (-len(text) % 8)
    data = bytes(draw(st.integers(0, 64)) + offset)
    length = len(text) + rarely(0, st.sampled_from([5, -3, 2**40]))
    return struct.pack("<Q", max(length, 0)) + text + data


def outcome(raw: bytes, dtype) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.safetensors"
        path.write_bytes(raw)
        try:
            header = read_header(path)
        except (DiskError, UnavailableError) as error:
            assert "\n" not in str(error) and len(str(error)) < 400 + len(str(path)), str(error)
            return
        covered = 0
        for entry in header.tensors:
            assert covered <= entry.begin <= entry.end <= header.data_bytes
            covered = entry.end
        got = {}
        report = warm_gpu.warm_gpu([path], device="cpu", dtype=dtype, threads=2, buffer_bytes=16,
                                   on_tensor=lambda name, tensor: got.__setitem__(name, tensor.clone()))
        assert report.tensors == len(header.tensors) == len(got)
        for entry in header.tensors:  # what was not cast holds the file's bytes
            if not entry.casts_to(dtype):
                tensor = got[entry.name].contiguous().view(-1)
                loaded = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
                assert loaded == raw[header.data_start + entry.begin : header.data_start + entry.end], entry


@fuzzing
@given(raw=headers(), dtype=st.sampled_from([None, "float16", "bfloat16", "float32"]))
def test_generated_headers_load_or_are_one_line_errors(raw, dtype):
    outcome(raw, dtype)


@fuzzing
@given(raw=st.binary(max_size=64))
def test_random_bytes_are_one_line_errors(raw):
    outcome(raw, None)


def test_deeply_nested_header_is_damaged(tmp_path):
    text = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(DiskError, match=r"header is nested too deeply"):
        read_header(path)


@pytest.mark.parametrize("info, message", [
    ({"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}, r"tensor 't' has dtype \['F32'\]\)"),
    ({"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}, r"tensor 't' has shape \[True\]\)"),
    ({"dtype": "F32", "shape": [2] * 500, "data_offsets": [0, 4]}, r"is 4 bytes, but F32\[2, 2, [2, ]*\.\.\. needs \d+\.\.\.\)"),
    ({"dtype": "U8", "shape": [10**30], "data_offsets": [0, 4]}, r"but U8\[1000000000000000000000000000000\] needs 1000"),
])
def test_hostile_descriptions_are_short_one_line_errors(tmp_path, info, message):
    text = json.dumps({"t": info}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    with pytest.raises(DiskError, match=message) as caught:
        read_header(path)
    assert len(str(caught.value)) < 300 + len(str(path))
