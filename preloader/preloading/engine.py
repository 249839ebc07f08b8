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
from dataclasses import dataclass, field

from ..cache import atomic, locks, publication, records
from ..cache.layout import PARTIAL_SUFFIX, Layout
from ..cache.records import Completeness, Record
from ..config import Settings
from ..errors import ConfigError, DiskError, NotCachedError, NotFoundError, PermissionDeniedError, TransientError
from ..logs import Clock, event
from ..metrics import Metrics
from ..spec import RepoSpec
from .deadline import Deadline
from .heal import remove_damaged
from .policy import before_download
from .results import PreloadResult
from .tiers import Tiers

logger = logging.getLogger(__name__)


@dataclass
class Pending:
    """A repo resolved online whose snapshot still needs files."""

    spec: RepoSpec
    commit: str
    files: dict  # path -> hub.listing.RemoteFile, the commit's whole listing
    wanted: dict[str, int]
    clock: Clock
    indexes: dict = field(default_factory=dict)  # index path -> the shards its weight_map names

    def missing(self, layout: Layout) -> list:
        return [self.files[p] for p in records.missing_on_disk(layout.snapshot_dir(self.spec, self.commit),
                                                              self.wanted)]


class Preloader:
    """Runs a plan against one cache. Never prints or exits: it logs and raises PreloaderError."""

    def __init__(self, settings: Settings, *, progress: bool = False, sleep: Callable[[float], None] = time.sleep,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()  # fed whether or not anyone exports it: one code path
        self.layout = settings.layout
        self.deadline = Deadline(settings.timeout)
        self.progress = progress
        self.sleep = sleep
        self.optional = atomic.DispensableWrites()
        self.locks = locks.RepoLocks.auto(self.layout, settings.lock, settings.lease_stale)
        self.tiers = Tiers(settings)
        self._hub = None
        self.skipped: dict[RepoSpec, dict[str, int]] = {}  # what `weights=auto` left on the hub, per repo

    @property
    def hub(self):
        if self._hub is None:
            from ..hub.client import Hub  # deferred: a cached start never imports the hub client

            self._hub = Hub.from_settings(self.settings)
        return self._hub

    def run(self) -> list[PreloadResult]:
        """Resolve every repo first, check the space for all of it, then fetch; `latest` last."""
        clock = Clock()
        check_requested(self.settings)
        outcomes = [self.prepare(spec) for spec in self.settings.repos]
        before_download(self.settings, self.layout, outcomes)  # lock file, pickle policy: 79 before any byte
        pending = [o for o in outcomes if isinstance(o, Pending)]
        if pending:
            self.require_writable(pending)
            total = self.preflight(pending)
            from .progress import Progress  # downloading from here on: what a cached start never needs
            with Progress(total, tty=self.progress) as progress:
                done = {id(p): self.download(p, progress) for p in pending}
            outcomes = [done[id(o)] if isinstance(o, Pending) else o for o in outcomes]
        self.log_selection()
        self.link_latest(outcomes)
        self.metrics.succeeded()
        event(logger, "done", repos=len(outcomes), bytes_fetched=sum(r.bytes_fetched for r in outcomes),
              bytes_reused=sum(r.bytes_reused for r in outcomes), secs=clock.seconds())
        return outcomes

    def link_latest(self, results: list[PreloadResult]) -> None:
        """`latest` follows the repo's first entry in the plan, where PRELOADER_LATEST puts it; a link an
        earlier placement left elsewhere goes."""
        linked: set[tuple[str, str]] = set()
        for result in results:
            spec = RepoSpec(result.repo_type, result.repo_id)
            if (spec.repo_type, spec.repo_id) in linked or result.hub_cache != self.layout.cache_dir:
                continue  # a snapshot used where it is, in a read-only tier: nothing of ours to link
            linked.add((spec.repo_type, spec.repo_id))
            publication.link_latest(self.layout, spec, result.commit, self.optional)

    def state(self, spec: RepoSpec, commit: str | None = None) -> Completeness:
        """What `commit` (default: what the request means locally) lacks for this plan's selection."""
        s = self.settings
        if commit is None:
            return records.check(self.layout, spec, selection=s.selection(spec))
        return records.check(self.layout, spec, commit, selection=s.selection(spec))

    def prepare(self, spec: RepoSpec) -> PreloadResult | Pending:
        """Settle a repo from the cache if possible; else resolve it online and say what it needs."""
        clock = Clock()
        s = self.settings
        self.metrics.state(spec, "resolving")
        locked = s.lockfile.commit(spec) if s.lockfile else None  # the lock file's commit is the resolved one
        if spec.names_quant and not self.layout.ref_file(spec).exists():
            spec = spec.as_quant()  # no branch or tag of that name here: the hub may still say there is one
        cached = self.state(spec, locked)
        if cached.complete and (spec.is_commit or s.offline or locked):
            self.note_skipped(cached.spec, self.cached_choice(cached))
            return self.publish(cached, clock, fetched=0, source="cache")
        tiered = None if cached.complete or not (spec.is_commit or s.offline or locked) \
            else self.from_tier(spec, clock, locked)
        if tiered is not None:
            return tiered
        if s.offline:
            raise NotCachedError(f"{spec.repo_type} {spec.repo_id}@{spec.revision} is not complete in the cache "
                                 f"and offline mode is on ({s.offline_source}): {cached.detail}")
        from ..hub.errors import HubUnreachable  # the hub client's modules: not on a cached start
        from .retry import retrying

        # With a complete snapshot at hand (here or in a tier), one failed lookup is enough to start from
        # it: a cold start should not spend minutes retrying a hub it does not need.
        attempts = 1 if cached.complete or self.tiers.find(spec) is not None else s.retries
        try:
            spec, commit, files = retrying(attempts, what=str(spec), seconds_left=self.deadline.left,
                                           sleep=self.sleep, on_retry=self.metrics.retry)(self.resolve, spec, locked)
        except HubUnreachable as error:
            tiered = None if cached.complete else self.from_tier(spec, clock, source="tier-fallback")
            if tiered is not None:
                event(logger, "hub.unreachable", logging.WARNING, repo=spec.repo_id, rev=spec.revision,
                      using=tiered.commit, error=error)
                return tiered
            if not cached.complete:
                raise TransientError(f"{error}; no complete snapshot to fall back on: {cached.detail}") from None
            event(logger, "hub.unreachable", logging.WARNING, repo=spec.repo_id, rev=spec.revision,
                  using=cached.commit, error=error)
            return self.publish(cached, clock, fetched=0, source="cache-fallback")
        event(logger, "resolve", repo=spec.repo_id, type=spec.repo_type, rev=spec.revision, commit=commit,
              **({"quant": spec.quant} if spec.quant else {}))
        choice, indexes = self.choose(spec, commit, files)
        self.note_skipped(spec, choice)
        online = self.state(spec, commit)
        if online.complete:
            return self.publish(online, clock, fetched=0, source="hub")
        return self.from_tier(spec, clock, commit) or Pending(spec, commit, files, choice.wanted, clock,
                                                              {p: sorted(v) for p, v in indexes.items()})

    def choose(self, spec: RepoSpec, commit: str, files: dict):
        """(the plan's selection of a resolved commit's files, the shards each index names); NotFoundError (66)
        when it selects nothing or names a quantization the repo does not have."""
        from .retry import retrying

        s = self.settings
        selection = s.selection(spec)
        listing = {path: f.size for path, f in files.items()}
        indexes = retrying(s.retries, what=str(spec), seconds_left=self.deadline.left, sleep=self.sleep,
                           on_retry=self.metrics.retry)(self.indexes, spec, commit, files,
                                                        selection.needs_indexes(listing))
        choice = selection.choose(listing, indexes)
        if spec.quant and selection.auto and choice.quant is None:
            raise NotFoundError(f"{spec.repo_type} {spec.repo_id}: no branch or tag {spec.quant}, and no GGUF files "
                                f"to choose the quantization {spec.quant} from; check the revision")
        if not choice.wanted:
            raise NotFoundError(f"{spec.repo_type} {spec.repo_id}@{spec.revision}: no file matches "
                                f"{selection.describe()}")
        return choice, indexes

    def cached_choice(self, state: Completeness):
        """What the selection makes of a complete snapshot's recorded listing (no network)."""
        selection = self.settings.selection(state.spec)
        return selection.choose(state.record.listing,
                                records.indexes_of(self.layout, state.spec, state.commit, state.record, selection))

    def note_skipped(self, spec: RepoSpec, choice) -> None:
        """One line per repo naming what `weights=auto` left on the hub and the bytes saved."""
        if not choice.skipped:
            return
        self.skipped[spec] = choice.skipped
        names = sorted(choice.skipped)
        event(logger, "weights.skipped", repo=spec.repo_id, rev=spec.revision, files=len(names),
              bytes=sum(choice.skipped.values()), quant=choice.quant or "-",
              paths=",".join(names[:8]) + (f",+{len(names) - 8} more" if len(names) > 8 else ""))

    def log_selection(self) -> None:
        """Once per run: a default run fetches only what the service loads; say so, and how to get the rest."""
        if not self.skipped:
            return
        names = sorted({path.rsplit("/", 1)[-1] for skipped in self.skipped.values() for path in skipped})
        logger.info("weights=auto skipped %d file(s), %s bytes, the service does not load (%s%s) in %d repo(s); "
                    "PRELOADER_WEIGHTS=all fetches every file", sum(map(len, self.skipped.values())),
                    f"{sum(sum(v.values()) for v in self.skipped.values()):,}", ", ".join(names[:6]),
                    f" and {len(names) - 6} more" if len(names) > 6 else "", len(self.skipped))

    def resolve(self, spec: RepoSpec, locked: str | None = None) -> tuple[RepoSpec, str, dict]:
        """(what the request means on the hub, its commit, the commit's files). `user/name:Q4_K_M` is the branch
        or tag of that name where there is one, else `main` with that GGUF quantization. `locked`: the lock
        file's commit for the request, looked up instead of what the revision is now."""
        self.metrics.add("preloader_origin_requests_total")
        if locked:
            return (spec, *self.hub.resolve(RepoSpec(spec.repo_type, spec.repo_id, locked, spec.quant)))
        literal = RepoSpec(spec.repo_type, spec.repo_id, spec.quant) if spec.quant else spec
        if not literal.names_quant:
            return (spec, *self.hub.resolve(spec))
        try:
            return (RepoSpec(literal.repo_type, literal.repo_id, literal.revision, ""), *self.hub.resolve(literal))
        except NotFoundError as error:
            try:
                return (literal.as_quant(), *self.hub.resolve(literal.as_quant()))
            except NotFoundError:
                raise error from None

    def indexes(self, spec: RepoSpec, commit: str, files: dict, paths: tuple[str, ...]) -> dict:
        """The shards each index file names: from a copy on disk, else read from the hub (a few KiB each)."""
        found = {}
        for path in paths:
            shards = records.read_index(self.layout.snapshot_dir(spec, commit) / path, path, self.layout.cache_dir)
            if shards is None:
                self.metrics.add("preloader_origin_requests_total")
                shards = records.index_shards(self.hub.read(spec, commit, files[path]), path)
            if shards is not None:
                found[path] = shards
        return found

    def from_tier(self, spec: RepoSpec, clock: Clock, commit: str | None = None,
                  source: str = "tier") -> PreloadResult | None:
        """A snapshot complete in a read-only tier: linked into the writable cache, or used where it is
        when there is none (PRELOADER_READ_CACHES)."""
        found = self.tiers.find(spec, commit)
        if found is None:
            return None
        tier, state = found
        if not atomic.writable(self.layout.cache_dir):
            return self.ready(PreloadResult.of(tier, state, seconds=clock.seconds(), source=source))
        with self.locks.hold(spec, timeout=self.settings.lock_timeout, deadline=self.deadline.left):
            linked = self.tiers.link(tier, state, self.layout)
        return self.publish(linked, clock, fetched=0, source=source)

    def require_writable(self, pending: list[Pending]) -> None:
        """Files to fetch into a cache this process cannot write: one clear error (74) before trying."""
        if atomic.writable(self.layout.cache_dir):
            return
        missing = "; ".join(f"{p.spec}: {self.state(p.spec, p.commit).detail}" for p in pending)
        if atomic.on_read_only_volume(self.layout.cache_dir):  # "read-only" only when the mount is
            raise PermissionDeniedError(
                f"the cache {self.layout.cache_dir} is on a volume mounted read-only here and needs files: "
                f"{missing}; preload it from a node that mounts it read-write (`preloader run`), then start this one")
        raise PermissionDeniedError(
            f"the cache {self.layout.cache_dir} is not writable by uid {os.geteuid()} and needs files: {missing}; "
            "give this user access (chown or chmod the volume, or a shared group with umask 002), or preload it "
            "as its owner (`preloader run`), then start this one")

    def preflight(self, pending: list[Pending]) -> int:
        """Bytes still to fetch for the whole plan; DiskError (74) before any byte is written if they do not fit.
        With PRELOADER_MAX_CACHE_SIZE, least recently used snapshots make room first (`capacity.make_room`)."""
        needed: dict[str, int] = {}
        for p in pending:
            for f in p.missing(self.layout):
                blob = self.layout.blob(p.spec, f.etag)
                if not blob.exists() or blob.stat().st_size != f.size:  # a damaged blob is fetched again
                    needed[str(blob)] = f.size
        total = sum(needed.values())
        from ..cache.inventory import free_space  # downloading from here on

        free = free_space(self.settings.cache_dir)
        margin = self.settings.min_free
        if self.settings.max_cache_size:
            from .capacity import make_room  # capacity imports this module: not at the top

            if make_room(self.layout, self.settings.max_cache_size, self.settings.repos, needed=total, free=free,
                         margin=margin, locking=self.locks):
                free = free_space(self.settings.cache_dir)
        if free is not None and total + margin > free:
            raise DiskError(
                f"not enough space on the cache volume {self.settings.cache_dir}: the plan needs {total:,} bytes "
                f"more, {free:,} are free and {margin:,} must stay free (PRELOADER_MIN_FREE); "
                "free space (`preloader prune`) or use a bigger volume"
            )
        return total

    def download(self, p: Pending, progress) -> PreloadResult:
        self.metrics.state(p.spec, "waiting_lock")
        asked = time.monotonic()
        with self.locks.hold(p.spec, timeout=self.settings.lock_timeout, deadline=self.deadline.left):
            self.metrics.add("preloader_lock_wait_seconds_total", time.monotonic() - asked)
            # Another process may have finished it while we waited for the lock.
            fetched = 0 if self.state(p.spec, p.commit).complete else self.fetch(p, progress)
            return self.publish(self.state(p.spec, p.commit), p.clock, fetched=fetched, source="hub")

    def fetch(self, p: Pending, progress) -> int:
        """Download the wanted files not yet on disk and record the snapshot complete; return bytes fetched."""
        from .retry import retrying

        spec, commit = p.spec, p.commit
        remove_damaged(self.layout, spec, commit, p.files, p.wanted)
        todo = p.missing(self.layout)
        total = sum(f.size for f in todo)
        progress.begin_repo(spec.repo_id, total)
        event(logger, "fetch.start", repo=spec.repo_id, rev=spec.revision, commit=commit,
              files=len(todo), bytes=total)
        clock = Clock()
        records.mark_started(self.layout, spec, commit)
        received = [0]  # over the network, every attempt; a blob linked from another repo is not counted
        self.metrics.state(spec, "downloading")
        self.metrics.wanted(spec, files=len(p.wanted), size=sum(p.wanted.values()),
                            done_files=len(p.wanted) - len(todo), on_disk=sum(p.wanted.values()) - total)

        def on_bytes(count: int) -> None:
            received[0] += count
            progress.add(count)
            self.metrics.received(spec, count)

        def attempt() -> None:
            missing = p.missing(self.layout)
            self.metrics.add("preloader_origin_requests_total", len(missing))
            self.hub.fetch(spec, commit, missing, on_bytes=on_bytes)

        try:
            retrying(self.settings.retries, what=str(spec), seconds_left=self.deadline.left, sleep=self.sleep,
                     on_retry=self.metrics.retry)(attempt)
        except TransientError:
            raise  # the hub gave out, or another process holds a blob: keep the ranges, the next run resumes them
        except BaseException:
            # A signal, the deadline, a full disk: leave nothing half-done. Threads still in a read are not
            # waited for, but write nothing more once stopped.
            if self._hub is not None:
                self._hub.stop_writing()
            # Whole files stay (a partial never counts as one): measured first, so that nothing comes between
            # removing the partials and the exit.
            self.metrics.discarded(spec, sum(p.wanted.values()) - sum(f.size for f in p.missing(self.layout)))
            remove_partials(self.layout, spec)
            if not self.layout.snapshot_dir(spec, commit).exists():
                records.clear_started(self.layout, spec, commit)  # nothing of it on disk: nothing to mark
            raise
        self.metrics.state(spec, "verifying")
        still = p.missing(self.layout)
        if still:  # changed under us after a checked download: another writer, or a failing volume
            raise TransientError(f"{spec}: files missing or of the wrong size right after their download: "
                                 + ", ".join(f.path for f in still[:5])
                                 + "; check the volume with `preloader verify --repair`, then start again")
        record = records.read(self.layout, spec, commit) or Record(commit, {})
        record.listing = {path: f.size for path, f in p.files.items()}
        record.complete.update(p.wanted)
        record.indexes.update(p.indexes)
        record.completes(self.settings.selection(spec).label())
        publication.publish(self.layout, spec, commit, record=record,
                            tree={path: f.tree_entry() for path, f in p.files.items()})
        records.clear_started(self.layout, spec, commit)
        secs = clock.seconds()
        event(logger, "fetch.done", repo=spec.repo_id, rev=spec.revision, commit=commit, files=len(todo),
              bytes=received[0], linked=max(0, total - received[0]), secs=secs,
              rate=f"{received[0] / secs / 1e6:.1f}MB/s" if secs else "-")
        return min(received[0], total)

    def publish(self, state: Completeness, clock: Clock, *, fetched: int, source: str) -> PreloadResult:
        """Point refs and the alias at a complete snapshot; report the result."""
        spec, commit, layout = state.spec, state.commit, self.layout
        publication.publish(layout, spec, commit, refs=() if spec.is_commit else (spec.revision,), alias=True,
                            used=True, writes=self.optional)
        return self.ready(PreloadResult.of(layout, state, fetched=fetched, seconds=clock.seconds(), source=source))

    def ready(self, result: PreloadResult) -> PreloadResult:
        self.metrics.ready_result(result)
        event(logger, "ready", repo=result.repo_id, type=result.repo_type, rev=result.revision,
              commit=result.commit, files=result.files, fetched=result.bytes_fetched, reused=result.bytes_reused,
              source=result.source, secs=result.seconds)
        return result


def check_requested(settings: Settings) -> None:
    """No repo at all is most often a mistyped variable name: an error with PRELOADER_REQUIRE_REPOS, else a warning."""
    if settings.repos:
        return
    why = "no repos requested: RUNPOD_HUGGINGFACE_MODEL and RUNPOD_HUGGINGFACE_DATASET are empty or unset"
    if settings.require_repos:
        raise ConfigError(f"{why} and PRELOADER_REQUIRE_REPOS is on; check the variables' names")
    logger.warning("%s; starting with nothing preloaded (PRELOADER_REQUIRE_REPOS=1 makes this an error)", why)


def remove_partials(layout: Layout, spec: RepoSpec) -> None:
    """Remove half-written blobs, their range maps and our temp files; the caller holds the repo lock."""
    for folder, suffix in ((layout.blobs_dir(spec), PARTIAL_SUFFIX), (layout.state_folder("transfers", spec), ".json")):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.endswith(suffix) or name.startswith(atomic.TEMP_MARK):
                atomic.remove(folder / name, layout.roots)
