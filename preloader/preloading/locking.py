"""The lock file at work: `preloader lock` makes one from the hub, and a run, pull or wait with
PRELOADER_LOCKFILE holds each repo to it (docs/lockfile.md).

The engine takes a locked repo's commit as the one the revision resolves to (no hub lookup when the
snapshot is complete). What the hub lists at that commit is held to the lock before any download, and the
snapshot on disk before the hand-off: the file names the plan selects, and each one's digest. On disk a
digest is the name of the blob a snapshot file links to, which the download checked against the bytes;
a file that is no link to a blob is hashed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..cache import atomic, hashing
from ..config import Settings
from ..errors import ConfigError, LockRefusedError, listed, os_error
from ..lockfile import LockedFile, LockedRepo, LockFile, changes, dumps, read
from ..logs import event
from ..spec import RepoSpec

logger = logging.getLogger(__name__)


def make(settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> LockFile:
    """A lock of the plan as the hub has it now: each repo's commit, and the selected files' sizes and digests."""
    if settings.offline:
        raise ConfigError(f"`preloader lock` asks the hub what each revision is now; offline mode is on "
                          f"({settings.offline_source}): turn it off to make a lock file")
    if not settings.repos:
        raise ConfigError("nothing to lock: give SPECs, or set RUNPOD_HUGGINGFACE_MODEL / RUNPOD_HUGGINGFACE_DATASET")
    from .engine import Preloader  # the run's own resolution and selection: a lock holds what a run fetches
    from .retry import retrying

    engine = Preloader(settings, sleep=sleep)
    repos = []
    for spec in settings.repos:
        meant, commit, files = retrying(settings.retries, what=str(spec), seconds_left=engine.deadline.left,
                                        sleep=sleep)(engine.resolve, spec)
        choice, _ = engine.choose(meant, commit, files)
        locked = tuple(LockedFile(path, files[path].size, files[path].etag) for path in sorted(choice.wanted))
        repos.append(LockedRepo(spec.repo_type, spec.repo_id, spec.revision, commit, locked))
        event(logger, "lock.resolve", repo=spec.repo_id, type=spec.repo_type, rev=spec.revision, commit=commit,
              files=len(locked))
    return LockFile(tuple(repos))


def update(settings: Settings, path: Path, *, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Write the lock of the plan to `path`, replacing the lock there; what changed (empty: the file is as it was).
    A file at `path` that is not a lock file is left alone (78): it may be something else."""
    old = None
    if os.path.lexists(path):
        try:
            old = read(path)
        except ValueError as error:
            raise ConfigError(f"{path} exists and is not a lock file this preloader reads ({error}); not "
                              "overwritten: move it away or give another -o") from None
    new = make(settings, sleep=sleep)
    found = changes(old, new)
    if old is None or found:
        try:
            atomic.write_text(path, dumps(new), mode=0o644)
        except OSError as error:
            raise os_error(error, "write") from None
    return found


def check_listing(lock: LockFile, spec: RepoSpec, commit: str, files: dict, wanted: dict[str, int]) -> None:
    """Before any download: the hub's listing of the commit about to be fetched is the locked one."""
    entry = lock.entry(spec)
    if commit != entry.commit:
        _refuse(lock, spec, [f"the hub gave commit {commit[:12]}, the lock says {entry.commit[:12]}"])
    digests = {path: (files[path].etag, files[path].size) for path in wanted}
    _refuse(lock, spec, _problems(entry, digests, "the hub lists", missing="not in the commit's listing"))


def check_snapshot(lock: LockFile, spec: RepoSpec, commit: str, snapshot: Path, selected: dict[str, Path]) -> None:
    """Before the hand-off: the complete snapshot (`selected`: the plan's files, each at the blob it links
    to or the file itself) is the locked one."""
    entry = lock.entry(spec)
    if commit != entry.commit:
        _refuse(lock, spec, [f"the snapshot is at commit {commit[:12]}, the lock says {entry.commit[:12]}"])
    blobs = snapshot.parents[1] / "blobs"
    locked = entry.by_path()
    digests = {}
    for path, target in selected.items():
        size = _size(target)
        if target.parent == blobs and hashing.algorithm(target.name):
            digests[path] = (target.name, size)  # the download checked the bytes against this name
        elif path in locked and size == locked[path].size:  # no blob to name it: hash what is there
            same = hashing.matches(target, locked[path].digest)
            digests[path] = (locked[path].digest if same else "other bytes", size)
        else:
            digests[path] = ("a file that is no blob", size)
    _refuse(lock, spec, _problems(entry, digests, "the cache has", missing="missing from the snapshot"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _problems(entry: LockedRepo, digests: dict[str, tuple[str, int]], have: str, *, missing: str) -> list[str]:
    problems = []
    locked = entry.by_path()
    for path, file in locked.items():
        if path not in digests:
            problems.append(f"{path} is locked but {missing} or not selected by the plan")
            continue
        digest, size = digests[path]
        if digest != file.digest or size != file.size:
            problems.append(f"{path}: {have} {_short(digest)} ({size} bytes), the lock says {file.kind} "
                            f"{file.digest[:12]} ({file.size} bytes)")
    problems.extend(f"{path} is selected by the plan but not locked" for path in sorted(set(digests) - set(locked)))
    return problems


def _short(digest: str) -> str:
    return digest[:12] if hashing.algorithm(digest) else digest


def _refuse(lock: LockFile, spec: RepoSpec, problems: list[str]) -> None:
    if problems:
        raise LockRefusedError(f"{spec} is not as the lock file {lock.path} says: {listed(problems, first=3)}; "
                               "nothing was started; run `preloader lock` again if the change is wanted")
