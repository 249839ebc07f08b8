"""Metrics as operators see them: a real Prometheus (Debian's) scraping a throttled `preloader run`, and a real
node_exporter reading the textfile of a run that failed and of one that succeeded.

Both binaries come from scripts/install-system-deps.sh; each test starts its own on a free loopback port."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env, run_preloader
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

BIG, BIG_SIZE = "org/big-model", 12 * 1024 * 1024
MODEL = "org/tiny-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def until(check, what: str, seconds: float = 60.0, proc: subprocess.Popen | None = None):
    """Poll `check` until it returns something true (an event to wait for, not an order to impose)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"exited ({proc.returncode}) while waiting for {what}"
        time.sleep(0.1)


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run scripts/install-system-deps.sh as root"
    return path


class Server:
    """A server process on a free loopback port, stopped (and its pipes drained) at the end of the test."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus(tmp_path):
    """Start a real Prometheus scraping `targets` every second: call it with a list of host:port."""
    started: list[Server] = []

    def start(targets: list[str]) -> Server:
        folder = tmp_path / "prometheus"
        folder.mkdir()
        config = folder / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "preloader", "static_configs": [{"targets": targets}]}],
        }))
        port = free_port()
        server = Server([binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                         f"--web.listen-address=127.0.0.1:{port}"], port, folder / "log")
        started.append(server)
        until(lambda: get(server.url + "/-/ready") is not None, "Prometheus to be ready", proc=server.proc)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def node_exporter(tmp_path):
    """A real node_exporter with only the textfile collector, over a fresh directory, on a free port."""
    directory = tmp_path / "textfile"
    directory.mkdir()
    port = free_port()
    server = Server([binary("prometheus-node-exporter"), "--collector.disable-defaults", "--collector.textfile",
                     f"--collector.textfile.directory={directory}", f"--web.listen-address=127.0.0.1:{port}"],
                    port, tmp_path / "node-exporter.log")
    server.directory = directory
    until(lambda: get(server.url + "/metrics"), "node_exporter to serve", proc=server.proc)
    yield server
    server.stop()


def query(server: Server, path: str, **params) -> list:
    body = json.loads(get(f"{server.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"))
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_sees_the_bytes_rise_to_the_repo_size_and_the_state_end_complete(hub, cache, prometheus):
    from localhub import Drip

    # About 6 s of transfer at 2 MB/s, scraped every second: the series has points on the way up.
    hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"), Drip(2_000_000))
    port = free_port()
    server = prometheus([f"127.0.0.1:{port}"])
    start = time.time()
    # --warm-lock with no command is a long-running form: it keeps the endpoint up after the preload, until SIGTERM.
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_METRICS_ADDR=f"127.0.0.1:{port}",
                        PRELOADER_WORKERS="1", PRELOADER_WARM="page-cache", PRELOADER_WARM_LOCK="1")
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        complete = f'preloader_repo_state{{repo="{BIG}",state="complete"}} == 1'
        until(lambda: query(server, "query", query=complete), "Prometheus to see the repo complete", 120, proc)
        assert proc.poll() is None  # still up, still scraped
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    end = time.time() + 1
    rng = {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
    series = query(server, "query_range", query=f'preloader_repo_disk_bytes{{repo="{BIG}"}}', **rng)
    assert len(series) == 1
    points = [float(v) for _, v in series[0]["values"]]
    assert points == sorted(points), points  # it only rises
    assert points[-1] >= BIG_SIZE and any(0 < p < BIG_SIZE for p in points), points
    downloaded = query(server, "query_range", query=f'preloader_repo_downloaded_bytes_total{{repo="{BIG}"}}', **rng)
    wanted = query(server, "query", query=f'preloader_repo_wanted_bytes{{repo="{BIG}"}}')
    assert float(downloaded[0]["values"][-1][1]) == float(wanted[0]["value"][1]) == points[-1]
    state = query(server, "query_range", query=f'preloader_repo_state{{repo="{BIG}"}} == 1', **rng)
    by_state = {s["metric"]["state"]: [t for t, _ in s["values"]] for s in state}
    assert "downloading" in by_state  # seen on the way
    last = max((times[-1], name) for name, times in by_state.items())
    assert last[1] == "complete", by_state
    rate = query(server, "query_range", query=f'preloader_repo_rate_bytes_per_second{{repo="{BIG}"}}', **rng)
    assert any(float(v) > 0 for _, v in rate[0]["values"])


def textfile_metrics(server: Server) -> dict:
    text = get(server.url + "/metrics").decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_node_exporter_shows_the_textfile_of_a_failed_run_and_of_a_successful_one(hub, cache, node_exporter):
    path = node_exporter.directory / "preloader.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/no-such-model", PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run", "--", "true"], env)
    assert proc.returncode == 66, proc.stderr
    seen = textfile_metrics(node_exporter)
    assert seen[("node_textfile_scrape_error", ())] == 0
    assert seen[("preloader_exit_code", ())] == 66
    assert seen[("preloader_repo_state", (("repo", "org/no-such-model"), ("state", "failed"), ("type", "model")))] == 1

    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    seen = textfile_metrics(node_exporter)
    assert seen[("node_textfile_scrape_error", ())] == 0
    assert seen[("preloader_exit_code", ())] == 0
    assert seen[("preloader_repo_state", (("repo", MODEL), ("state", "complete"), ("type", "model")))] == 1
    assert seen[("preloader_last_success_timestamp_seconds", ())] > 0
    assert not any(name == "preloader_repo_state" and dict(labels).get("repo") == "org/no-such-model"
                   for name, labels in seen)  # the file is the last run's, replaced whole
