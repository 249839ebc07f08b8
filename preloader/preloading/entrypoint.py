"""The entrypoint's sequences, as `preloader run` and `preloader wait` perform them: preload (or wait),
warm, then hand the process over to the service, or stay up holding locked pages, or return."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping, Sequence

from ..config import Settings
from ..logs import event, flush
from ..metrics import serving
from . import handoff, signals
from .capacity import preload_within
from .results import PreloadResult
from .waiting import wait_ready

logger = logging.getLogger(__name__)


def run(settings: Settings, command: Sequence[str], environ: Mapping[str, str], *, progress: bool = False) -> None:
    """Preload, warm as asked, then exec `command` (same PID) or, with none, return (or hold locked pages)."""
    check_hand_over(settings, command)
    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        _run(settings, command, environ, progress, served)


def _run(settings: Settings, command: Sequence[str], environ: Mapping[str, str], progress: bool, served) -> None:
    served.metrics.plan(settings.repos)
    warming = settings.warm.kind != "none"  # the warm modules are not imported on a plain start (a hot path)
    if settings.warm.kind == "gpu":  # fail before downloading anything, not after
        from ..warm.gpu import require_device

        require_device(settings.warm.device)
    lock = settings.warm_lock and settings.warm.kind == "page-cache"
    if settings.warm_lock and command:
        logger.warning("--warm-lock is ignored with a command: exec would release the locked pages")
        lock = False
    signals.install(settings.timeout)
    results = preload_within(settings, progress=progress, metrics=served.metrics)
    if warming:
        from ..api import warm_results

        served.metrics.warmed(warm_results(results, settings.warm, dtype=settings.dtype, lock=lock))
    if settings.prepare_datasets:
        from .datasets import prepare

        prepare(settings, results, environ)
    signals.uninstall()
    if command:
        hand_over(settings, results, command, environ, served.close)
    elif lock:
        hold_until_stopped()


def pull(settings: Settings, *, progress: bool = False) -> list[PreloadResult]:
    """Preload, within the capacity, and return the results: `preloader pull` at a shell."""
    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        served.metrics.plan(settings.repos)
        signals.install(settings.timeout)
        results = preload_within(settings, progress=progress, metrics=served.metrics)
        signals.uninstall()
        return results


def wait(settings: Settings, command: Sequence[str], environ: Mapping[str, str]) -> None:
    """Wait (no network) until every snapshot is complete, then exec `command` or return."""
    check_hand_over(settings, command)
    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        served.metrics.plan(settings.repos, "waiting_lock")  # another process's preload
        signals.install()
        results = wait_ready(settings, timeout=settings.timeout)
        signals.uninstall()
        for result in results:
            served.metrics.ready_result(result)
        served.metrics.succeeded()
        if command:
            hand_over(settings, results, command, environ, served.close)


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
