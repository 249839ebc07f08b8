"""Keeping a file's pages resident in RAM (mlock) while this process lives: a sidecar that holds the weights."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
from collections.abc import Iterable
from pathlib import Path

from ..errors import DiskError, UnavailableError
from ..units import human_size

_PROT_READ, _MAP_SHARED = 1, 1
# mlocked mappings, kept for the life of the process: the pages stay resident until exit or exec.
_locked: list[tuple[int, int]] = []


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    for name in ("munmap", "mlock", "munlock"):
        getattr(libc, name).argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _memlock_limit(needed: int) -> int:
    """The soft RLIMIT_MEMLOCK after raising it towards `needed` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and soft < needed + locked_bytes():
        target = hard if hard == resource.RLIM_INFINITY else min(hard, needed + locked_bytes())
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _lock_refused(needed: int, err: int, path: Path) -> UnavailableError:
    limit = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    shown = "unlimited" if limit == resource.RLIM_INFINITY else f"{human_size(limit)} (ulimit -l {limit // 1024})"
    return UnavailableError(
        f"cannot lock the weights in RAM: mlock of {path.name} failed ({os.strerror(err)}); "
        f"{needed} bytes ({human_size(needed)}) needed, RLIMIT_MEMLOCK is {shown}; raise the limit "
        "(docker run --ulimit memlock=-1, systemd LimitMEMLOCK=infinity) or grant CAP_IPC_LOCK, "
        "or check free RAM, or warm without the lock"
    )


def lock_in_memory(paths: Iterable[Path]) -> int:
    """mlock every file so its pages stay in RAM while this process lives; bytes locked.

    The lock ends at exit or exec. UnavailableError (69) naming the limit and the bytes
    needed when the kernel refuses; nothing stays locked from a refused call.
    """
    paths = [Path(p) for p in paths]
    sizes = [os.stat(path).st_size for path in paths]
    needed = sum(sizes)
    _memlock_limit(needed)
    libc = _libc()
    taken: list[tuple[int, int]] = []
    for path, size in zip(paths, sizes, strict=True):
        if size == 0:
            continue
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            address = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        finally:
            os.close(fd)  # the mapping keeps the file referenced
        if address in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            _unlock(libc, taken)
            raise DiskError(f"cannot map {path}: {os.strerror(err)}")
        if libc.mlock(address, size) != 0:
            err = ctypes.get_errno() or errno.ENOMEM
            libc.munmap(address, size)
            _unlock(libc, taken)
            raise _lock_refused(needed, err, path)
        taken.append((address, size))
    _locked.extend(taken)
    return needed


def _unlock(libc: ctypes.CDLL, mappings: list[tuple[int, int]]) -> None:
    for address, size in mappings:
        libc.munlock(address, size)
        libc.munmap(address, size)


def locked_bytes() -> int:
    """Bytes this process holds locked in RAM now."""
    return sum(size for _, size in _locked)


def release_locks() -> None:
    """Unlock and unmap everything `lock_in_memory` locked."""
    _unlock(_libc(), _locked)
    _locked.clear()
