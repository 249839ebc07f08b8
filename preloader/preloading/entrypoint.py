"""The entrypoint's sequences: preload (or wait), warm, then hand the process over to the service, or stay up
holding locked pages, or return.

`preload`, `wait_for` and `warm_cached` are what the Python API (`preloader.preload`, `wait`, `warm`, `Cache`)
and the CLI (`run`, `pull`, `wait`, `warm`) both call, so a setting behaves the same from either; the CLI only
adds its signal handlers and the hand-off (exec)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from ..cache import records
from ..config import Settings
from ..errors import ConfigError, DeadlineExceeded, NotFoundError, PreloaderError
from ..logs import event, flush
from ..metrics import serving
from . import handoff, signals
from .capacity import preload_within
from .policy import before_hand_off
from .results import PreloadResult
from .waiting import wait_ready

logger = logging.getLogger(__name__)


def run(settings: Settings, command: Sequence[str], environ: Mapping[str, str], *, progress: bool = False) -> None:
    """Preload, warm as asked, then exec `command` (same PID) or, with none, return (or stay up: locked pages,
    PRELOADER_REFRESH)."""
    if settings.refresh and command:
        raise ConfigError("PRELOADER_REFRESH (--refresh) keeps `run` up with no command, preloading again on its "
                          "interval; with a command the exec ends the preloader: drop the command or the setting")
    check_hand_over(settings, command)
    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        _run(settings, command, environ, progress, served)


def _run(settings: Settings, command: Sequence[str], environ: Mapping[str, str], progress: bool, served) -> None:
    served.metrics.plan(settings.repos)
    lock = settings.warm_lock and settings.warm.kind == "page-cache"
    if settings.warm_lock and command:
        logger.warning("--warm-lock is ignored with a command: exec would release the locked pages")
        lock = False
    signals.install(settings.timeout)
    results = preload(settings, environ, progress=progress, lock=lock, metrics=served.metrics)
    signals.uninstall()
    if command:
        hand_over(settings, results, command, environ, served.close)
    elif lock or settings.refresh:
        stay_up(settings, environ, served.metrics, lock=lock)


def preload(settings: Settings, environ: Mapping[str, str], *, progress: bool = False,
            lock: bool | None = None, metrics=None) -> list[PreloadResult]:
    """Everything `run` does before the hand-off: preload within the capacity (max_cache_size), warm as
    `settings.warm` says, prepare the datasets (prepare_datasets, in a subprocess given `environ`).

    `lock` (mlock the warmed pages) defaults to settings.warm_lock with page-cache warming; `metrics` (a
    `metrics.Metrics`) is told what happens."""
    if settings.warm.kind == "gpu":  # fail before downloading anything, not after
        from ..warm.gpu import require_device

        require_device(settings.warm.device)
    if lock is None:
        lock = settings.warm_lock and settings.warm.kind == "page-cache"
    results = preload_within(settings, progress=progress, metrics=metrics)
    before_hand_off(settings, results)  # signatures (65), the lock file, the pickle policy (79): before warming
    reports = warm_results(results, settings.warm, dtype=settings.dtype, lock=lock)
    if metrics is not None and reports:
        metrics.warmed(reports)
    if settings.prepare_datasets:
        from .datasets import prepare

        prepare(settings, results, environ)
    return results


def pull(settings: Settings, environ: Mapping[str, str], *, progress: bool = False) -> list[PreloadResult]:
    """`preload` under the CLI's signal handlers: `preloader pull` at a shell."""
    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        served.metrics.plan(settings.repos)
        signals.install(settings.timeout)
        results = preload(settings, environ, progress=progress, metrics=served.metrics)
        signals.uninstall()
        return results


def wait(settings: Settings, command: Sequence[str], environ: Mapping[str, str]) -> None:
    """Wait (no network) until every snapshot is complete, then exec `command` or return."""
    check_hand_over(settings, command)
    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        served.metrics.plan(settings.repos, "waiting_lock")  # another process's preload
        signals.install()
        results = wait_for(settings)
        signals.uninstall()
        for result in results:
            served.metrics.ready_result(result)
        served.metrics.succeeded()
        if command:
            hand_over(settings, results, command, environ, served.close)


def wait_for(settings: Settings) -> list[PreloadResult]:
    """Block (no network) until every requested snapshot is complete; TransientError at settings.timeout."""
    results = wait_ready(settings, timeout=settings.timeout)
    before_hand_off(settings, results)  # signatures (65), the lock file, the pickle policy (79), as `preload` does
    return results


def warm_results(results: Iterable[PreloadResult], mode, *, dtype=None, lock: bool = False) -> list:
    """Warm every model among `results` as `mode` (a WarmMode) says; one WarmReport per model."""
    if mode.kind == "none":
        return []  # the warm modules are not imported on a plain start (a hot path)
    from ..warm.snapshot import warm_snapshot

    return [warm_snapshot(r.path, mode, repo=r.repo_id, dtype=dtype, lock=lock)
            for r in results if r.repo_type == "model"]


def warm_cached(settings: Settings) -> list:
    """Warm the requested models, already complete in the cache (no network), as settings.warm says (page
    cache when it says none); NotFoundError (66) for one that is not complete. One WarmReport each."""
    results = []
    for spec in settings.models:
        state = records.check(settings.layout, spec, selection=settings.selection(spec))
        if not state.complete:
            raise NotFoundError(f"{spec} is not complete in the cache {settings.cache_dir}: {state.detail}; "
                                "run `preloader run` first")
        results.append(PreloadResult.of(settings.layout, state))
    from ..warm.mode import WarmMode

    mode = WarmMode("page-cache") if settings.warm.kind == "none" else settings.warm
    return warm_results(results, mode, dtype=settings.dtype, lock=settings.warm_lock)


def check_hand_over(settings: Settings, command: Sequence[str]) -> None:
    """What would make the hand-off fail after the whole preload: said at once, before any work (78)."""
    signals.remember()  # the parent's dispositions, before any handler of ours
    if command:
        handoff.check_command(command)
        handoff.check_manifest(settings)


def hand_over(settings: Settings, results: list[PreloadResult], command: Sequence[str],
              environ: Mapping[str, str], before_exec=lambda: None) -> None:
    manifest = handoff.write_manifest(settings, results, environ)
    before_exec()  # the metrics' last write and the end of their endpoint: exec ends this process's Python
    handoff.exec_service(command, handoff.service_env(environ, settings, results, manifest))


def hold_until_stopped() -> None:
    """Sidecar with --warm-lock: keep the locked pages resident until SIGTERM/SIGINT, then return."""
    from ..warm.memlock import locked_bytes, release_locks

    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    event(logger, "warm.holding", locked=locked_bytes())
    flush()
    while not stopped.wait(1.0):
        pass
    release_locks()


def stay_up(settings: Settings, environ: Mapping[str, str], metrics, *, lock: bool) -> None:
    """The long-running forms of `run` with no command, until SIGTERM/SIGINT (then return: exit 0): hold the
    locked pages (--warm-lock), and with PRELOADER_REFRESH preload again every interval (a branch that moved,
    a snapshot evicted or deleted by hand); the metrics endpoint and file stay up all along."""
    stopped = threading.Event()

    def stop_between() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopped.set())

    stop_between()
    if lock:
        from ..warm.memlock import locked_bytes

        event(logger, "warm.holding", locked=locked_bytes())
    metrics.set("preloader_exit_code", 0)  # what a SIGTERM now leads to; a failed refresh sets its own
    if settings.refresh:
        event(logger, "refresh.waiting", every=f"{settings.refresh:g}s")
    flush()
    clock = time.monotonic
    due = clock() + settings.refresh
    # Short waits: a signal's handler runs between them (an Event wait with no timeout may not wake for it).
    while not stopped.wait(min(1.0, max(0.0, due - clock())) if settings.refresh else 1.0):
        if settings.refresh and clock() >= due:
            refresh(settings, environ, metrics, after=stop_between)
            flush()
            due = clock() + settings.refresh
    if lock:
        from ..warm.memlock import release_locks

        release_locks()


def refresh(settings: Settings, environ: Mapping[str, str], metrics, after=lambda: None) -> None:
    """One more preload of a node cache that stays up. A failure, its deadline (PRELOADER_TIMEOUT) included,
    is logged and shown in the metrics (the exit code it would have been, the repos failed); the next interval
    tries again. A signal during it ends the process as it ends a first preload (143 for SIGTERM). `after`:
    put the idle signal handlers back."""
    metrics.plan(settings.repos)
    signals.install(settings.timeout)
    try:
        preload(settings, environ, lock=False, metrics=metrics)
    except (PreloaderError, DeadlineExceeded) as error:
        metrics.failed(error.exit_code)
        event(logger, "refresh.failed", logging.WARNING, code=error.exit_code, error=error)
    else:
        metrics.set("preloader_exit_code", 0)
    finally:
        signals.uninstall()
        after()
