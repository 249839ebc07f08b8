"""The node cache's long-running form: `run` with no command and PRELOADER_REFRESH stays up, preloads again
on its interval and keeps /metrics up all along; a failed refresh shows in the metrics and the next one tries
again; SIGTERM ends it with 0. Every wait is for a log line or a metric, with a deadline, never a sleep."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import ROOT, preloader_env, run_preloader
from prometheus_client.parser import text_string_to_metric_families

from localhub import Status

MODEL = "org/tiny-model"
REPO = {"repo": MODEL, "type": "model"}


class Running:
    """A `preloader` subprocess whose stderr is drained by a thread into a queue of lines."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([sys.executable, "-m", "preloader", *args], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = 90) -> str:
        """The next line holding `text` (lines before it are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} in {timeout} s:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if text in line:
                return line

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def eventually(url: str, check, timeout: float = 90) -> dict:
    """Scrape until `check(samples)` holds: a refresh round moves the states while it runs."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)


def test_a_node_cache_stays_up_refreshes_and_shows_a_failed_refresh(hub, cache, mirrors, tmp_path):
    path = tmp_path / "node.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_ADDR="127.0.0.1:0",
                        PRELOADER_METRICS_FILE=str(path), PRELOADER_REFRESH="1s", PRELOADER_RETRIES="1")
    node = Running(["run", "--"], env)
    try:
        addr = node.until("preloader: metrics.listen ").split("addr=")[1].split()[0]
        url = f"http://{addr}/metrics"
        node.until("preloader: refresh.waiting every=1s")
        assert node.proc.poll() is None  # up after its preload, where `run` with no command used to exit
        samples = scrape(url)
        assert metric(samples, "preloader_exit_code") == 0
        assert metric(samples, "preloader_repo_downloaded_bytes_total", **REPO) > 0
        node.until("preloader: ready repo=org/tiny-model")  # a refresh round: from the cache, nothing fetched
        assert hub.file_gets()[(MODEL, "model.safetensors")] == 1

        # The hub fails and the snapshot goes (deleted by hand): refreshes fail, shown with their exit code.
        rule = hub.add_rule(lambda method, p: MODEL in p, Status(500, times=None))
        removed = run_preloader(["rm", MODEL], env)
        assert removed.returncode == 0, removed.stderr
        line = node.until("preloader: warning: refresh.failed ")
        assert " code=75 " in line
        samples = eventually(url, lambda s: metric(s, "preloader_exit_code") == 75)
        assert metric(samples, "preloader_repo_state", state="complete", **REPO) == 0
        assert node.proc.poll() is None

        # The hub is back: the next refresh fetches the snapshot again and the metrics say so.
        hub.remove_rule(rule)
        eventually(url, lambda s: metric(s, "preloader_exit_code") == 0
                   and metric(s, "preloader_repo_state", state="complete", **REPO) == 1)
        commit = mirrors.sha("model", MODEL, "main")
        assert (cache / "models--org--tiny-model" / "snapshots" / commit / "model.safetensors").is_file()
        assert hub.file_gets()[(MODEL, "model.safetensors")] == 2

        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=60) == 0
    finally:
        node.stop()
    text = path.read_text()  # written a last time at exit
    assert "preloader_exit_code 0.0" in text and 'preloader_repo_state{repo="org/tiny-model",state="complete",type="model"} 1.0' in text


def test_refresh_with_a_command_is_78_before_any_work(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_REFRESH="1h")
    proc = run_preloader(["run", "--", "true"], env)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.strip() == ("preloader: error: PRELOADER_REFRESH (--refresh) keeps `run` up with no command, "
                                   "preloading again on its interval; with a command the exec ends the preloader: "
                                   "drop the command or the setting")
    assert hub.count() == 0


def test_a_bad_refresh_is_78_naming_it(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_REFRESH="soon")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr == ("preloader: error: invalid settings: PRELOADER_REFRESH='soon': expected a duration from 0 "
                           "to 365d (seconds, or like 90s, 10m, 1h)\n")
    assert hub.count() == 0
