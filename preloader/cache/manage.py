"""Managing the shared cache, as a Python API: list, status, verify, remove, prune.

    from preloader import cache
    info = cache.list_cache("/cache/hub")
    report = cache.prune("/cache/hub", max_size=200 * 2**30, dry_run=True)

Every function takes a Layout or a cache dir (its state dir and link root then
default as the CLI's do) and returns dataclasses. Removals hold the
repo lock, so they never delete under a running preload.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError, PartialRemovalError, PreloaderError, TransientError, UnsafePathError
from ..spec import RepoSpec
from . import atomic, evict, hashing, publication, records, store
from .dedup import DedupReport, duplicates, replace_with_link
from .evict import Removal, RemovalReport
from .integrity import SnapshotCheck, check_snapshot, drop_bad_files
from .inventory import CacheInfo, RepoInfo, RevisionInfo, find_repo, scan, snapshot_blobs
from .layout import Layout, parse_folder_name
from .locks import RepoLocks
from .selection import EVERYTHING, Selection

logger = logging.getLogger(__name__)


def _layout(target: Layout | str | Path) -> Layout:
    return target if isinstance(target, Layout) else Layout.build(target)


def list_cache(cache: Layout | str | Path) -> CacheInfo:
    """Every repo in the cache with its revisions, sizes (shared blobs once), links and last use."""
    return scan(_layout(cache))


@dataclass
class SnapshotStatus:
    repo_type: str
    repo_id: str
    revision: str
    commit: str | None
    cached: bool
    complete: bool
    missing: list[str]
    path: str | None
    message: str


def status(cache: Layout | str | Path, specs: Iterable[RepoSpec],
           selection: Callable[[RepoSpec], Selection] = lambda spec: EVERYTHING) -> list[SnapshotStatus]:
    """For each request: cached or not, complete or partial (which files are missing), its stable path.
    `selection`: the files each request wants (`Settings.selection`); every file by default."""
    lay = _layout(cache)
    result = []
    for spec in specs:
        state = records.check(lay, spec, selection=selection(spec))
        snapshot = lay.snapshot_dir(spec, state.commit) if state.commit else None
        cached = snapshot is not None and snapshot.is_dir()
        alias = lay.alias_link(spec)
        path = alias if alias is not None and alias.exists() and state.complete else snapshot
        message = f"{spec}: {state.detail}" if state.complete else f"{spec}: not ready: {state.detail}"
        result.append(SnapshotStatus(spec.repo_type, spec.repo_id, spec.revision, state.commit, cached,
                                     state.complete, list(state.missing), str(path) if path and cached else None,
                                     message))
    return result


def _snapshots(info: CacheInfo, lay: Layout, specs: Iterable[RepoSpec] | None) -> list[tuple[RepoInfo, str]]:
    """(repo, commit) pairs a command applies to: all snapshots, or those the specs name."""
    if specs is None:
        return [(repo, rev.commit) for repo in info.repos for rev in repo.revisions]
    chosen = []
    for spec in specs:
        repo = find_repo(info, spec)
        commit = records.local_commit(lay, spec)
        if repo is None or commit is None or commit not in {r.commit for r in repo.revisions}:
            raise NotFoundError(f"{spec} is not in the cache {lay.cache_dir}")
        chosen.append((repo, commit))
    return chosen


def verify(cache: Layout | str | Path, specs: Iterable[RepoSpec] | None = None, *, repair: bool = False,
           hub=None, lock_timeout: float = 3600.0, locking: RepoLocks | None = None) -> list[SnapshotCheck]:
    """Re-hash every file of the chosen snapshots; with `repair`, re-fetch only the bad files.

    A snapshot found broken loses its completion record until repaired.
    `hub` is a `preloader.hub.client.Hub` for this layout, needed only for repair.
    """
    lay = _layout(cache)
    results = []
    for repo, commit in _snapshots(scan(lay), lay, specs):
        spec = RepoSpec(repo.repo_type, repo.repo_id, commit)
        check = check_snapshot(lay, spec, commit)
        if check.unsafe is not None:
            if repair:
                atomic.refuse_escapes(lay.guarded_folders(spec), "repair")
            results.append(check)
            continue
        old = records.read(lay, spec, commit)
        if check.broken or (repair and old is None):
            atomic.remove(lay.record_file(spec, commit), lay.roots)
        if repair and (check.broken or old is None):
            with (locking or RepoLocks.auto(lay)).hold(spec, timeout=lock_timeout):
                _repair(lay, spec, commit, check, hub, old)
        results.append(check)
    return results


def _repair(lay: Layout, spec: RepoSpec, commit: str, check: SnapshotCheck, hub,
            old: records.Record | None = None) -> None:
    _, files = hub.resolve(spec)
    listing = {path: f.size for path, f in files.items()}
    snapshot = lay.snapshot_dir(spec, commit)
    # What the record completed, else what a default run wants (weights=auto) and every file in the folder:
    # repairing a snapshot never fetches the weights its run left on the hub.
    auto = Selection(weights="auto")
    try:
        kept = set(old.complete) if old is not None else set(auto.apply(
            listing, records.indexes_of(lay, spec, commit, records.Record(commit, listing), auto)))
    except PreloaderError:  # a GGUF repo whose quantization a run names: the folder says which
        kept = set()
    wanted = {p: size for p, size in listing.items() if p in kept or os.path.lexists(snapshot / p)}
    check.missing = sorted(set(check.missing) | set(records.missing_on_disk(snapshot, wanted)) - set(check.corrupt)
                           - set(check.truncated))
    bad = check.broken
    stored = drop_bad_files(lay, spec, check)
    hub.fetch(spec, commit, [files[p] for p in bad if p in files])
    for rel, entry in stored.items():  # the good bytes replace the damaged entry, for every repo linking it
        store.publish(lay.blob(spec, files[rel].etag), entry.name, files[rel].size, lay.cache_dir)
    after = check_snapshot(lay, spec, commit)
    still = records.missing_on_disk(snapshot, wanted)
    if after.corrupt or after.truncated or still:
        raise TransientError(f"{spec}: repair did not fix {', '.join(after.corrupt + after.truncated + still)}")
    check.repaired = bad
    publication.publish(lay, spec, commit, record=records.Record(commit, listing, dict(wanted), indexes=dict(
                            old.indexes) if old else {}, selections=list(old.selections) if old else []),
                        tree={path: f.tree_entry() for path, f in files.items()})


def remove(cache: Layout | str | Path, repos: Iterable[RepoSpec] = (), revisions: Iterable[RepoSpec] = (), *,
           everything: bool = False, lock_timeout: float = 3600.0, dry_run: bool = False,
           locking: RepoLocks | None = None) -> RemovalReport:
    """Remove whole `repos`, single `revisions` (branch, tag or commit), or `everything`.

    Blobs another remaining revision uses are kept. Each repo is removed under
    its lock: this waits for a running preload, or raises TransientError after
    `lock_timeout`.
    """
    lay = _layout(cache)
    info = scan(lay)
    report = RemovalReport(dry_run=dry_run)
    targets: dict[Path, tuple[RepoInfo, set[str] | None]] = {}
    if everything:
        targets = {repo.path: (repo, None) for repo in info.repos}
    for spec in repos:
        repo = find_repo(info, spec)
        if repo is None:
            raise NotFoundError(f"{spec.repo_type} {spec.repo_id} is not in the cache {lay.cache_dir}")
        targets[repo.path] = (repo, None)
    for repo, commit in _snapshots(info, lay, revisions):
        current = targets.get(repo.path, (repo, set()))[1]
        if current is not None:
            targets[repo.path] = (repo, current | {commit})
    for repo, _ in targets.values():  # refused before anything goes, dry run or not
        if repo.unsafe is not None:
            raise UnsafePathError(f"refusing to remove {repo.repo_type} {repo.repo_id}: {repo.unsafe}; remove the "
                                  f"link itself (`rm {repo.path}` removes the link, not what it points at)")
    going: set[Path] = set()
    for repo, commits in targets.values():
        if dry_run:
            report.removed += [Removal(repo.repo_type, repo.repo_id, r.commit, r.size, "requested", r.last_used)
                               for r in repo.revisions if commits is None or r.commit in commits]
            going |= evict.going_blobs(lay, repo, commits)
            continue
        with (locking or RepoLocks.auto(lay)).hold(repo.spec, timeout=lock_timeout,
                                                    what=f"{repo.repo_type} {repo.repo_id}"):
            removed, freed, failed = evict.remove_commits(lay, repo.path, commits, "requested")
        report.removed += removed
        report.freed += freed
        report.failed += failed
        report.skipped += failed
    if dry_run:  # the blobs of every repo at once: a file hard-linked or stored once for several counts once
        report.freed = evict.freed_by(going, lay.cache_dir)
    return report


def prune(cache: Layout | str | Path, *, max_size: int | None = None, older_than: float | None = None,
          keep_last: int = 0, keep: Iterable[RepoSpec] = (), grace: float = 3600.0, dry_run: bool = False,
          now: float | None = None, locking: RepoLocks | None = None, leftovers: bool = True) -> RemovalReport:
    """Evict least recently used complete snapshots until the bounds hold; clean stale leftovers.

    Never evicts a snapshot whose repo lock is held (a preload or removal is
    running), one named in `keep`, or one of the `keep_last` most recently used
    of its repo.
    """
    lay = _layout(cache)
    locking = locking or RepoLocks.auto(lay)
    now = time.time() if now is None else now
    info = scan(lay)
    report = RemovalReport(dry_run=dry_run)
    size = info.size
    gone: set[Path] = set()  # the snapshots a dry run has evicted so far: what they shared counts once freed
    for used, repo, rev in _eviction_order(lay, info, keep, keep_last):
        too_old = older_than is not None and now - used > older_than
        too_big = max_size is not None and size > max_size
        if too_old or too_big:
            size -= _evict(lay, locking, repo, rev, "older than bound" if too_old else "over size bound", report,
                           gone)
    report.skipped += [f"{repo.repo_type} {repo.repo_id}: unsafe: {repo.unsafe}" for repo in info.repos
                       if repo.unsafe is not None]
    if leftovers:
        _clean_leftovers(lay, locking, info, grace, now, report)
    return report


def _eviction_order(lay: Layout, info: CacheInfo, keep: Iterable[RepoSpec], keep_last: int
                    ) -> list[tuple[float, RepoInfo, RevisionInfo]]:
    """Complete snapshots that may go, least recently used first."""
    kept = {(s.repo_type, s.repo_id, records.local_commit(lay, s)) for s in keep}
    candidates = []
    for repo in info.repos:
        recent = sorted(repo.revisions, key=lambda r: r.used_or_made, reverse=True)[:keep_last]
        for rev in repo.revisions:
            if rev.complete and rev not in recent and (repo.repo_type, repo.repo_id, rev.commit) not in kept:
                candidates.append((rev.used_or_made, repo, rev))
    return sorted(candidates, key=lambda c: c[0])


def _evict(lay: Layout, locking: RepoLocks, repo: RepoInfo, rev: RevisionInfo, reason: str,
           report: RemovalReport, gone: set[Path]) -> int:
    """Evict one snapshot (or, in a dry run, say so); the bytes that frees. A locked repo is skipped."""
    if report.dry_run:
        report.removed.append(Removal(repo.repo_type, repo.repo_id, rev.commit, rev.size, reason, rev.last_used))
        freed = _exclusive_size(lay, repo, rev, gone)
        gone.add(rev.path)
    else:
        try:
            with locking.hold(repo.spec, timeout=0):
                removed, freed, failed = evict.remove_commits(lay, repo.path, {rev.commit}, reason)
            report.removed += removed
            report.failed += failed
            report.skipped += failed
        except TransientError:
            report.skipped.append(f"{repo.repo_type} {repo.repo_id}@{rev.commit[:12]}: locked")
            return 0
        except UnsafePathError as error:  # a folder turned into a link out since the scan: not followed
            logger.warning("%s", error)
            report.skipped.append(f"{repo.repo_type} {repo.repo_id}@{rev.commit[:12]}: unsafe: {error}")
            return 0
    report.freed += freed
    return freed


def _clean_leftovers(lay: Layout, locking: RepoLocks, info: CacheInfo, grace: float, now: float,
                     report: RemovalReport) -> None:
    """Partial downloads and temp files past `grace`; what other tools left of ours (dangling `latest`
    and alias links, records of snapshots that are gone); blobs no snapshot links to any more."""
    for repo in info.repos:
        if repo.unsafe is None:
            _collect_unused(lay, locking, repo.spec, now - grace, report)
    for path in evict.stale_leftovers(lay, info, grace, now) + evict.dangling(lay, info):
        try:
            atomic.ensure_inside(path, atomic.root_of(path, lay.roots), "delete")
        except UnsafePathError as error:  # reached through a folder leading elsewhere: never followed
            logger.warning("%s", error)
            report.skipped.append(f"{path}: unsafe: {error}")
            continue
        if report.dry_run:
            report.leftovers.append(str(path))
            continue
        spec = _repo_of(lay, path)
        try:
            if spec is not None:  # a preload resuming this repo holds its lock: leave its files alone
                with locking.hold(spec, timeout=0, what=f"{spec.repo_type} {spec.repo_id}"):
                    atomic.remove(path, lay.roots)
            else:
                atomic.remove(path, lay.roots)
        except TransientError:
            report.skipped.append(f"{path}: locked")
            continue
        except UnsafePathError as error:  # its repo has a folder leading out: nothing of it is touched
            logger.warning("%s", error)
            report.skipped.append(f"{path}: unsafe: {error}")
            continue
        except PartialRemovalError as error:
            report.failed.append(f"{path}: {error}")
            report.skipped.append(f"{path}: {error}")
            continue
        report.leftovers.append(str(path))


def _collect_unused(lay: Layout, locking: RepoLocks, spec: RepoSpec, before: float, report: RemovalReport) -> None:
    """Blobs no snapshot links to (what `hf cache rm` of a revision leaves while `latest` points there)."""
    unused = evict.unused_blobs(lay, spec, older_than=before)
    if not unused:
        return
    if report.dry_run:
        report.leftovers += [str(blob) for blob in unused]
        report.freed += evict.freed_by(set(unused), lay.cache_dir)
        return
    try:
        with locking.hold(spec, timeout=0, what=f"{spec.repo_type} {spec.repo_id}"):
            still = set(evict.unused_blobs(lay, spec, older_than=before))
            freed, failed = evict.collect_blobs(lay, spec, older_than=before)
            report.freed += freed
            report.failed += failed
            report.skipped += failed
    except TransientError:
        report.skipped.append(f"{spec.repo_type} {spec.repo_id}: unused blobs: locked")
        return
    except UnsafePathError as error:
        logger.warning("%s", error)
        report.skipped.append(f"{spec.repo_type} {spec.repo_id}: unsafe: {error}")
        return
    report.leftovers += [str(blob) for blob in unused if blob in still and not os.path.lexists(blob)]


def _repo_of(lay: Layout, path: Path) -> RepoSpec | None:
    """The repo a leftover belongs to: `<cache>/<repo folder>/...` or `<state>/<kind>/<repo folder>/...`."""
    for base, depth in ((lay.state_dir, 1), (lay.cache_dir, 0)):  # the state dir may lie inside the cache
        try:
            parts = path.relative_to(base).parts
        except ValueError:
            continue
        parsed = parse_folder_name(parts[depth]) if len(parts) > depth + 1 else None
        return RepoSpec(*parsed) if parsed else None
    return None


def _exclusive_size(lay: Layout, repo: RepoInfo, rev: RevisionInfo, gone: set[Path]) -> int:
    """What evicting this snapshot frees once the snapshots in `gone` are evicted too (dry runs): blobs no
    other remaining snapshot of the repo links, and store entries whose every link is going."""
    mine = set(snapshot_blobs(rev.path).values())
    others = set()
    for other in repo.revisions:
        if other.path != rev.path and other.path not in gone:
            others |= set(snapshot_blobs(other.path).values())
    going = mine - others
    everything_going = going | {blob for path in gone for blob in snapshot_blobs(path).values()}
    return sum(store.freed_with(blob, everything_going, lay.cache_dir) for blob in going)


def dedup(cache: Layout | str | Path, *, dry_run: bool = False, lock_timeout: float = 0,
          locking: RepoLocks | None = None) -> DedupReport:
    """Make byte-identical blobs of several repos one file (hard links on one filesystem); report the
    bytes saved. The copy kept is checked against its etag first; a repo whose lock is held is skipped."""
    lay = _layout(cache)
    locking = locking or RepoLocks.auto(lay)
    report = DedupReport(dry_run=dry_run)
    for etag, paths in duplicates(lay).items():
        keep = next((p for p in paths if hashing.matches(p, etag)), None)
        if keep is None:
            continue  # no good copy: `preloader verify --repair` first
        report.linked[etag] = [str(p) for p in paths]
        for other in paths:
            if other == keep:
                continue
            if dry_run:
                report.saved += other.stat().st_size if other.stat().st_nlink == 1 else 0
                continue
            spec = _repo_of(lay, other)
            try:
                with locking.hold(spec, timeout=lock_timeout, what=f"{spec.repo_type} {spec.repo_id}"):
                    report.saved += replace_with_link(keep, other, lay.cache_dir)
            except TransientError:
                report.skipped.append(f"{other}: locked")
            except UnsafePathError as error:
                logger.warning("%s", error)
                report.skipped.append(f"{other}: unsafe: {error}")
    return report
