"""Per-repo locks on the shared volume, so containers and nodes starting together download once.

Correctness never rests on the lock: every file and link is published by an
atomic rename, and a blob only after its bytes were checked. The lock saves
duplicated bandwidth and lets waiters find the work done. Two kinds:

- `flock` (filelock's FileLock): the kernel drops it when its holder dies, even
  by SIGKILL. On NFS without a lock manager, Lustre without `flock`, and many
  FUSE filesystems it succeeds for everyone and excludes nobody on other nodes.
- `lease` (filelock's SoftFileLease): a marker created with O_EXCL (atomic on
  NFSv3+, CephFS, Lustre, FUSE) naming its owner, refreshed by a heartbeat. A
  waiter takes it over when its owner is a dead process on this host, or when the
  marker has not changed for the stale time: filelock's break protocol lets only
  one waiter win. It assumes the holder's heartbeat reaches the volume within the
  stale time (a paused or partitioned holder can be overtaken) and gives no fencing
  token to the volume: what makes an overtaken holder harmless is that everything
  it publishes is checked and renamed into place, never written in place.

`auto` picks `lease` where the state dir is on a network or FUSE filesystem. A `flock` asked for where
the filesystem has none (ENOSYS) becomes the lease too, with a warning, as huggingface_hub's WeakFileLock
falls back to a soft lock: filelock's own fallback would be a marker no one breaks when its holder dies.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import LockTimeoutError, UnsafePathError
from ..logs import event
from ..spec import RepoSpec
from . import atomic
from .layout import Layout

logger = logging.getLogger(__name__)

WAIT_LOG_INTERVAL = 10.0
LOCK_MODE = 0o664  # group-writable: a second container, maybe another UID, must take it too
LockKind = Literal["flock", "lease"]
# Where flock may not exclude other nodes; a FUSE filesystem shows as `fuse.<name>` (bindfs, juicefs, s3fs...).
SHARED_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "cephfs", "lustre", "glusterfs", "gpfs",
                      "beegfs", "9p", "virtiofs", "afs", "ocfs2", "gfs2", "fuse", "fuseblk")


@dataclass(frozen=True)
class LockPolicy:
    """How repo locks exclude others here: the kind, the lease's stale time, and why this kind."""

    kind: LockKind
    stale: float = 30.0
    why: str = ""


def filesystem_of(path: Path) -> tuple[str, str]:
    """(filesystem type, mount point) of the mount holding `path` (or its nearest existing parent)."""
    real = os.path.realpath(atomic.nearest_existing(path))
    best = ("unknown", "/")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                mount_point = fields[4].replace("\\040", " ")
                fstype = fields[fields.index("-") + 1]
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best[1]):
                    best = (fstype, mount_point)
    except (OSError, ValueError, IndexError):
        pass
    return best


def choose(setting: str, path: Path, stale: float = 30.0) -> LockPolicy:
    """The policy for PRELOADER_LOCK=`setting` (auto, flock or lease) with locks under `path`."""
    if setting in ("flock", "lease"):
        return LockPolicy(setting, stale, f"PRELOADER_LOCK={setting}")
    fstype, mount_point = filesystem_of(path)
    if fstype.split(".")[0] in SHARED_FILESYSTEMS:
        return LockPolicy("lease", stale, f"{mount_point} is {fstype}: flock may not exclude other nodes there")
    return LockPolicy("flock", stale, f"{mount_point} is {fstype}: a local filesystem, where flock excludes")


class RepoLocks:
    """The repo locks of one layout, of the kind its policy says."""

    def __init__(self, layout: Layout, policy: LockPolicy) -> None:
        self.layout, self.policy = layout, policy

    @classmethod
    def auto(cls, layout: Layout, setting: str = "auto", stale: float = 30.0) -> RepoLocks:
        return cls(layout, choose(setting, layout.state_dir, stale))

    def hold(self, spec: RepoSpec, *, timeout: float, what: str | None = None,
             deadline: Callable[[], float | None] = lambda: None):
        """The repo's lock, held (see `hold`). Every write or delete in a repo holds it, so this is where a repo
        with a folder leading out of the cache, the state dir or the link root is refused (73), before
        anything is created or removed through it."""
        atomic.refuse_escapes(self.layout.guarded_folders(spec))
        lease = self.policy.kind == "lease"
        return hold(self.layout.lock_file(spec, lease=lease), timeout=timeout, what=what or str(spec),
                    deadline=deadline, lease=self.policy.stale if lease else None, root=self.layout.state_dir)


@contextlib.contextmanager
def hold(
    path: Path,
    *,
    timeout: float,
    what: str,
    deadline: Callable[[], float | None] = lambda: None,
    log_interval: float = WAIT_LOG_INTERVAL,
    lease: float | None = None,
    root: Path | None = None,
) -> Iterator[None]:
    """Hold the lock at `path`, logging a `lock.wait` line when the wait starts, then every `log_interval` s.

    Raise LockTimeoutError after `timeout` seconds, or sooner if `deadline()`
    says fewer seconds are left. `lease`: a lease with this stale time instead of a flock. `root`: the lock's
    folder must really lie inside it (a `locks/` folder planted as a link out is refused, 73).
    """
    from filelock import FileLock, Timeout  # deferred: a cached start never locks

    atomic.make_parent(path, root)
    if lease is None:
        # No silent soft fallback: filelock's would be a marker no one ever breaks when its holder dies.
        lock = FileLock(path, mode=LOCK_MODE, is_singleton=False, thread_local=False, fallback_to_soft=False)
    else:
        lock = _lease(path, lease)
    start = time.monotonic()
    limit = timeout
    first = True  # a try without waiting, so that the wait's start is logged as it starts
    while True:
        elapsed = time.monotonic() - start
        left = deadline()
        if left is not None:
            limit = min(timeout, elapsed + left)
        try:
            lock.acquire(timeout=0 if first else max(0.0, min(log_interval, limit - elapsed)))
            break
        except Timeout:
            elapsed = time.monotonic() - start
            if elapsed >= limit:
                raise LockTimeoutError(
                    f"timed out after {elapsed:.0f} s waiting for the lock on {what} ({path}); "
                    "another process is still downloading it: raise PRELOADER_LOCK_TIMEOUT or retry"
                ) from None
            event(logger, "lock.wait", what=what, elapsed=f"{elapsed:.0f}s", lock=path)
            first = False
        except (NotImplementedError, OSError) as error:
            if lease is None and _no_flock(error):
                # As huggingface_hub's WeakFileLock does where flock is missing (some FUSE and network
                # filesystems): go on with a soft lock, here the lease, whose stale marker is taken over.
                lease = LockPolicy("lease").stale
                logger.warning("flock is not supported on the filesystem of %s (%s): using a lease lock there "
                               "(PRELOADER_LOCK=lease)", path, error)
                path = path.with_suffix(".lease")  # Layout.lock_file's lease marker: what PRELOADER_LOCK=lease takes
                lock = _lease(path, lease)
                continue
            if isinstance(error, OSError) and error.errno == errno.ELOOP:  # filelock opens with O_NOFOLLOW
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


def _no_flock(error: BaseException) -> bool:
    """Whether `error` says the filesystem has no flock: ENOSYS, or the NotImplementedError other filelock
    versions raise for it."""
    return isinstance(error, NotImplementedError) or getattr(error, "errno", None) == errno.ENOSYS


def _lease(path: Path, stale: float):
    return _lease_class()(path, lease_duration=stale, mode=LOCK_MODE, is_singleton=False, thread_local=False)


@functools.cache
def _lease_class():
    """filelock's SoftFileLease, able to take over a stale lease on filesystems without rename exchange.

    This leans on filelock's private parts (`SoftFileLease._take_over(marker, breaker_pid)`, `_lock_path`,
    `filelock._filesystem._exchange`): pyproject.toml pins the 4.3 series they were read from.

    filelock 4.3 breaks a stale marker with renameat2(RENAME_EXCHANGE), which NFS and FUSE filesystems
    (bindfs, juicefs, s3fs...) refuse; it then leaves the marker in place, and a dead holder's lease is
    never taken over there. On such a filesystem the break goes the way filelock itself goes where there
    is no exchange (Windows): rename the marker aside, remove it if it is the stale one observed, else
    link it back for its live owner.
    """
    from filelock import SoftFileLease

    class Lease(SoftFileLease):
        def _take_over(self, marker: os.stat_result, breaker_pid: int | None) -> None:
            if _exchange_works(os.path.dirname(self._lock_path)):
                super()._take_over(marker, breaker_pid)
            else:
                _break_by_rename(self._lock_path, marker)

    return Lease


@functools.cache
def _exchange_works(directory: str) -> bool:
    """Whether renameat2(RENAME_EXCHANGE) works in `directory` (probed once, with two files of our own)."""
    try:
        from filelock._filesystem._exchange import exchange_names, exchange_supported
    except ImportError:  # a filelock outside the pinned range: let it do as it does
        return True
    if not exchange_supported():
        return True  # filelock has its own way on this platform
    first, second = (os.path.join(directory, f"{atomic.TEMP_MARK}exchange-{os.getpid()}-{n}") for n in (1, 2))
    try:
        for name in (first, second):
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600))
        return exchange_names(first, second)
    except OSError:
        return False
    finally:
        for name in (first, second):
            with contextlib.suppress(OSError):
                os.unlink(name)


def _break_by_rename(lock_file: str, marker: os.stat_result) -> None:
    """Move a stale marker out of the way; one moved by mistake (a successor's) is linked back. A live
    marker is never deleted: where it cannot be put back it stays aside, and a warning names it."""
    aside = f"{lock_file}.break.{os.getpid()}.{os.urandom(8).hex()}"
    try:
        current = os.lstat(lock_file)
        if (current.st_mtime, current.st_ino) != (marker.st_mtime, marker.st_ino):
            return  # replaced since it was observed
        os.rename(lock_file, aside)
    except OSError:
        return  # gone meanwhile, or another waiter moved it first: the next poll sees
    moved = os.lstat(aside)
    if (moved.st_mtime, moved.st_ino) == (marker.st_mtime, marker.st_ino):
        os.unlink(aside)
        return
    try:
        os.link(aside, lock_file, follow_symlinks=False)  # fails if yet another contender holds the path
    except OSError as error:
        # No hard links here (some FUSE filesystems): rename it back while the path is free. A contender
        # that took the path meanwhile keeps it: the successor's marker then stays aside, never deleted.
        if error.errno != errno.EEXIST and not os.path.lexists(lock_file):
            os.rename(aside, lock_file)
        else:
            logger.warning("a live lease marker was moved while breaking a stale one and could not be put back "
                           "(%s): it stays at %s; two holders may overlap once, and the cache stays correct "
                           "(publication is by rename)", error.strerror, aside)
        return
    os.unlink(aside)
