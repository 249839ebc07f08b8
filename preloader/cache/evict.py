"""Removing snapshots safely: links first, then records, then files, then blobs nobody uses.

Every removal holds the repo lock, so it never runs under a preload of the
same repo. Readers that resolved a link before it went keep their open files.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import RepoSpec
from . import atomic, records
from .inventory import CacheInfo, RepoInfo, RevisionInfo, read_refs, scan_repo, snapshot_blobs
from .layout import PARTIAL_SUFFIX, STATE_KINDS, Layout


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
    skipped: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    freed: int = 0
    dry_run: bool = False


def unlink_links_to(layout: Layout, spec: RepoSpec, repo: RepoInfo, commit: str) -> None:
    """Remove refs, `latest` and aliases that point at `commit`."""
    refs_dir = layout.refs_dir(spec)
    for name in read_refs(layout, spec).get(commit, []):
        (refs_dir / name).unlink(missing_ok=True)
    if repo.latest == commit:
        layout.latest_link(spec).unlink(missing_ok=True)
    for revision in repo.revisions:
        if revision.commit == commit:
            for alias in revision.aliases:
                Path(alias).unlink(missing_ok=True)


def remove_revision(layout: Layout, repo: RepoInfo, revision: RevisionInfo) -> None:
    """Remove one snapshot; the caller holds the repo lock."""
    spec = repo.spec
    unlink_links_to(layout, spec, repo, revision.commit)
    records.forget(layout, spec, revision.commit)
    shutil.rmtree(revision.path, ignore_errors=True)


def collect_blobs(layout: Layout, spec: RepoSpec) -> int:
    """Delete blobs no remaining snapshot links to; return bytes freed. Drop the repo folder if empty."""
    repo_dir = layout.repo_dir(spec)
    spec_dir = layout.blobs_dir(spec)
    used: set[Path] = set()
    snapshots = layout.snapshots_dir(spec)
    for entry in os.listdir(snapshots) if snapshots.is_dir() else []:
        path = snapshots / entry
        if path.is_dir() and not path.is_symlink():
            used.update(snapshot_blobs(path).values())
    freed = 0
    for name in os.listdir(spec_dir) if spec_dir.is_dir() else []:
        blob = spec_dir / name
        # A download in flight writes `.incomplete` files; prune's grace period decides about those.
        if blob not in used and not name.endswith(PARTIAL_SUFFIX) and not name.startswith(atomic.TEMP_MARK):
            try:
                freed += blob.stat().st_size
                blob.unlink()
            except OSError:
                pass
    if not used and not any(n.endswith(PARTIAL_SUFFIX) for n in (os.listdir(spec_dir) if spec_dir.is_dir() else [])):
        shutil.rmtree(repo_dir, ignore_errors=True)
        for kind in STATE_KINDS:
            shutil.rmtree(layout.state_folder(kind, spec), ignore_errors=True)
    return freed


def remove_commits(layout: Layout, repo_dir: Path, commits: set[str] | None, reason: str) -> list[Removal]:
    """Remove these commits' snapshots (all if None) of one repo, then its unused blobs. Hold the lock."""
    repo = scan_repo(layout, repo_dir)
    if repo is None:
        return []
    removed = []
    for revision in repo.revisions:
        if commits is None or revision.commit in commits:
            remove_revision(layout, repo, revision)
            removed.append(Removal(repo.repo_type, repo.repo_id, revision.commit, revision.size, reason,
                                   revision.last_used))
    if commits is None:
        layout.latest_link(repo.spec).unlink(missing_ok=True)
        shutil.rmtree(layout.refs_dir(repo.spec), ignore_errors=True)
    collect_blobs(layout, repo.spec)
    return removed


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
