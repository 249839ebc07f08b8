"""Per-repo locks on the shared volume, so containers starting together download once.

Correctness never rests on the lock: every file and link is published by an
atomic rename. The lock saves duplicated bandwidth and lets waiters find the
work done. filelock falls back to a soft (marker file) lock on filesystems
where flock fails; the kernel drops an flock when its holder dies, even by
SIGKILL, so a dead holder never blocks the others.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import TransientError, UnsafePathError
from ..logs import event
from . import atomic

logger = logging.getLogger(__name__)

WAIT_LOG_INTERVAL = 10.0
LOCK_MODE = 0o664  # group-writable: a second container, maybe another UID, must take it too


@contextlib.contextmanager
def hold(
    path: Path,
    *,
    timeout: float,
    what: str,
    deadline: Callable[[], float | None] = lambda: None,
    log_interval: float = WAIT_LOG_INTERVAL,
) -> Iterator[None]:
    """Hold the lock at `path`, logging a "still waiting" line every `log_interval` seconds.

    Raise TransientError after `timeout` seconds, or sooner if `deadline()`
    says fewer seconds are left.
    """
    from filelock import FileLock, Timeout  # deferred: a cached start never locks

    atomic.make_dirs(path.parent)
    lock = FileLock(path, mode=LOCK_MODE, is_singleton=False, thread_local=False)
    start = time.monotonic()
    limit = timeout
    while True:
        elapsed = time.monotonic() - start
        left = deadline()
        if left is not None:
            limit = min(timeout, elapsed + left)
        try:
            lock.acquire(timeout=max(0.0, min(log_interval, limit - elapsed)))
            break
        except Timeout:
            elapsed = time.monotonic() - start
            if elapsed >= limit:
                raise TransientError(
                    f"timed out after {elapsed:.0f} s waiting for the lock on {what} ({path}); "
                    "another process is still downloading it: raise PRELOADER_LOCK_TIMEOUT or retry"
                ) from None
            event(logger, "lock.wait", what=what, elapsed=f"{elapsed:.0f}s", lock=path)
        except OSError as error:
            if error.errno == errno.ELOOP:  # filelock opens with O_NOFOLLOW: a planted symlink
                raise UnsafePathError(
                    f"lock file {path} is a symlink; refusing to follow it (planted by another process?): "
                    "remove it and retry"
                ) from None
            raise
    if time.monotonic() - start > 0.5:
        event(logger, "lock.acquired", what=what, waited=f"{time.monotonic() - start:.1f}s")
    try:
        yield
    finally:
        lock.release()
