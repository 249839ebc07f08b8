"""Removing snapshots safely: links first, then records, then files, then blobs nobody uses.

Every removal holds the repo lock, so it never runs under a preload of the
same repo. Readers that resolved a link before it went keep their open files.
A blob that is a link into huggingface_hub's shared store frees its entry only
when no repo links it any more (`store.sweep`); the bytes reported freed are
the bytes that left the disk, and a dry run counts the same bytes (`freed_by`).

Every delete goes through `atomic.remove`: nothing reached through a folder that leads out of the cache,
the state dir or the link root is deleted, and a delete that fails part-way (PartialRemovalError) is
reported as failed, with what is left, never counted as removed or freed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PartialRemovalError
from ..spec import RepoSpec
from . import atomic, records, store
from .inventory import CacheInfo, RepoInfo, RevisionInfo, read_refs, scan_repo, snapshot_blobs
from .layout import PARTIAL_SUFFIX, STATE_KINDS, Layout, parse_folder_name


@dataclass
class Removal:
    repo_type: str
    repo_id: str
    commit: str
    size: int
    reason: str
    last_used: float | None = None


@dataclass
class RemovalReport:
    removed: list[Removal] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # left alone: locked, unsafe, or failed (below)
    leftovers: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # removals that failed part-way: what is left stays
    freed: int = 0
    dry_run: bool = False


def latest_links(layout: Layout, spec: RepoSpec) -> dict[Path, str | None]:
    """Each `latest` link of a repo (any placement) and the commit it names (None when it dangles)."""
    found: dict[Path, str | None] = {}
    for link in layout.latest_links(spec).values():
        if link.is_symlink():
            found[link] = Path(os.readlink(link)).name if link.exists() else None
    return found


def unlink_links_to(layout: Layout, spec: RepoSpec, repo: RepoInfo, commit: str) -> None:
    """Remove refs, `latest` and aliases that point at `commit`, and its file listing."""
    refs_dir = layout.refs_dir(spec)
    for name in read_refs(layout, spec).get(commit, []):
        atomic.remove(refs_dir / name, layout.roots)
    for link, target in latest_links(layout, spec).items():
        if target == commit:
            atomic.remove(link, layout.roots)
    for revision in repo.revisions:
        if revision.commit == commit:
            for alias in revision.aliases:
                atomic.remove(Path(alias), layout.roots)
    atomic.remove(layout.tree_file(spec, commit), layout.roots)


def remove_revision(layout: Layout, repo: RepoInfo, revision: RevisionInfo) -> None:
    """Remove one snapshot; the caller holds the repo lock."""
    spec = repo.spec
    unlink_links_to(layout, spec, repo, revision.commit)
    records.forget(layout, spec, revision.commit)
    atomic.remove(revision.path, layout.roots)


def unlink_blob(blob: Path, layout: Layout, entries: set[Path]) -> int:
    """Remove one repo blob; the bytes that frees now. A link into the shared store frees nothing
    itself: its entry goes into `entries`, for `store.sweep` once every removal is done. PartialRemovalError
    when it cannot be deleted."""
    try:
        entry = store.target(blob, layout.cache_dir)
        st = blob.lstat()
    except FileNotFoundError:
        return 0  # gone meanwhile
    # A link into the store, or a hard link another repo shares (dedup), frees nothing yet.
    size = st.st_size if entry is None and not blob.is_symlink() and st.st_nlink == 1 else 0
    if not atomic.remove(blob, layout.roots):
        return 0
    if entry is not None:
        entries.add(entry)
    return size


def unused_blobs(layout: Layout, spec: RepoSpec, *, older_than: float | None = None) -> list[Path]:
    """A repo's blobs no snapshot links to (partial downloads and our temp files aside).

    `older_than`: only blobs last changed before this time (a blob another tool just published may
    not be linked yet).
    """
    used: set[Path] = set()
    snapshots = layout.snapshots_dir(spec)
    for entry in os.listdir(snapshots) if snapshots.is_dir() else []:
        path = snapshots / entry
        if path.is_dir() and not path.is_symlink():  # `latest` is a link: what it shows is counted once
            used.update(snapshot_blobs(path).values())
    blobs_dir = layout.blobs_dir(spec)
    unused = []
    for name in sorted(os.listdir(blobs_dir)) if blobs_dir.is_dir() else []:
        blob = blobs_dir / name
        # A download in flight writes `.incomplete` files; prune's grace period decides about those.
        if blob in used or name.endswith(PARTIAL_SUFFIX) or name.startswith(atomic.TEMP_MARK):
            continue
        if older_than is None or blob.lstat().st_mtime < older_than:
            unused.append(blob)
    return unused


def collect_blobs(layout: Layout, spec: RepoSpec, *, older_than: float | None = None) -> tuple[int, list[str]]:
    """Delete the repo's unused blobs (see `unused_blobs`): the bytes freed, and a line for each that could not
    be deleted. Drop the repo folder when nothing is left in it."""
    entries: set[Path] = set()
    freed, failed = 0, []
    for blob in unused_blobs(layout, spec, older_than=older_than):
        try:
            freed += unlink_blob(blob, layout, entries)
        except PartialRemovalError as error:
            failed.append(f"{spec.repo_type} {spec.repo_id}: blob {blob.name[:12]}: {error}")
    freed += store.sweep(entries, layout.cache_dir)
    snapshots, blobs_dir = layout.snapshots_dir(spec), layout.blobs_dir(spec)
    real = [e for e in (os.listdir(snapshots) if snapshots.is_dir() else []) if not (snapshots / e).is_symlink()]
    if not real and not (os.listdir(blobs_dir) if blobs_dir.is_dir() else []):  # nothing left, nothing coming
        try:
            atomic.remove(layout.repo_dir(spec), layout.roots)
            for kind in STATE_KINDS:
                atomic.remove(layout.state_folder(kind, spec), layout.roots)
        except PartialRemovalError as error:
            failed.append(f"{spec.repo_type} {spec.repo_id}: {error}")
    return freed, failed


def remove_commits(layout: Layout, repo_dir: Path, commits: set[str] | None, reason: str
                   ) -> tuple[list[Removal], int, list[str]]:
    """Remove these commits' snapshots (all if None) of one repo, then its unused blobs: what was
    removed, the bytes that freed, and a line for each removal that failed part-way (not counted, and
    the blobs what is left of it links are kept). Hold the lock."""
    repo = scan_repo(layout, repo_dir)
    if repo is None:
        return [], 0, []
    atomic.refuse_escapes(layout.guarded_folders(repo.spec), "delete")  # before anything goes
    removed, failed = [], []
    for revision in repo.revisions:
        if commits is None or revision.commit in commits:
            try:
                remove_revision(layout, repo, revision)
            except PartialRemovalError as error:
                failed.append(f"{repo.repo_type} {repo.repo_id}@{revision.commit[:12]}: {error}")
                continue
            removed.append(Removal(repo.repo_type, repo.repo_id, revision.commit, revision.size, reason,
                                   revision.last_used))
    if commits is None and not failed:
        try:
            for link in latest_links(layout, repo.spec):
                atomic.remove(link, layout.roots)
            atomic.remove(layout.refs_dir(repo.spec), layout.roots)
        except PartialRemovalError as error:
            failed.append(f"{repo.repo_type} {repo.repo_id}: {error}")
    freed, blobs_failed = collect_blobs(layout, repo.spec)
    return removed, freed, failed + blobs_failed


def going_blobs(layout: Layout, repo: RepoInfo, commits: set[str] | None) -> set[Path]:
    """The blobs `remove_commits(layout, repo, commits)` deletes: every blob of the repo (partial downloads
    and our temp files aside) that no remaining snapshot links to."""
    kept = {rev.path for rev in repo.revisions if commits is not None and rev.commit not in commits}
    used = {blob for path in kept for blob in snapshot_blobs(path).values()}
    blobs_dir = layout.blobs_dir(repo.spec)
    names = sorted(os.listdir(blobs_dir)) if blobs_dir.is_dir() else []
    return {blobs_dir / name for name in names if blobs_dir / name not in used
            and not name.endswith(PARTIAL_SUFFIX) and not name.startswith(atomic.TEMP_MARK)}


def freed_by(going: set[Path], cache_dir: Path) -> int:
    """The bytes deleting every blob in `going` frees, each file once: a blob of its own with no link left
    elsewhere (hard links: all of them going), a shared-store entry whose every reference is going."""
    freed, seen = 0, set()
    for blob in sorted(going):
        entry = store.target(blob, cache_dir)
        if entry is None:
            try:
                st = blob.lstat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
        else:
            key = entry
        if key not in seen:
            seen.add(key)
            freed += store.freed_with(blob, going, cache_dir)
    return freed


def stale_leftovers(layout: Layout, info: CacheInfo, grace: float, now: float | None = None) -> list[Path]:
    """Half-written blobs and their range maps, our temp files, and snapshots of downloads abandoned more
    than `grace` s ago."""
    now = time.time() if now is None else now
    old = []

    def aged(path: Path) -> bool:
        try:
            return now - path.lstat().st_mtime > grace
        except OSError:
            return False

    for repo in info.repos:
        if repo.unsafe is not None:
            continue  # leads out of the cache: nothing through it is ours to clean
        blobs = layout.blobs_dir(repo.spec)
        for name in os.listdir(blobs) if blobs.is_dir() else []:
            if (name.endswith(PARTIAL_SUFFIX) or name.startswith(atomic.TEMP_MARK)) and aged(blobs / name):
                old.append(blobs / name)
        maps = layout.state_folder("transfers", repo.spec)  # range maps of partial blobs
        old.extend(maps / name for name in (os.listdir(maps) if maps.is_dir() else []) if aged(maps / name))
        for revision in repo.revisions:
            marker = layout.partial_file(repo.spec, revision.commit)
            if not revision.recorded and marker.exists() and aged(marker):
                old.append(revision.path)
    for dirpath, _, names in os.walk(layout.state_dir):
        old.extend(Path(dirpath) / n for n in names if n.startswith(atomic.TEMP_MARK) and aged(Path(dirpath) / n))
    return old


def dangling(layout: Layout, info: CacheInfo) -> list[Path]:
    """What other tools (`hf cache rm`, `hf cache prune`, a hand-made `rm -rf`) can leave that we made:
    `latest` and alias links to snapshots that are gone, and completion records of snapshots that are gone."""
    found: list[Path] = []
    complete = layout.state_dir / "complete"
    for folder in sorted(complete.iterdir()) if complete.is_dir() else []:
        parsed = parse_folder_name(folder.name)
        spec = RepoSpec(*parsed) if parsed else None
        for record in sorted(folder.glob("*.json")) if spec else []:
            commit = record.name.removesuffix(".json")
            if not layout.snapshot_dir(spec, commit).is_dir():
                found += [p for p in (record, layout.used_file(spec, commit), layout.partial_file(spec, commit))
                          if p.exists()]
    for repo in info.repos:
        found.extend(link for link, target in latest_links(layout, repo.spec).items() if target is None)
    if layout.link_root is not None and layout.link_root.is_dir():
        for dirpath, dirnames, names in os.walk(layout.link_root):
            for name in dirnames + names:
                path = Path(dirpath) / name
                if path.is_symlink() and not path.exists():
                    found.append(path)
    return found

