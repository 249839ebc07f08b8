"""PRELOADER_PICKLE=refuse: pickle-format weights, which run code when loaded, never reach the service.

By name before any download (the suffixes torch.save, pickle and joblib files carry). By content where the
bytes are at hand: before the download for files already in the cache, and before the hand-off for every
selected file, so that a pickle under another name (`weights.data`) is refused too. Content means a zip
holding a `.pkl` member (torch.save's format since torch 1.6: `archive/data.pkl`) or a pickle protocol
2-5 header (the legacy torch.save format starts with one). Pickle protocols 0 and 1 have no header: a file
of those under a name of its own is not recognised (docs/lockfile.md#pickle-policy says so).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import PickleRefusedError, listed

SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dill", ".pdparams")
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")


def by_name(path: str) -> bool:
    return path.lower().endswith(SUFFIXES)


def by_content(path: Path) -> str | None:
    """Why the file at `path` is a pickle ("zip holding data.pkl", "pickle protocol 4 header"), or None."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        return None
    if head[:4] in _ZIP:
        return _zip_pickle(path)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not _safetensors(head):
        return f"pickle protocol {head[1]} header"
    return None


def _zip_pickle(path: Path) -> str | None:
    import zipfile  # only for a file that starts like a zip

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    member = next((name for name in names if name.lower().endswith((".pkl", ".pickle"))), None)
    return f"zip holding {member}" if member else None


def _safetensors(head: bytes) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and then `{`: its first byte
    may be 0x80 like a pickle's."""
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100 * 2**20


def found(files: dict[str, Path | None]) -> list[str]:
    """`path (why)` for each pickle among `files` (path in the repo -> the bytes on disk, None when not here)."""
    hits = []
    for path in sorted(files):
        on_disk = files[path]
        why = "by name" if by_name(path) else (by_content(on_disk) if on_disk is not None else None)
        if why:
            hits.append(f"{path} ({why})")
    return hits


def refuse(spec, hits: list[str], when: str) -> None:
    if hits:
        raise PickleRefusedError(f"{spec} selects pickle-format weights and PRELOADER_PICKLE is refuse: "
                                 f"{listed(hits)}; {when}; exclude them (PRELOADER_EXCLUDE) or pick a revision with "
                                 "safetensors")
