"""Prometheus metrics: the model, the /metrics endpoint (parsed by prometheus_client's own parser), the atomic
textfile, the settings, the table in docs/metrics.md, and what `preloader run` shows through both."""

from __future__ import annotations

import re
import socket
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, preloader_env, run_preloader
from prometheus_client.parser import text_string_to_metric_families

from preloader.config import Settings
from preloader.errors import ConfigError
from preloader.metrics import METRICS, STATES, Exporter, Metrics, describe, parse_addr, serving
from preloader.spec import RepoSpec

MODEL = "org/tiny-model"
SPEC = RepoSpec("model", "org/m")


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(fams: dict, sample_name: str, **labels) -> float:
    """The one sample of `sample_name` with these labels (family names drop a counter's `_total`)."""
    family = fams[sample_name.removesuffix("_total")]
    found = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(found) == 1, (sample_name, labels, family.samples)
    return found[0]


@pytest.mark.parametrize("text, expected", [
    (":9400", ("0.0.0.0", 9400)),
    ("0.0.0.0:9400", ("0.0.0.0", 9400)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:9400", ("::1", 9400)),
    ("localhost:80", ("localhost", 80)),
    ("", None),
])
def test_parse_addr(text, expected):
    assert parse_addr(text) == expected


@pytest.mark.parametrize("text", ["9400", "host:", "host:http", ":65536", "a b:1"])
def test_a_bad_address_is_a_settings_error(text):
    with pytest.raises(ConfigError) as error:
        Settings.load({"PRELOADER_METRICS_ADDR": text})
    assert str(error.value) == (f"invalid settings: PRELOADER_METRICS_ADDR={text!r}: "
                                "expected [HOST]:PORT, e.g. :9400 or 127.0.0.1:9400")


def test_settings_from_env_and_flags(tmp_path):
    s = Settings.load({"PRELOADER_METRICS_ADDR": ":9400", "PRELOADER_METRICS_FILE": str(tmp_path / "p.prom")})
    assert (s.metrics_addr, s.metrics_file) == (("0.0.0.0", 9400), str(tmp_path / "p.prom"))
    s = Settings.load({"PRELOADER_METRICS_ADDR": ":9400"}, {"metrics_addr": "127.0.0.1:9500"})
    assert s.metrics_addr == ("127.0.0.1", 9500)
    assert Settings.load({}).metrics_addr is None and Settings.load({}).metrics_file is None


def test_the_endpoint_serves_every_metric_in_the_text_format():
    now = [100.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.plan([SPEC, RepoSpec("dataset", "org/d")])
    metrics.state(SPEC, "downloading")
    metrics.wanted(SPEC, files=4, size=1000, done_files=1, on_disk=200)
    now[0] = 110.0
    metrics.received(SPEC, 300)
    metrics.retry("HubUnreachable")
    metrics.retry("HubUnreachable")
    metrics.add("preloader_lock_wait_seconds_total", 2.5)
    exporter = Exporter(metrics, ("127.0.0.1", 0), None)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.address[1]}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            fams = families(response.read().decode())
    finally:
        exporter.close()
    assert {spec.name.removesuffix("_total") for spec in METRICS} == set(fams)
    for spec in METRICS:
        assert fams[spec.name.removesuffix("_total")].type == spec.kind
        assert fams[spec.name.removesuffix("_total")].documentation == spec.help
    repo = {"repo": "org/m", "type": "model"}
    assert value(fams, "preloader_repo_wanted_bytes", **repo) == 1000
    assert value(fams, "preloader_repo_disk_bytes", **repo) == 500
    assert value(fams, "preloader_repo_downloaded_bytes_total", **repo) == 300
    assert value(fams, "preloader_repo_wanted_files", **repo) == 4
    assert value(fams, "preloader_repo_done_files", **repo) == 1
    assert [value(fams, "preloader_repo_state", state=s, **repo) for s in STATES] == [0, 0, 1, 0, 0, 0]
    assert value(fams, "preloader_repo_state", repo="org/d", type="dataset", state="resolving") == 1
    assert value(fams, "preloader_repo_rate_bytes_per_second", **repo) == 30.0  # 300 bytes in 10 s
    assert value(fams, "preloader_repo_eta_seconds", **repo) == 500 / 30.0
    assert value(fams, "preloader_eta_seconds") == 500 / 30.0
    assert value(fams, "preloader_origin_bytes_total") == 300
    assert value(fams, "preloader_retries_total", reason="HubUnreachable") == 2
    assert value(fams, "preloader_lock_wait_seconds_total") == 2.5
    assert value(fams, "preloader_build_info", version=__import__("preloader").__version__) == 1
    for family in fams.values():  # labels bounded: repo, type, state, reason, version; never a file
        for sample in family.samples:
            assert set(sample.labels) <= {"repo", "type", "state", "reason", "version"}


def test_a_busy_port_is_a_settings_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port} \(.*\); check "
                                              "PRELOADER_METRICS_ADDR"):
            Exporter(Metrics(), ("127.0.0.1", port), None)


def test_the_textfile_is_written_at_once_and_at_exit_by_rename(tmp_path):
    path = tmp_path / "preloader.prom"
    with pytest.raises(RuntimeError):
        with serving(None, path, tmp_path) as served:
            assert value(families(path.read_text()), "preloader_build_info",
                         version=__import__("preloader").__version__) == 1  # written at once, before any work
            served.metrics.state(SPEC, "downloading")
            raise RuntimeError("a bug")
    fams = families(path.read_text())
    assert value(fams, "preloader_exit_code") == 70
    assert value(fams, "preloader_repo_state", repo="org/m", type="model", state="failed") == 1
    assert value(fams, "preloader_cache_free_bytes") > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preloader.prom"]  # no temp file left


def test_an_unwritable_textfile_is_74_before_any_work(tmp_path):
    from preloader.errors import DiskError

    with pytest.raises(DiskError, match="cannot write the metrics file .*; check PRELOADER_METRICS_FILE"):
        with serving(None, tmp_path / "missing" / "p.prom"):
            pytest.fail("the body ran")


def test_readme_metrics_table_matches_the_code():
    section = (ROOT / "docs" / "metrics.md").read_text()
    rows = re.findall(r"^\| `(preloader_\w+)` \| (\w+) \| (.+?) \|$", section, re.M)
    assert [(name, kind, help.replace("\\|", "|")) for name, kind, help in rows] == describe()


def test_run_writes_the_textfile_complete_and_exit_0(hub, cache, tmp_path):
    path = tmp_path / "preloader.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    fams = families(path.read_text())
    repo = {"repo": MODEL, "type": "model"}
    size = value(fams, "preloader_repo_wanted_bytes", **repo)
    assert size > 0 and value(fams, "preloader_repo_disk_bytes", **repo) == size
    assert value(fams, "preloader_repo_downloaded_bytes_total", **repo) == size == sum(
        r.body_bytes for r in hub.requests(method="GET", path_contains="/resolve/"))
    assert value(fams, "preloader_repo_state", state="complete", **repo) == 1
    assert value(fams, "preloader_exit_code") == 0
    assert value(fams, "preloader_last_success_timestamp_seconds") > 0


def test_a_failed_run_shows_its_exit_code_and_failed_state(hub, cache, tmp_path):
    path = tmp_path / "preloader.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/no-such-model", PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run", "--", "true"], env)
    assert proc.returncode == 66, proc.stderr
    fams = families(path.read_text())
    assert value(fams, "preloader_exit_code") == 66
    assert value(fams, "preloader_repo_state", repo="org/no-such-model", type="model", state="failed") == 1
    assert not fams["preloader_last_success_timestamp_seconds"].samples


@pytest.mark.parametrize("kind, code", [("missing", 127), ("not-executable", 126)])
def test_a_failed_exec_shows_its_exit_code_in_the_textfile(hub, cache, tmp_path, kind, code):
    """The file is written before the exec; an exec that fails writes it again, with 126 or 127."""
    program = tmp_path / "serve"
    if kind == "not-executable":
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o644)
    path = tmp_path / "preloader.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run", "--", str(program)], env)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("preloader: error: service command") == 1
    fams = families(path.read_text())
    assert value(fams, "preloader_exit_code") == code
    assert value(fams, "preloader_repo_state", repo=MODEL, type="model", state="complete") == 1  # its preload did
    assert value(fams, "preloader_last_success_timestamp_seconds") > 0


def test_warm_writes_warm_bytes_and_seconds(hub, cache, tmp_path):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    path = tmp_path / "warm.prom"
    proc = run_preloader(["warm", MODEL, "--metrics-file", str(path)], env)
    assert proc.returncode == 0, proc.stderr
    fams = families(path.read_text())
    warmed = value(fams, "preloader_warm_bytes")
    assert warmed > 0 and f"bytes={int(warmed)}" in proc.stderr
    assert value(fams, "preloader_warm_seconds") >= 0 and value(fams, "preloader_exit_code") == 0


def test_wait_serves_waiting_then_complete(hub, cache, tmp_path):
    path = tmp_path / "wait.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    proc = run_preloader(["wait", "--metrics-file", str(path)], env)
    assert proc.returncode == 0, proc.stderr
    fams = families(path.read_text())
    assert value(fams, "preloader_repo_state", repo=MODEL, type="model", state="complete") == 1
    assert value(fams, "preloader_repo_wanted_files", repo=MODEL, type="model") > 0
    assert value(fams, "preloader_last_success_timestamp_seconds") > 0


def test_the_hand_off_ends_the_endpoint_and_writes_the_file_first(hub, cache, tmp_path):
    """The exec'd service finds the port closed (exit 0, else 3) and the textfile already complete."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "handoff.prom"
    probe = ("import socket,sys,pathlib\n"
             f"text = pathlib.Path({str(path)!r}).read_text()\n"
             "assert 'state=\"complete\",type=\"model\"} 1.0' in text, text\n"
             f"try: socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
             "except ConnectionRefusedError: sys.exit(0)\n"
             "sys.exit(3)\n")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_ADDR=f"127.0.0.1:{port}",
                        PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run", "--", sys.executable, "-c", probe], env)
    assert proc.returncode == 0, proc.stderr
    assert f"metrics.listen addr=127.0.0.1:{port}" in proc.stderr


def test_retries_by_reason_and_origin_requests(hub, cache, tmp_path):
    from localhub import Status

    hub.add_rule(f"/api/models/{MODEL}/revision/", Status(503, times=1))
    path = tmp_path / "retry.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_FILE=str(path))
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    fams = families(path.read_text())
    retries = {s.labels["reason"]: s.value for s in fams["preloader_retries"].samples}
    assert retries == {"HubUnreachable": 1}, retries
    files = value(fams, "preloader_repo_wanted_files", repo=MODEL, type="model")
    assert value(fams, "preloader_origin_requests_total") == 2 + files  # two resolves, one download per file
    assert value(fams, "preloader_origin_bytes_total") == sum(
        r.body_bytes for r in hub.requests(method="GET", path_contains="/resolve/"))


def test_metrics_without_prometheus_client_is_69_with_what_to_install(monkeypatch, tmp_path):
    from preloader.errors import UnavailableError

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what `import` sees where it is not installed
    with pytest.raises(UnavailableError) as error:
        with serving(None, tmp_path / "p.prom"):
            pytest.fail("the body ran")
    assert error.value.exit_code == 69
    assert str(error.value) == ("metrics need the prometheus-client package: pip install 'hf-preloader[metrics]', "
                                "or unset PRELOADER_METRICS_ADDR and PRELOADER_METRICS_FILE")


def test_a_lock_wait_shows_as_waiting_lock_then_counts_its_seconds(hub, cache, tmp_path):
    """Another process holds the repo's lock: the endpoint says waiting_lock until it is released."""
    import subprocess

    from preloader.cache.locks import RepoLocks

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "lock.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_METRICS_ADDR=f"127.0.0.1:{port}",
                        PRELOADER_METRICS_FILE=str(path), PRELOADER_LOCK="flock")
    layout = Settings.load({"PRELOADER_CACHE_DIR": str(cache)}).layout
    waiting = 'preloader_repo_state{repo="org/tiny-model",state="waiting_lock",type="model"} 1.0'
    with RepoLocks.auto(layout, "flock").hold(RepoSpec("model", MODEL), timeout=10):
        proc = subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while True:  # waiting for an event (the state), not ordering by sleeping
                try:
                    if waiting in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode():
                        break
                except OSError:
                    pass  # not listening yet
                assert time.monotonic() < deadline and proc.poll() is None, "never seen waiting for the lock"
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    fams = families(path.read_text())
    assert value(fams, "preloader_lock_wait_seconds_total") > 0  # it was seen waiting before the release
    assert value(fams, "preloader_repo_state", repo=MODEL, type="model", state="complete") == 1


def test_sigterm_mid_download_leaves_143_and_failed_in_the_textfile(hub, cache, tmp_path):
    import signal
    import subprocess

    from localhub import Drip

    hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p, Drip(500_000))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "term.prom"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/big-model", PRELOADER_METRICS_FILE=str(path),
                        PRELOADER_METRICS_ADDR=f"127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", "true"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    downloading = 'preloader_repo_state{repo="org/big-model",state="downloading",type="model"} 1.0'
    try:
        deadline = time.monotonic() + 300
        while True:  # waiting for the state, an event
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                if downloading in text and value(families(text), "preloader_repo_downloaded_bytes_total",
                                                 repo="org/big-model", type="model") > 0:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "never seen downloading"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    fams = families(path.read_text())
    assert value(fams, "preloader_exit_code") == 143
    assert value(fams, "preloader_repo_state", repo="org/big-model", type="model", state="failed") == 1
    assert 0 < value(fams, "preloader_repo_downloaded_bytes_total", repo="org/big-model", type="model") < 12 * 2**20
    # The partial weights were removed and are not counted on disk: what is left is small files (the last update
    # and the removal race for a small file caught mid-write, so only the bound is exact).
    left = sum(f.stat().st_size for f in (cache / "models--org--big-model" / "blobs").iterdir())
    assert left < 2**20 and value(fams, "preloader_repo_disk_bytes", repo="org/big-model", type="model") < 2**20


def test_the_python_api_writes_the_metrics_file_it_is_given(hub, cache, tmp_path):
    """`metrics_file=` is a keyword like every setting: preload() exports what `pull` would."""
    import preloader

    path = tmp_path / "api.prom"
    preloader.preload(models=[MODEL], cache_dir=cache, endpoint=hub.url, metrics_file=str(path))
    fams = families(path.read_text())
    assert value(fams, "preloader_repo_state", state="complete", repo=MODEL, type="model") == 1
    assert value(fams, "preloader_exit_code") == 0
