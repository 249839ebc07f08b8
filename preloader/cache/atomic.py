"""Atomic publication: readers see the old file or link, or the new one, never half of either.

Everything goes to a unique temporary name in the same directory and is
renamed into place, as huggingface_hub does for blobs. `os.replace` on a
symlink replaces the link itself, so a link planted at the destination is
never followed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import PartialRemovalError, UnsafePathError

TEMP_MARK = ".preloader-tmp-"
REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}  # a read-only mount, or files this user may not write

logger = logging.getLogger(__name__)


def nearest_existing(path: Path, *, follow: bool = False) -> Path:
    """`path`, or its nearest parent that is there now: a link counts, dangling or not (what a mkdir would
    meet), or with `follow` only where it leads somewhere (what can be stat'ed, written in, measured); the
    root when none is (a path this user may not even look into)."""
    there = os.path.exists if follow else os.path.lexists
    for candidate in (path, *path.parents):
        if there(candidate):
            return candidate
    return Path(path.anchor or os.sep)


def on_read_only_volume(path: Path) -> bool:
    """Whether the filesystem holding `path` (or its nearest existing parent) is mounted read-only."""
    try:
        return bool(os.statvfs(nearest_existing(path)).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def writable(path: Path) -> bool:
    """Whether this process may create files in `path` (or its nearest existing parent)."""
    return os.access(nearest_existing(path), os.W_OK | os.X_OK)


class DispensableWrites:
    """Writes a start from a complete snapshot can do without (last use, links already right elsewhere):
    on a read-only cache they are skipped, with one warning for the whole run."""

    def __init__(self) -> None:
        self.refused: OSError | None = None

    def write(self, what: str, action: Callable[..., object], *args, **kwargs) -> bool:
        """`action(*args, **kwargs)`; False when the cache refused it (and it was skipped)."""
        try:
            action(*args, **kwargs)
            return True
        except OSError as error:
            if error.errno not in REFUSED:
                raise
            if self.refused is None:
                self.refused = error
                why = ("the cache is read-only here" if error.errno == errno.EROFS
                       else f"this user (uid {os.geteuid()}) may not write the cache here")
                logger.warning("%s (%s: %s): %s and what follows is not recorded; starting on what is complete",
                               why, error.strerror, error.filename, what)
            return False


def temp_name(path: Path) -> Path:
    """A unique sibling of `path`, recognisable as ours for clean-up."""
    return path.with_name(f"{TEMP_MARK}{path.name}.{os.getpid()}.{os.urandom(4).hex()}")


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def leads_out(path: Path, root: Path) -> str | None:
    """Where `path` really is, when that is outside `root` (a symlink on the way leads elsewhere); None
    when it stays inside or is not there. The one judge of containment: every guarded write and delete
    below, and every read-only report of a folder that leads out, ask it."""
    if not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    return None if _within(real, os.path.realpath(root)) else real


def ensure_inside(path: Path, root: Path, verb: str = "write") -> Path:
    """`path`'s directory must resolve inside `root`: a symlink planted on the way must not lead out.

    `path` itself is not followed: writes rename over it and deletes unlink it, both acting on a link
    and never on what it points at. Returns `path`; raises UnsafePathError otherwise.
    """
    existing = nearest_existing(path.parent)  # check what is there now, before mkdir could follow a planted link
    if existing != root and root not in existing.parents:
        return path  # the root itself is not made yet: nothing can be planted under it
    parent = leads_out(existing, root)
    if parent is not None:
        raise UnsafePathError(
            f"refusing to {verb} {path}: its directory resolves to {parent}, outside {os.path.realpath(root)} "
            "(a symlink planted on the way?); remove it and retry"
        )
    return path


def root_of(path: Path, roots: Iterable[Path | None]) -> Path:
    """The most specific of `roots` that holds `path` (the state dir may lie inside the cache, the link root
    inside the state dir); UnsafePathError when none does."""
    holding = [root for root in roots if root is not None and (root == path or root in path.parents)]
    if not holding or path in holding:
        raise UnsafePathError(f"refusing to act on {path}: it is not inside the cache, the state dir or the "
                              "link root")
    return max(holding, key=lambda root: len(root.parts))


def remove(path: Path, roots: Iterable[Path | None]) -> bool:
    """Delete a file, a link (never what it points at) or a folder tree, only where it really lies inside
    every one of `roots` that holds it (the state dir may lie inside the cache); True when something was
    removed.

    A folder on the way that is a symlink leading elsewhere is refused (UnsafePathError, naming it), so
    nothing reached through it is deleted. `shutil.rmtree` itself never follows links below the folder.
    A removal that fails, even part-way, raises PartialRemovalError (74) naming what is left: never
    reported as done.
    """
    roots = [root for root in roots if root is not None]
    root_of(path, roots)  # in one of them, and not one of them
    for root in roots:
        if root in path.parents:
            ensure_inside(path, root, "delete")
    if not os.path.lexists(path):
        return False
    failures: list[tuple[str, OSError]] = []
    if path.is_dir() and not path.is_symlink():
        def failed(function, name, error) -> None:
            error = error if isinstance(error, BaseException) else error[1]  # onexc, or onerror's exc_info
            if not isinstance(error, FileNotFoundError):  # gone meanwhile is gone
                failures.append((name, error))

        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=failed)
        else:
            shutil.rmtree(path, onerror=failed)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            failures.append((str(path), error))
    if failures:
        raise PartialRemovalError(path, failures)
    return True


def first_escape(folders: Iterable[tuple[Path, Path]]) -> str | None:
    """For (folder, root) pairs (`Layout.guarded_folders`): a line naming the first folder that leads out of
    its root, or None when all stay inside."""
    for folder, root in folders:
        real = leads_out(folder, root)
        if real is not None:
            return f"{folder} leads to {real}, outside {root} (a symlink planted there?)"
    return None


def refuse_escapes(folders: Iterable[tuple[Path, Path]], verb: str = "write") -> None:
    """UnsafePathError (73) when any of these folders leads out of its root: nothing is done through it."""
    problem = first_escape(folders)
    if problem is not None:
        raise UnsafePathError(f"refusing to {verb} through {problem}; remove the link and retry")


def make_dirs(path: Path, mode: int = 0o775) -> None:
    """Create `path` and its parents; our own directories stay group-writable for other containers."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)


def make_parent(path: Path, root: Path | None = None) -> None:
    """Create `path`'s directory; with `root`, check before and after that it resolves inside it."""
    if root is not None:
        ensure_inside(path, root)
    make_dirs(path.parent)
    if root is not None:
        ensure_inside(path, root)


def write_text(path: Path, text: str, mode: int = 0o664, root: Path | None = None, durable: bool = True) -> None:
    """Write `text` to `path` atomically, stay inside `root`. `durable`: fsynced, so that a power cut too
    leaves the old or the new content (a killed process always does)."""
    make_parent(path, root)
    temp = temp_name(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object, root: Path | None = None, durable: bool = True) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", root=root, durable=durable)


def symlink(target: str, link: Path, root: Path | None = None) -> bool:
    """Point `link` at `target` (relative, so the volume can move); return True if it changed.

    With `root`, the link's directory must resolve inside it.
    """
    try:
        if os.readlink(link) == target:
            return False
    except OSError:
        pass
    make_parent(link, root)
    temp = temp_name(link)
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return True


def hard_link(source: Path, target: Path, root: Path | None = None) -> None:
    """Make `target` a hard link to `source`, atomically: a temporary link renamed over it. With `root`,
    `target`'s directory must resolve inside it."""
    if root is not None:
        ensure_inside(target, root)
    temp = temp_name(target)
    try:
        os.link(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def relative_target(target: Path, link: Path) -> str:
    """`target` as seen from the directory holding `link`, computed between the folders as they really are.

    The kernel resolves `..` in a link from where the link really lies: a link root, state dir or cache
    reached through a symlink would make a purely lexical relative path dangle. The folders are resolved,
    never `target` itself (a blob may be a link into the shared store or a read-only tier: the link must
    still point at `blobs/<etag>`).
    """
    real_target = os.path.join(os.path.realpath(target.parent), target.name)
    return os.path.relpath(real_target, os.path.realpath(link.parent))
