"""safetensors headers, read and checked without torch: what a file holds, and the device memory it needs.

Only the header is read (a u64 length, then JSON), so the free-memory check happens before any
tensor byte is loaded. Pickle-based weights are never opened here, let alone unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

from ..errors import DiskError, UnavailableError
from .mode import DTYPES, Dtype

SAFETENSORS_SUFFIX = ".safetensors"
MAX_HEADER = 100 * 2**20  # safetensors refuses larger headers too

# safetensors dtype -> (bytes per element, torch dtype name)
STORED_DTYPES = {
    "BOOL": (1, "bool"), "U8": (1, "uint8"), "I8": (1, "int8"),
    "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"),
    "I16": (2, "int16"), "U16": (2, "uint16"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "I32": (4, "int32"), "U32": (4, "uint32"), "F32": (4, "float32"),
    "I64": (8, "int64"), "U64": (8, "uint64"), "F64": (8, "float64"),
}
# What --dtype casts: the usual weight dtypes. Integers and float8 (quantized weights) stay as stored.
CASTABLE = {"F16", "BF16", "F32", "F64"}
# Bytes per element of each --dtype.
TARGET_SIZES = {name: size for size, name in STORED_DTYPES.values() if name in DTYPES}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets in the data section, which starts after the header
    end: int

    def casts_to(self, dtype: Dtype | None) -> bool:
        return dtype is not None and self.dtype in CASTABLE and STORED_DTYPES[self.dtype][1] != dtype

    def size_as(self, dtype: Dtype | None) -> int:
        return prod(self.shape) * TARGET_SIZES[dtype] if self.casts_to(dtype) else self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    data_start: int
    data_bytes: int  # the part of the data section the tensors cover
    tensors: tuple[TensorEntry, ...]

    def casts(self, dtype: Dtype | None) -> bool:
        return any(entry.casts_to(dtype) for entry in self.tensors)


def damaged(path: Path, why: str) -> DiskError:
    return DiskError(
        f"{path}: not a valid safetensors file ({why}); `preloader verify --repair` re-fetches damaged files"
    )


def _entry(path: Path, name: str, info: object, data_len: int) -> TensorEntry:
    if not isinstance(info, dict):
        raise damaged(path, f"tensor {name!r} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in STORED_DTYPES:
        raise UnavailableError(f"{path}: tensor {name!r} has dtype {dtype!r}, which GPU warming does not support")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise damaged(path, f"tensor {name!r} has shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise damaged(path, f"tensor {name!r} has data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise damaged(path, f"tensor {name!r} lies at {begin}..{end}, outside the {data_len} data bytes")
    expected = prod(shape) * STORED_DTYPES[dtype][0]
    if end - begin != expected:
        raise damaged(path, f"tensor {name!r} is {end - begin} bytes, but {dtype}{shape} needs {expected}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def refuse_other_formats(path: Path) -> None:
    # By name, before opening: a pickle file is never even opened here.
    if not path.name.lower().endswith(SAFETENSORS_SUFFIX):
        raise UnavailableError(
            f"{path.name} is not a safetensors file: GPU warming loads only *.safetensors "
            "(pickle-based weights are never unpickled); use --warm page-cache for it"
        )


def read_header(path: Path) -> SafetensorsHeader:
    """Parse a safetensors header (u64 little-endian length, then JSON) and check it against the file."""
    path = Path(path)
    refuse_other_formats(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            if len(prefix) < 8:
                raise damaged(path, f"{size} bytes, shorter than a header")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER or 8 + length > size:
                raise damaged(path, f"header length {length} in a file of {size} bytes")
            raw = file.read(length)
    except OSError as error:
        raise DiskError(f"cannot read {path}: {error.strerror}") from error
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged(path, f"header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise damaged(path, "header is not a JSON object")
    data_start = 8 + length
    entries = sorted(
        (_entry(path, name, info, size - data_start) for name, info in header.items() if name != "__metadata__"),
        key=lambda entry: (entry.begin, entry.end),
    )
    for before, after in zip(entries, entries[1:], strict=False):
        if after.begin < before.end:
            raise damaged(path, f"tensors {before.name!r} and {after.name!r} overlap")
    data_bytes = max((entry.end for entry in entries), default=0)
    return SafetensorsHeader(path, data_start, data_bytes, tuple(entries))


def allocated(count: int) -> int:
    # PyTorch's CUDA caching allocator rounds sizes up: 512 bytes, 2 MiB blocks above 10 MiB.
    step = 2 * 2**20 if count > 10 * 2**20 else 512
    return -(-count // step) * step


def needed_bytes(headers: Sequence[SafetensorsHeader], dtype: Dtype | None = None) -> int:
    """Peak device bytes to hold every tensor after casting to `dtype`.

    A file that casts is loaded raw, cast tensor by tensor, and its raw copy freed: its raw
    bytes count once more at that moment. The other files' tensors are views of their raw copy.
    """
    held = peak = 0
    for header in headers:
        if header.casts(dtype):
            final = sum(allocated(entry.size_as(dtype)) for entry in header.tensors)
            peak = max(peak, held + allocated(header.data_bytes) + final)
        else:
            final = allocated(header.data_bytes)
            peak = max(peak, held + final)
        held += final
    return peak
