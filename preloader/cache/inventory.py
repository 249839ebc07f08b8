"""What is in a cache: repos, revisions, completeness, links, sizes, last use.

Reads the hub layout directly, so a cache that only huggingface_hub wrote is
listed too (its snapshots have no completion record, so they show as partial).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import RepoSpec, is_commit
from . import atomic, records, store
from .layout import LATEST, Layout, parse_folder_name

logger = logging.getLogger(__name__)


@dataclass
class RevisionInfo:
    commit: str
    refs: list[str]
    complete: bool
    recorded: bool
    files: int
    size: int
    last_used: float | None
    path: Path
    latest: bool = False
    aliases: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsafe: str | None = None  # a folder of its repo leads out of the cache (see RepoInfo.unsafe)

    @property
    def state(self) -> str:
        if self.unsafe is not None:
            return "unsafe"
        return "complete" if self.complete else "partial"

    @property
    def used_or_made(self) -> float:
        """Last use, or else when it was made: the LRU key."""
        if self.last_used is not None:
            return self.last_used
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0


@dataclass
class RepoInfo:
    repo_type: str
    repo_id: str
    path: Path
    revisions: list[RevisionInfo]
    size: int
    latest: str | None
    unsafe: str | None = None  # which folder leads out of the cache, and where: nothing is done through it

    @property
    def spec(self) -> RepoSpec:
        return RepoSpec(self.repo_type, self.repo_id)

    @property
    def last_used(self) -> float | None:
        used = [r.last_used for r in self.revisions if r.last_used is not None]
        return max(used) if used else None


@dataclass
class CacheInfo:
    cache_dir: Path
    state_dir: Path
    repos: list[RepoInfo]
    size: int  # on disk, each file once
    free: int | None
    shared: int = 0  # of `size`, bytes that several repos hold as one file (hard links, store entries)


def snapshot_blobs(snapshot: Path) -> dict[str, Path]:
    """{file path in repo: blob it points at (or the file itself)} for one snapshot."""
    files = {}
    for dirpath, _, names in os.walk(snapshot):
        for name in names:
            full = Path(dirpath) / name
            rel = full.relative_to(snapshot).as_posix()
            if full.is_symlink():
                files[rel] = Path(os.path.normpath(full.parent / os.readlink(full)))
            else:
                files[rel] = full
    return files


def read_refs(layout: Layout, spec: RepoSpec) -> dict[str, list[str]]:
    """{commit: [ref names]} from a repo's refs/ folder."""
    refs: dict[str, list[str]] = {}
    base = layout.refs_dir(spec)
    for dirpath, _, names in os.walk(base):
        for name in names:
            path = Path(dirpath) / name
            try:
                commit = path.read_text(encoding="utf-8").strip()
            except OSError:
                continue
            refs.setdefault(commit, []).append(path.relative_to(base).as_posix())
    return {commit: sorted(names) for commit, names in refs.items()}


def read_aliases(layout: Layout, spec: RepoSpec) -> dict[str, list[str]]:
    """{commit: [alias paths]} for the alias links of one repo."""
    base = layout.alias_dir(spec)
    if base is None:
        return {}
    found: dict[str, list[str]] = {}
    for dirpath, dirnames, names in os.walk(base):
        for name in list(dirnames) + names:
            path = Path(dirpath) / name
            if path.is_symlink():
                found.setdefault(Path(os.readlink(path)).name, []).append(str(path))
    return found


def scan_repo(layout: Layout, repo_dir: Path) -> RepoInfo | None:
    parsed = parse_folder_name(repo_dir.name)
    if parsed is None or not repo_dir.is_dir():
        return None
    repo_type, repo_id = parsed
    spec = RepoSpec(repo_type, repo_id)
    unsafe = atomic.first_escape(layout.guarded_folders(spec))
    if unsafe is not None:
        return unsafe_repo(layout, spec, repo_dir, unsafe)
    refs = read_refs(layout, spec)
    aliases = read_aliases(layout, spec)
    latest = latest_commit(layout, spec)
    revisions = []
    blob_sizes: dict[Path, int] = {}
    snapshots = layout.snapshots_dir(spec)
    for entry in sorted(os.listdir(snapshots)) if snapshots.is_dir() else []:
        path = snapshots / entry
        if entry == LATEST or path.is_symlink() or not path.is_dir():
            continue
        blobs = snapshot_blobs(path)
        sizes = {}
        for rel, blob in blobs.items():
            try:
                sizes[rel] = blob_sizes.setdefault(blob, blob.stat().st_size)
            except OSError:
                pass  # broken link: not on disk
        state = records.check(layout, spec, entry, as_recorded=True) if is_commit(entry) else None
        revisions.append(RevisionInfo(
            commit=entry,
            refs=refs.get(entry, []),
            complete=state is not None and state.complete,
            recorded=state is not None and state.record is not None,
            files=len(sizes),
            size=sum(blob_sizes[b] for b in {blobs[r] for r in sizes}),
            last_used=records.last_used(layout, spec, entry),
            path=path,
            latest=latest == entry,
            aliases=sorted(aliases.get(entry, [])),
            missing=list(state.missing) if state else [],
        ))
    return RepoInfo(repo_type, repo_id, repo_dir, revisions, sum(blob_sizes.values()), latest)


def unsafe_repo(layout: Layout, spec: RepoSpec, repo_dir: Path, unsafe: str) -> RepoInfo:
    """A repo with a folder leading out of the cache: its snapshots by name, each `unsafe`, nothing read
    through it, sized 0 (its bytes are not the cache's); one warning."""
    logger.warning("%s %s is not used: %s; remove the link (`rm %s`), then preload it again", spec.repo_type,
                   spec.repo_id, unsafe, repo_dir)
    snapshots = layout.snapshots_dir(spec)
    try:
        names = sorted(os.listdir(snapshots)) if snapshots.is_dir() else []
    except OSError:
        names = []
    revisions = [RevisionInfo(commit=name, refs=[], complete=False, recorded=False, files=0, size=0, last_used=None,
                              path=snapshots / name, unsafe=unsafe) for name in names if name != LATEST]
    return RepoInfo(spec.repo_type, spec.repo_id, repo_dir, revisions, 0, None, unsafe)


def latest_commit(layout: Layout, spec: RepoSpec) -> str | None:
    """The commit this layout's `latest` link shows, None when there is none or it dangles."""
    link = layout.latest_link(spec)
    if link is None or not link.is_dir():
        return None
    return Path(os.readlink(link)).name


def scan(layout: Layout) -> CacheInfo:
    repos = []
    if layout.cache_dir.is_dir():
        for name in sorted(os.listdir(layout.cache_dir)):
            info = scan_repo(layout, layout.cache_dir / name)
            if info is not None:
                repos.append(info)
    size, shared = physical_size(layout, repos)
    return CacheInfo(layout.cache_dir, layout.state_dir, repos, size, free_space(layout.cache_dir), shared)


def physical_size(layout: Layout, repos: list[RepoInfo]) -> tuple[int, int]:
    """Bytes on disk, each file once, and of those the bytes several repos share.

    Each store entry (linked or not) counts once, as `scan_cache_dir().size_on_disk` counts them, and so
    does each hard-linked blob (which huggingface_hub would count per repo). A repo's own size counts
    what it links (logical).
    """
    files: dict[tuple[int, int], int] = {}
    holders: dict[tuple[int, int], set[str]] = {}
    for entry, size in store.entries(layout.cache_dir).items():
        st = entry.stat()
        files[(st.st_dev, st.st_ino)] = size
    for repo in repos:
        for revision in repo.revisions if repo.unsafe is None else []:  # not the cache's bytes
            for blob in snapshot_blobs(revision.path).values():
                try:
                    st = blob.stat()
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                files[key] = st.st_size
                holders.setdefault(key, set()).add(repo.path.name)
    shared = sum(files[key] for key, names in holders.items() if len(names) > 1)
    return sum(files.values()), shared


def free_space(path: Path) -> int | None:
    """Free bytes on the volume holding `path` (or its nearest existing parent)."""
    try:
        return shutil.disk_usage(atomic.nearest_existing(path, follow=True)).free
    except OSError:
        return None


def find_repo(info: CacheInfo, spec: RepoSpec) -> RepoInfo | None:
    return next((r for r in info.repos if (r.repo_type, r.repo_id) == (spec.repo_type, spec.repo_id)), None)
