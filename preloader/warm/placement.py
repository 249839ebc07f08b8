"""Tensors on the device from a file's bytes there: views of its raw copy, or cast into an output buffer.

Also the check of every loaded tensor against what the safetensors header says of it.
"""

from __future__ import annotations

from ..errors import PreloaderError
from .mode import Dtype
from .safetensors import STORED_DTYPES, SafetensorsHeader, TensorEntry


def device_dtype(torch, entry: TensorEntry, dtype: Dtype | None):
    """The torch dtype of `entry` on the device: the cast target, the stored dtype, or None where this
    torch has no such dtype or it is packed below a byte (the tensor then stays a byte slice)."""
    name = dtype if entry.casts_to(dtype) else STORED_DTYPES[entry.dtype][1]
    found = getattr(torch, name, None) if name else None
    return found if isinstance(found, torch.dtype) else None


def shaped(torch, piece, dtype, shape: tuple[int, ...]):
    """The bytes `piece` as a tensor of `dtype` and `shape`; a flat byte slice when `dtype` is None."""
    if dtype is None:
        return piece
    if piece.numel() == 0:  # no bytes to view, wherever they would start
        return torch.empty(shape, dtype=dtype, device=piece.device)
    return piece.view(dtype).reshape(shape)


def views(torch, header: SafetensorsHeader, dtypes, raw) -> list:
    """(entry, tensor) for a file whose tensors stay in its raw copy: views of it."""
    return [(entry, shaped(torch, raw[entry.begin : entry.end], kind, entry.shape))
            for entry, kind in zip(header.tensors, dtypes, strict=True)]


def relay(torch, header: SafetensorsHeader, dtypes, raw, out, dtype: Dtype | None, allocate) -> list:
    """(entry, tensor) for a file that casts: each tensor cast or copied into its place in `out`.

    `allocate(count)` gives the byte tensor that a misaligned tensor is cloned into for its cast.
    """
    placed = []
    for entry, kind, offset in zip(header.tensors, dtypes, header.layout(dtype)[0], strict=True):
        place = out[offset : offset + entry.size_as(dtype)]
        source = raw[entry.begin : entry.end]
        if entry.casts_to(dtype):
            if entry.misaligned:  # cloned to an aligned start to view it from, freed after the cast
                source = allocate(entry.nbytes).copy_(source)
            stored = getattr(torch, STORED_DTYPES[entry.dtype][1])
            shaped(torch, place, kind, entry.shape).copy_(shaped(torch, source, stored, entry.shape))
        else:
            place.copy_(source)
        placed.append((entry, shaped(torch, place, kind, entry.shape)))
    return placed


def check(torch, header: SafetensorsHeader, placed, buffer, dtype: Dtype | None) -> None:
    """Each loaded tensor against what the header says of it: dtype, shape, size, and a place of its own
    inside `buffer`. A mismatch is a bug here, not damage: the header was checked against the file."""
    spans = []
    for entry, tensor in placed:
        want = device_dtype(torch, entry, dtype)
        shape = entry.shape if want is not None else (entry.size_as(dtype),)
        size = tensor.numel() * tensor.element_size()
        if (tensor.dtype, tuple(tensor.shape), size) != (want or torch.uint8, shape, entry.size_as(dtype)):
            cast = f" cast to {dtype}" if entry.casts_to(dtype) else ""
            raise PreloaderError(
                f"{header.path}: tensor {entry.name!r} loaded as {tensor.dtype}{list(tensor.shape)} ({size} bytes), "
                f"but the header says {entry.dtype}{list(entry.shape)}{cast}: a bug in preloader"
            )
        if size:
            start = tensor.data_ptr() - buffer.data_ptr()
            if not tensor.is_contiguous() or not 0 <= start <= buffer.numel() - size:
                raise PreloaderError(f"{header.path}: tensor {entry.name!r} lies outside its buffer: "
                                     "a bug in preloader")
            spans.append((start, start + size, entry.name))
    spans.sort()
    for (_, end, before), (start, _, after) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise PreloaderError(f"{header.path}: tensors {before!r} and {after!r} overlap: a bug in preloader")
