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

# Every safetensors dtype -> (bits per element, torch dtype name or None where torch has no such
# dtype). Sub-byte types (F4, F6_*) are packed: a tensor of them stays a byte slice on the device,
# as does one whose dtype this torch lacks (checked at load time, before the free-memory check).
STORED_DTYPES: dict[str, tuple[int, str | None]] = {
    "BOOL": (8, "bool"), "U8": (8, "uint8"), "I8": (8, "int8"),
    "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None),
    "F8_E4M3": (8, "float8_e4m3fn"), "F8_E5M2": (8, "float8_e5m2"), "F8_E8M0": (8, "float8_e8m0fnu"),
    "F8_E4M3FNUZ": (8, "float8_e4m3fnuz"), "F8_E5M2FNUZ": (8, "float8_e5m2fnuz"),
    "I16": (16, "int16"), "U16": (16, "uint16"), "F16": (16, "float16"), "BF16": (16, "bfloat16"),
    "I32": (32, "int32"), "U32": (32, "uint32"), "F32": (32, "float32"),
    "I64": (64, "int64"), "U64": (64, "uint64"), "F64": (64, "float64"), "C64": (64, "complex64"),
}
# What --dtype casts: the usual weight dtypes. Integers, float8, complex and packed types stay as stored.
CASTABLE = {"F16", "BF16", "F32", "F64"}
# Bytes per element of each --dtype.
TARGET_SIZES = {name: bits // 8 for bits, name in STORED_DTYPES.values() if name in DTYPES}

MiB = 2**20
# Where tensors start in a file's output buffer (see `SafetensorsHeader.layout`): every element size divides it.
ALIGN = 64
# Device memory the check keeps free beyond what the tensors need: a guard against rounding we do not model.
MARGIN = 64 * MiB


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets in the data section, which starts after the header
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def misaligned(self) -> bool:
        """True when the tensor cannot be viewed in place: its start is not a multiple of its element size."""
        bits = STORED_DTYPES[self.dtype][0]
        return self.nbytes > 0 and bits > 8 and self.begin % (bits // 8) != 0

    def casts_to(self, dtype: Dtype | None) -> bool:
        return dtype is not None and self.dtype in CASTABLE and STORED_DTYPES[self.dtype][1] != dtype

    def size_as(self, dtype: Dtype | None) -> int:
        return prod(self.shape) * TARGET_SIZES[dtype] if self.casts_to(dtype) else self.nbytes


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    data_start: int
    data_bytes: int  # the part of the data section the tensors cover
    tensors: tuple[TensorEntry, ...]

    def casts(self, dtype: Dtype | None) -> bool:
        return any(entry.casts_to(dtype) for entry in self.tensors)

    def relaid(self, dtype: Dtype | None) -> bool:
        """Whether the tensors go into an output buffer of their own, off the raw copy of the data section:
        when one casts, or when one starts where it cannot be viewed as its dtype."""
        return any(entry.casts_to(dtype) or entry.misaligned for entry in self.tensors)

    def layout(self, dtype: Dtype | None) -> tuple[list[int], int]:
        """Where each tensor (in `tensors` order) starts in the output buffer, and the buffer's size.

        Every tensor starts at a multiple of ALIGN, as it is after casting to `dtype`.
        """
        offsets, size = [], 0
        for entry in self.tensors:
            size = -(-size // ALIGN) * ALIGN
            offsets.append(size)
            size += entry.size_as(dtype)
        return offsets, size

    def staging_bytes(self, dtype: Dtype | None) -> int:
        """The largest misaligned tensor that casts: it is cloned to an aligned place for the cast."""
        return max((e.nbytes for e in self.tensors if e.casts_to(dtype) and e.misaligned), default=0)


def damaged(path: Path, why: str) -> DiskError:
    return DiskError(
        f"{path}: not a valid safetensors file ({why}); `preloader verify --repair` re-fetches damaged files"
    )


def _shown(value: object, limit: int = 60) -> str:
    """A header value for a message: its repr, cut short (a hostile header can hold megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _whole(value: object) -> bool:
    return type(value) is int  # not bool, which JSON `true` gives


def _entry(path: Path, name: str, info: object, data_len: int) -> TensorEntry:
    if not isinstance(info, dict):
        raise damaged(path, f"tensor {_shown(name)} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise damaged(path, f"tensor {_shown(name)} has dtype {_shown(dtype)}")
    if dtype not in STORED_DTYPES:
        raise UnavailableError(
            f"{path}: tensor {_shown(name)} has dtype {_shown(dtype)}, which GPU warming does not support; "
            "use --warm page-cache for this repo"
        )
    if not (isinstance(shape, list) and all(_whole(d) and d >= 0 for d in shape)):
        raise damaged(path, f"tensor {_shown(name)} has shape {_shown(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)):
        raise damaged(path, f"tensor {_shown(name)} has data_offsets {_shown(offsets)}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise damaged(path, f"tensor {_shown(name)} lies at {begin}..{end}, outside the {data_len} data bytes")
    bits = prod(shape) * STORED_DTYPES[dtype][0]
    described = f"{dtype}{_shown(shape)}"
    if bits % 8:
        raise damaged(path, f"tensor {_shown(name)} is {described}: {bits} bits, not a whole number of bytes")
    if end - begin != bits // 8:
        raise damaged(path, f"tensor {_shown(name)} is {end - begin} bytes, but {described} needs "
                            f"{_shown(bits // 8, 30)}")
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
    except RecursionError as error:  # a header of nothing but nested brackets
        raise damaged(path, "header is nested too deeply") from error
    if not isinstance(header, dict):
        raise damaged(path, "header is not a JSON object")
    data_start = 8 + length
    entries = sorted(
        (_entry(path, name, info, size - data_start) for name, info in header.items() if name != "__metadata__"),
        key=lambda entry: (entry.begin, entry.end),
    )
    for before, after in zip(entries, entries[1:], strict=False):
        if after.begin < before.end:
            raise damaged(path, f"tensors {_shown(before.name)} and {_shown(after.name)} overlap")
    data_bytes = max((entry.end for entry in entries), default=0)
    return SafetensorsHeader(path, data_start, data_bytes, tuple(entries))


def allocated(count: int) -> int:
    """Device bytes that one allocation of `count` bytes takes from the device.

    PyTorch's CUDA caching allocator takes memory in segments: up to 1 MiB from a 2 MiB segment,
    up to 10 MiB from a 20 MiB one, larger sizes rounded up to 2 MiB. Counted alone, each
    allocation is at most its own segment, so the sum of these is a bound on what is taken.
    """
    if count <= 0:
        return 0
    if count <= MiB:
        return 2 * MiB
    if count < 10 * MiB:
        return 20 * MiB
    return -(-count // (2 * MiB)) * (2 * MiB)


def needed_bytes(headers: Sequence[SafetensorsHeader], dtype: Dtype | None = None) -> int:
    """Peak device bytes to load every tensor (cast to `dtype`) and hold them all, with MARGIN to spare.

    The loader allocates one raw buffer per file and copies its data section into it. Files whose
    tensors can stay where they are (views of the raw buffer) are loaded first, all at once. Then,
    one at a time, each file that casts (or holds a misaligned tensor) is loaded raw, its tensors
    copied or cast into one output buffer, and the raw buffer freed: at that moment the raw buffer,
    the output buffer and the clone of one misaligned cast tensor are all on the device.
    """
    held = peak = 0
    for header in headers:
        if not header.relaid(dtype):
            held += allocated(header.data_bytes)
    peak = held
    for header in headers:
        if header.relaid(dtype):
            out = allocated(header.layout(dtype)[1])
            peak = max(peak, held + allocated(header.data_bytes) + out + allocated(header.staging_bytes(dtype)))
            held += out
    return peak + MARGIN if peak else 0
