"""The preload itself: for each requested repo, resolve, lock, fetch what is missing, record, link.

A snapshot is only ever *published* (completion record, refs, `latest`,
alias) after every wanted file is on disk at its expected size, and each of
those is an atomic rename, so a reader sees either the old state or the new.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import atomic, locks, records
from .config import Settings
from .errors import DiskError, NotFoundError, TransientError
from .layout import Layout
from .logs import Clock, event
from .records import Record
from .spec import RepoSpec, is_commit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreloadResult:
    """What one requested repo ended up as."""

    repo_type: str
    repo_id: str
    revision: str
    commit: str
    path: Path
    alias: Path | None
    files: int
    bytes_fetched: int
    bytes_reused: int
    seconds: float
    source: str  # "hub" (fetched or checked online), "cache" (no network), "cache-fallback" (hub failed)

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["path"] = str(self.path)
        data["alias"] = str(self.alias) if self.alias else None
        return data


class Deadline:
    """Seconds left until an optional overall deadline."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.end = None if not seconds else clock() + seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - self.clock()


def layout_for(settings: Settings) -> Layout:
    return Layout(settings.cache_dir, settings.state_dir, settings.link_root)


def local_commit(layout: Layout, spec: RepoSpec) -> str | None:
    """The commit this request means without asking the hub: a pinned commit, or what refs/ says."""
    if spec.is_commit:
        return spec.revision
    try:
        commit = layout.ref_file(spec).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if is_commit(commit) else None


def missing_detail(layout: Layout, spec: RepoSpec, commit: str | None, include=(), exclude=()) -> str:
    """Why a cached snapshot is not usable, for error messages."""
    if commit is None:
        return "never downloaded here (no ref for this revision)"
    record = records.read(layout, spec, commit)
    if record is None:
        return f"commit {commit[:12]} has no completion record (partial download)"
    wanted = records.select(record.listing, include, exclude)
    gone = [p for p in wanted if record.complete.get(p) != wanted[p]]
    gone += records.missing_on_disk(layout.snapshot_dir(spec, commit), wanted)
    gone = sorted(set(gone))
    shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
    return f"commit {commit[:12]} is missing {len(gone)} file(s): {shown}"


@dataclass
class Pending:
    """A repo resolved online whose snapshot still needs files."""

    spec: RepoSpec
    commit: str
    files: dict  # path -> transfer.RemoteFile, the commit's whole listing
    wanted: dict[str, int]
    clock: Clock

    def missing(self, layout: Layout) -> list:
        return [self.files[p] for p in records.missing_on_disk(layout.snapshot_dir(self.spec, self.commit),
                                                              self.wanted)]


class Preloader:
    """Runs a plan against one cache. Never prints or exits: it logs and raises PreloaderError."""

    def __init__(self, settings: Settings, *, progress: bool = False, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.layout = layout_for(settings)
        self.deadline = Deadline(settings.timeout)
        self.progress = progress
        self.sleep = sleep
        self._hub = None

    @property
    def hub(self):
        if self._hub is None:
            from .hub import Hub  # deferred: a cached start never imports huggingface_hub

            s = self.settings
            self._hub = Hub(s.endpoint, s.token, workers=s.workers, transfer=s.transfer, connections=s.connections,
                            parallel_threshold=s.parallel_threshold, state_dir=s.state_dir,
                            lock_timeout=s.lock_timeout, read_timeout=s.read_timeout)
        return self._hub

    def run(self) -> list[PreloadResult]:
        """Resolve every repo first, check the space for all of it, then fetch; `latest` last."""
        clock = Clock()
        outcomes = [self.prepare(spec) for spec in self.settings.repos]
        pending = [o for o in outcomes if isinstance(o, Pending)]
        results = []
        if pending:
            total = self.preflight(pending)
            from .progress import Progress

            with Progress(total, tty=self.progress) as progress:
                done = {id(p): self.download(p, progress) for p in pending}
            results = [done[id(o)] if isinstance(o, Pending) else o for o in outcomes]
        else:
            results = outcomes
        linked_latest: set[tuple[str, str]] = set()
        for result in results:
            key = (result.repo_type, result.repo_id)
            if key not in linked_latest:  # `latest` follows the repo's first entry in the plan
                linked_latest.add(key)
                atomic.symlink(result.commit, self.layout.latest_link(RepoSpec(*key)), root=self.layout.cache_dir)
        event(
            logger, "done", repos=len(results),
            bytes_fetched=sum(r.bytes_fetched for r in results),
            bytes_reused=sum(r.bytes_reused for r in results), secs=clock.seconds(),
        )
        return results

    def complete(self, spec: RepoSpec, commit: str | None) -> bool:
        s = self.settings
        return commit is not None and records.is_complete(self.layout, spec, commit, s.include, s.exclude)

    def prepare(self, spec: RepoSpec) -> PreloadResult | Pending:
        """Settle a repo from the cache if possible; else resolve it online and say what it needs."""
        clock = Clock()
        s = self.settings
        cached = local_commit(self.layout, spec)
        cached_ok = self.complete(spec, cached)
        if cached_ok and (spec.is_commit or s.offline):
            return self.publish(spec, cached, clock, fetched=0, source="cache")
        if s.offline:
            raise TransientError(
                f"{spec.repo_type} {spec.repo_id}@{spec.revision} is not complete in the cache and "
                f"offline mode is on ({s.offline_source}): "
                + missing_detail(self.layout, spec, cached, s.include, s.exclude)
            )
        from .hub import HubUnreachable
        from .retry import retrying

        # With a complete snapshot at hand, one failed lookup is enough to start from it:
        # a cold start should not spend minutes retrying a hub it does not need.
        attempts = 1 if cached_ok else s.retries
        try:
            commit, files = retrying(attempts, what=str(spec), seconds_left=self.deadline.left,
                                     sleep=self.sleep)(self.hub.resolve, spec)
        except HubUnreachable as error:
            if not cached_ok:
                raise TransientError(
                    f"{error}; no complete snapshot to fall back on: "
                    + missing_detail(self.layout, spec, cached, s.include, s.exclude)
                ) from None
            event(logger, "hub.unreachable", logging.WARNING, repo=spec.repo_id, rev=spec.revision,
                  using=cached, error=error)
            return self.publish(spec, cached, clock, fetched=0, source="cache-fallback")
        event(logger, "resolve", repo=spec.repo_id, type=spec.repo_type, rev=spec.revision, commit=commit)
        listing = {path: f.size for path, f in files.items()}
        wanted = records.select(listing, s.include, s.exclude)
        if not wanted:
            raise NotFoundError(
                f"{spec.repo_type} {spec.repo_id}@{spec.revision}: no file matches "
                f"include={list(s.include)} exclude={list(s.exclude)}; check PRELOADER_INCLUDE/EXCLUDE"
            )
        if self.complete(spec, commit):
            return self.publish(spec, commit, clock, fetched=0, source="hub")
        return Pending(spec, commit, files, wanted, clock)

    def preflight(self, pending: list[Pending]) -> int:
        """Bytes still to fetch for the whole plan; DiskError (74) before any byte is written if they do not fit."""
        from .inventory import free_space

        needed: dict[str, int] = {}
        for p in pending:
            blobs = self.layout.blobs_dir(p.spec)
            for f in p.missing(self.layout):
                if not (blobs / f.etag).exists():
                    needed[f"{blobs}/{f.etag}"] = f.size
        total = sum(needed.values())
        free = free_space(self.settings.cache_dir)
        margin = self.settings.min_free
        if free is not None and total + margin > free:
            raise DiskError(
                f"not enough space on the cache volume {self.settings.cache_dir}: the plan needs {total:,} bytes "
                f"more, {free:,} are free and {margin:,} must stay free (PRELOADER_MIN_FREE); "
                "free space (`preloader prune`) or use a bigger volume"
            )
        return total

    def download(self, p: Pending, progress) -> PreloadResult:
        with locks.hold(self.layout.lock_file(p.spec), timeout=self.settings.lock_timeout, what=str(p.spec),
                        deadline=self.deadline.left):
            # Another process may have finished it while we waited for the lock.
            fetched = 0 if self.complete(p.spec, p.commit) else self.fetch(p, progress)
            return self.publish(p.spec, p.commit, p.clock, fetched=fetched, source="hub")

    def fetch(self, p: Pending, progress) -> int:
        """Download the wanted files not yet on disk and record the snapshot complete; return bytes fetched."""
        from .retry import retrying

        spec, commit = p.spec, p.commit
        todo = p.missing(self.layout)
        total = sum(f.size for f in todo)
        progress.begin_repo(spec.repo_id, total)
        event(logger, "fetch.start", repo=spec.repo_id, rev=spec.revision, commit=commit,
              files=len(todo), bytes=total)
        clock = Clock()
        records.mark_started(self.layout, spec, commit)

        def attempt() -> None:
            self.hub.fetch(spec, commit, p.missing(self.layout), self.settings.cache_dir, on_bytes=progress.add)

        try:
            retrying(self.settings.retries, what=str(spec), seconds_left=self.deadline.left,
                     sleep=self.sleep)(attempt)
        except TransientError:
            raise  # the hub gave out: keep the ranges on disk, the next run resumes them
        except BaseException:
            remove_partials(self.layout, spec)  # a signal, the deadline, a full disk: leave nothing half-done
            raise
        snapshot = self.layout.snapshot_dir(spec, commit)
        still = records.missing_on_disk(snapshot, p.wanted)
        if still:
            raise DiskError(f"{spec}: files missing or of the wrong size after download: {', '.join(still[:5])}")
        record = records.read(self.layout, spec, commit) or Record(commit, {})
        record.listing = {path: f.size for path, f in p.files.items()}
        record.complete.update(p.wanted)
        records.write(self.layout, spec, record)
        records.clear_started(self.layout, spec, commit)
        secs = clock.seconds()
        event(logger, "fetch.done", repo=spec.repo_id, rev=spec.revision, commit=commit, files=len(todo),
              bytes=total, secs=secs, rate=f"{total / secs / 1e6:.1f}MB/s" if secs else "-")
        return total

    def publish(self, spec: RepoSpec, commit: str, clock: Clock, *, fetched: int, source: str) -> PreloadResult:
        """Point refs and the alias at a complete snapshot; report the result."""
        s = self.settings
        snapshot = self.layout.snapshot_dir(spec, commit)
        if not spec.is_commit:
            ref = self.layout.ref_file(spec)
            if local_commit(self.layout, spec) != commit:
                atomic.write_text(ref, commit, root=self.layout.cache_dir)
        alias = self.layout.alias_link(spec)
        if alias is not None:
            atomic.symlink(atomic.relative_target(snapshot, alias), alias, root=self.layout.link_root)
        record = records.read(self.layout, spec, commit)
        records.mark_used(self.layout, spec, commit)
        wanted = records.select(record.listing, s.include, s.exclude) if record else {}
        size = sum(wanted.values())
        result = PreloadResult(
            spec.repo_type, spec.repo_id, spec.revision, commit, snapshot, alias, len(wanted),
            fetched, size - fetched, clock.seconds(), source,
        )
        event(logger, "ready", repo=spec.repo_id, type=spec.repo_type, rev=spec.revision, commit=commit,
              files=result.files, fetched=fetched, reused=result.bytes_reused, source=source,
              secs=result.seconds)
        return result


def remove_partials(layout: Layout, spec: RepoSpec) -> None:
    """Remove half-written blobs, their range maps and our temp files; the caller holds the repo lock."""
    blobs = layout.blobs_dir(spec)
    maps = layout.state_dir / "transfers" / blobs.parent.name
    for folder, partial in ((blobs, lambda n: n.endswith(".incomplete")), (maps, lambda n: n.endswith(".json"))):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if partial(name) or name.startswith(atomic.TEMP_MARK):
                (folder / name).unlink(missing_ok=True)


def wait_ready(settings: Settings, *, timeout: float | None, poll: float = 1.0,
               sleep: Callable[[float], None] = time.sleep) -> list[PreloadResult]:
    """Block until every requested snapshot is complete in the cache (no network); TransientError at timeout."""
    layout = layout_for(settings)
    clock = Clock()
    deadline = Deadline(timeout)
    logged = 0.0
    while True:
        pending = [s for s in settings.repos
                   if not records.is_complete(layout, s, local_commit(layout, s) or "", settings.include,
                                              settings.exclude)]
        if not pending:
            break
        left = deadline.left()
        if left is not None and left <= 0:
            raise TransientError(
                f"timed out after {clock.seconds():.0f} s waiting for "
                + "; ".join(f"{s}: {missing_detail(layout, s, local_commit(layout, s))}" for s in pending)
            )
        if clock.seconds() - logged >= locks.WAIT_LOG_INTERVAL:
            logged = clock.seconds()
            event(logger, "wait", pending=",".join(str(s) for s in pending), elapsed=f"{logged:.0f}s")
        sleep(poll if left is None else max(0.0, min(poll, left)))
    results = []
    for spec in settings.repos:
        commit = local_commit(layout, spec)
        record = records.read(layout, spec, commit)
        records.mark_used(layout, spec, commit)
        wanted = records.select(record.listing, settings.include, settings.exclude)
        alias = layout.alias_link(spec)
        results.append(PreloadResult(
            spec.repo_type, spec.repo_id, spec.revision, commit, layout.snapshot_dir(spec, commit),
            alias if alias is not None and alias.exists() else None, len(wanted), 0,
            sum(wanted.values()), clock.seconds(), "cache",
        ))
    event(logger, "done", repos=len(results), waited=clock.seconds())
    return results
