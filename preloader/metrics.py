"""Prometheus metrics: what a preload is doing, for dashboards and alerts (PRELOADER_METRICS_ADDR/_FILE).

`Metrics` is plain Python, cheap enough to feed on every start: the engine reports states, bytes, files,
retries and lock waits to it whether or not anyone reads them, so the code paths are the same either way.
`prometheus_client` is imported only by `export()`, when an address or a file is set: a plain start never
loads it. `METRICS` is the one list of names, types and help; the collector, the table in docs/metrics.md and its test
all read it. Labels are bounded: repo and type (and a retry's reason, a repo's state), never a file name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, DiskError, UnavailableError
from .logs import event

logger = logging.getLogger(__name__)

STATES = ("waiting_lock", "resolving", "downloading", "verifying", "complete", "failed")
FILE_EVERY = 5.0  # seconds between two writes of PRELOADER_METRICS_FILE
POLL = 0.02  # how often the endpoint's thread looks for a shutdown: what closing it costs, at most


# Plain classes, not dataclasses, in this module: it is imported on every start, and each dataclass costs
# about a millisecond to create (measured with -X importtime).
class Spec:
    """One metric as Prometheus shows it: `name` is the exposed name (counters end in `_total`)."""

    __slots__ = ("name", "kind", "help", "labels")

    def __init__(self, name: str, kind: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help, labels  # kind: gauge | counter


_REPO = ("repo", "type")
METRICS: tuple[Spec, ...] = (
    Spec("preloader_repo_wanted_bytes", "gauge", "Bytes of the files the plan wants from this repo.", _REPO),
    Spec("preloader_repo_disk_bytes", "gauge", "Bytes of the wanted files already on disk.", _REPO),
    Spec("preloader_repo_downloaded_bytes_total", "counter", "Bytes downloaded for this repo by this run.", _REPO),
    Spec("preloader_repo_wanted_files", "gauge", "Files the plan wants from this repo.", _REPO),
    Spec("preloader_repo_done_files", "gauge",
         "Wanted files complete on disk (at the start of the download and at its end).", _REPO),
    Spec("preloader_repo_state", "gauge", "1 for the repo's current state (" + ", ".join(STATES) + "), else 0.",
         (*_REPO, "state")),
    Spec("preloader_repo_ready_seconds", "gauge", "Seconds from the start of this repo's preload to ready.", _REPO),
    Spec("preloader_repo_rate_bytes_per_second", "gauge", "Download rate of this repo since it started.", _REPO),
    Spec("preloader_repo_eta_seconds", "gauge", "Seconds left for this repo at the current rate.", _REPO),
    Spec("preloader_rate_bytes_per_second", "gauge", "Download rate of the whole plan."),
    Spec("preloader_eta_seconds", "gauge", "Seconds left for the whole plan at the current rate."),
    Spec("preloader_origin_requests_total", "counter", "Requests sent to the hub (resolves and file fetches)."),
    Spec("preloader_origin_bytes_total", "counter", "Bytes received from the hub."),
    Spec("preloader_retries_total", "counter", "Retries after transient hub errors, by reason.", ("reason",)),
    Spec("preloader_lock_wait_seconds_total", "counter", "Seconds spent waiting for other processes' repo locks."),
    Spec("preloader_exit_code", "gauge", "The exit code the process is heading to (set on failure and at exit)."),
    Spec("preloader_warm_bytes", "gauge", "Bytes warmed (page cache or GPU)."),
    Spec("preloader_warm_seconds", "gauge", "Seconds the warm took."),
    Spec("preloader_cache_size_bytes", "gauge", "Bytes of the requested snapshots complete in the cache."),
    Spec("preloader_cache_free_bytes", "gauge", "Free bytes on the cache volume."),
    Spec("preloader_last_success_timestamp_seconds", "gauge", "Unix time of the last successful preload."),
    Spec("preloader_start_time_seconds", "gauge", "Unix time this process started."),
    Spec("preloader_build_info", "gauge", "Always 1; the preloader's version as a label.", ("version",)),
)


def describe() -> list[tuple[str, str, str]]:
    """(name, type, help) of every metric, in the order of the table in docs/metrics.md."""
    return [(spec.name, spec.kind, spec.help) for spec in METRICS]


def parse_addr(text: str) -> tuple[str, int] | None:
    """`:9400`, `0.0.0.0:9400`, `127.0.0.1:0`, `[::]:9400` into (host, port); empty is off. ValueError else."""
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
        raise ValueError(text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class _Repo:
    __slots__ = ("wanted_bytes", "disk_bytes", "downloaded", "wanted_files", "done_files", "state",
                 "fetch_started", "fetch_from", "ready_seconds")

    def __init__(self) -> None:
        self.wanted_bytes = self.disk_bytes = self.downloaded = self.wanted_files = self.done_files = 0
        self.state = "resolving"
        self.fetch_started: float | None = None
        self.fetch_from = 0  # disk bytes when the download began: the rate counts only this run's
        self.ready_seconds: float | None = None


class Metrics:
    """The state of this process's preloads, updated from any thread; read by `samples()`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, volume: str | None = None) -> None:
        self.clock = clock
        self.volume = volume  # the cache dir: its free bytes, read at each scrape
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {"preloader_start_time_seconds": time.time()}
        self.retries: dict[str, int] = {}
        self._lock = threading.Lock()

    def _repo(self, spec) -> _Repo:
        """`spec`: anything with repo_id and repo_type (a RepoSpec, a PreloadResult)."""
        key = (spec.repo_id, spec.repo_type)
        if key not in self.repos:
            self.repos[key] = _Repo()
        return self.repos[key]

    def state(self, spec, state: str) -> None:
        assert state in STATES, state
        with self._lock:
            self._repo(spec).state = state

    def plan(self, specs: Iterable, state: str = "resolving") -> None:
        """Every requested repo, known from the first moment, in its first state."""
        for spec in specs:
            self.state(spec, state)

    def wanted(self, spec, *, files: int, size: int, done_files: int, on_disk: int) -> None:
        """What the download of one repo starts from: the rate and ETA count from here."""
        with self._lock:
            repo = self._repo(spec)
            repo.wanted_files, repo.wanted_bytes, repo.done_files, repo.disk_bytes = files, size, done_files, on_disk
            repo.fetch_started, repo.fetch_from = self.clock(), on_disk

    def received(self, spec, count: int) -> None:
        with self._lock:
            repo = self._repo(spec)
            repo.downloaded += count
            repo.disk_bytes = min(repo.wanted_bytes, repo.disk_bytes + count)
            self.counters["preloader_origin_bytes_total"] = self.counters.get("preloader_origin_bytes_total", 0) + count

    def discarded(self, spec, on_disk: int) -> None:
        """The partial files were removed: `on_disk` bytes of whole files are left."""
        with self._lock:
            self._repo(spec).disk_bytes = on_disk

    def complete(self, spec, *, files: int, size: int, seconds: float) -> None:
        with self._lock:
            repo = self._repo(spec)
            repo.state, repo.wanted_files, repo.done_files = "complete", files, files
            repo.wanted_bytes = repo.disk_bytes = size
            repo.ready_seconds = seconds

    def ready_result(self, result) -> None:
        """A PreloadResult: complete, its files and bytes."""
        self.complete(result, files=result.files,
                      size=result.bytes_fetched + result.bytes_reused, seconds=result.seconds)

    def add(self, name: str, amount: float = 1.0) -> None:
        """Add to a process counter (`preloader_origin_requests_total`, `preloader_lock_wait_seconds_total`)."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + amount

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def retry(self, reason: str) -> None:
        with self._lock:
            self.retries[reason] = self.retries.get(reason, 0) + 1

    def succeeded(self) -> None:
        self.set("preloader_last_success_timestamp_seconds", time.time())

    def warmed(self, reports: Iterable) -> None:
        """WarmReports (page cache or GPU): their bytes and seconds added up."""
        reports = [r for r in reports if r is not None]
        self.set("preloader_warm_bytes", sum(r.bytes for r in reports))
        self.set("preloader_warm_seconds", sum(r.seconds for r in reports))

    def failed(self, exit_code: int) -> None:
        """The run is heading to `exit_code`: every repo not complete is failed."""
        with self._lock:
            self.gauges["preloader_exit_code"] = exit_code
            for repo in self.repos.values():
                if repo.state != "complete":
                    repo.state = "failed"

    def samples(self) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        """Every metric's samples as (label values, value), consistent with one another."""
        from .version import __version__

        free = _free_bytes(self.volume)  # outside the lock: a slow network volume must not stall the download
        with self._lock:
            now = self.clock()
            out: dict[str, list] = {spec.name: [] for spec in METRICS}
            plan_done = plan_left = 0
            plan_start = None
            for (repo_id, repo_type), repo in sorted(self.repos.items()):
                labels = (repo_id, repo_type)
                out["preloader_repo_wanted_bytes"].append((labels, repo.wanted_bytes))
                out["preloader_repo_disk_bytes"].append((labels, repo.disk_bytes))
                out["preloader_repo_downloaded_bytes_total"].append((labels, repo.downloaded))
                out["preloader_repo_wanted_files"].append((labels, repo.wanted_files))
                out["preloader_repo_done_files"].append((labels, repo.done_files))
                for state in STATES:
                    out["preloader_repo_state"].append(((*labels, state), 1 if repo.state == state else 0))
                if repo.ready_seconds is not None:
                    out["preloader_repo_ready_seconds"].append((labels, repo.ready_seconds))
                if repo.fetch_started is not None:
                    done = repo.disk_bytes - repo.fetch_from
                    left = max(0, repo.wanted_bytes - repo.disk_bytes)
                    rate, eta = _rate_eta(done, left, now - repo.fetch_started)
                    out["preloader_repo_rate_bytes_per_second"].append((labels, rate))
                    if eta is not None:
                        out["preloader_repo_eta_seconds"].append((labels, eta))
                    plan_done, plan_left = plan_done + done, plan_left + left
                    plan_start = repo.fetch_started if plan_start is None else min(plan_start, repo.fetch_started)
            if plan_start is not None:
                rate, eta = _rate_eta(plan_done, plan_left, now - plan_start)
                out["preloader_rate_bytes_per_second"].append(((), rate))
                if eta is not None:
                    out["preloader_eta_seconds"].append(((), eta))
            for name in ("preloader_origin_requests_total", "preloader_origin_bytes_total",
                         "preloader_lock_wait_seconds_total"):
                out[name].append(((), self.counters.get(name, 0)))
            for reason, count in sorted(self.retries.items()):
                out["preloader_retries_total"].append(((reason,), count))
            for name, value in self.gauges.items():
                out[name].append(((), value))
            out["preloader_cache_size_bytes"].append(
                ((), sum(r.wanted_bytes for r in self.repos.values() if r.state == "complete")))
            if free is not None:
                out["preloader_cache_free_bytes"].append(((), free))
            out["preloader_build_info"].append(((__version__,), 1))
            return out


def _free_bytes(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        stat = os.statvfs(path)
    except OSError:  # not created yet, or gone: no sample rather than a wrong one
        return None
    return stat.f_bavail * stat.f_frsize


def _rate_eta(done: int, left: int, elapsed: float) -> tuple[float, float | None]:
    rate = done / elapsed if elapsed > 0 else 0.0
    if left == 0:
        return rate, 0.0
    return rate, (left / rate if rate > 0 else None)


class Exporter:
    """The endpoint and the file writer of one process; `close()` writes the file a last time and stops both."""

    def __init__(self, metrics: Metrics, addr: tuple[str, int] | None, path: str | Path | None,
                 every: float = FILE_EVERY) -> None:
        try:
            from prometheus_client import CollectorRegistry  # only here: a plain start never imports it
        except ImportError:
            raise UnavailableError("metrics need the prometheus-client package: pip install 'hf-preloader[metrics]', "
                                   "or unset PRELOADER_METRICS_ADDR and PRELOADER_METRICS_FILE") from None

        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(metrics))
        self.path = Path(path) if path else None
        self.every = every
        self.server = self.address = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if addr is not None:
            self._listen(addr)
        if self.path is not None:
            self.write()  # fail now (74) if it cannot be written, not silently every few seconds
            self._thread = threading.Thread(target=self._write_every, name="preloader-metrics-file", daemon=True)
            self._thread.start()

    def _listen(self, addr: tuple[str, int]) -> None:
        # prometheus_client's start_http_server, but serving with a short poll interval: its default (0.5 s) is
        # what `shutdown()` waits at the hand-off, and every start with metrics on would pay it.
        import socket
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

        class Quiet(WSGIRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
                pass  # one line per scrape on stderr would drown the preloader's own

        host, port = addr
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
            server_class = type("Server", (ThreadingWSGIServer,), {"address_family": family})
            self.server = make_server(sockaddr[0], port, make_wsgi_app(self.registry), server_class,
                                      handler_class=Quiet)
        except OSError as error:
            raise ConfigError(f"cannot serve metrics on {host}:{port} ({error.strerror or error}); "
                              "check PRELOADER_METRICS_ADDR (another process may hold the port)") from None
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": POLL}, name="preloader-metrics",
                         daemon=True).start()
        self.address = self.server.server_address[:2]
        event(logger, "metrics.listen", addr=f"{self.address[0]}:{self.address[1]}")

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def write(self) -> None:
        """Write the text format to a temp file beside the target, then rename it into place (atomic)."""
        assert self.path is not None
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temp.write_bytes(self.render())
            os.replace(temp, self.path)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise DiskError(f"cannot write the metrics file {self.path} ({error.strerror or error}); "
                            "check PRELOADER_METRICS_FILE") from None

    def _write_every(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.write()
            except Exception as error:  # a full disk must not end the preload: the next write may work
                event(logger, "metrics.file", logging.WARNING, path=self.path, error=error)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            try:
                self.write()
            except Exception as error:  # at exit, the run's own outcome matters more than its metrics
                event(logger, "metrics.file", logging.WARNING, path=self.path, error=error)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class _Collector:
    """Turns `Metrics.samples()` into metric families at each scrape or file write."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        samples = self.metrics.samples()
        for spec in METRICS:
            if spec.kind == "counter":
                family = CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in samples[spec.name]:
                family.add_metric(list(labels), value)
            yield family


def export(metrics: Metrics, addr: tuple[str, int] | None, path: str | Path | None) -> Exporter | None:
    """Start what the settings ask for (an endpoint, a file, both); None, importing nothing, when neither."""
    if addr is None and not path:
        return None
    return Exporter(metrics, addr, path)


@contextmanager
def serving(addr: tuple[str, int] | None, path: str | Path | None, volume: str | Path | None = None,
            ) -> Iterator[Served]:
    """Metrics exported (as the settings ask) for the body; its failure is the exit code it shows. `close()` on
    the yielded object ends the export early, before an exec."""
    served = Served(Metrics(volume=str(volume) if volume else None), None)
    served.exporter = export(served.metrics, addr, path)
    try:
        yield served
    except BaseException as error:
        # PreloaderError and Aborted (a signal, the deadline) carry theirs; anything else is a bug: 70.
        served.metrics.failed(getattr(error, "exit_code", 70))
        served.last_word()
        raise
    else:
        served.metrics.set("preloader_exit_code", 0)
    finally:
        served.close()


class Served:
    """What `serving` yields: the metrics to feed, and `close()` to end their export early."""

    def __init__(self, metrics: Metrics, exporter: Exporter | None) -> None:
        self.metrics, self.exporter = metrics, exporter
        self._closed: Exporter | None = None  # closed early for an exec that may still fail

    def close(self) -> None:
        if self.exporter is not None:
            exporter, self.exporter = self.exporter, None
            exporter.close()
            self._closed = exporter

    def last_word(self) -> None:
        """After an early close, a failure (an exec that found no program, 127, or could not run it, 126)
        rewrites the file once more, so that the exit code shows; the endpoint stays closed."""
        exporter, self._closed = self._closed, None
        if exporter is not None and exporter.path is not None:
            try:
                exporter.write()
            except Exception as error:  # the run's own failure is what the exit says
                event(logger, "metrics.file", logging.WARNING, path=exporter.path, error=error)
