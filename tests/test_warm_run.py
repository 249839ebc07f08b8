"""Warming wired into `preloader run` and `preloader warm`, in real subprocesses against the olah hub."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, preloader_env, run_preloader

MODEL = "org/tiny-model"


def test_run_warms_the_page_cache_then_execs(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, RUNPOD_HUGGINGFACE_DATASET="org/tiny-data",
                        PRELOADER_WARM="page-cache")
    proc = run_preloader(["run", "--", "sh", "-c", "echo started"], env)
    assert proc.returncode == 0, proc.stderr
    done = [line for line in proc.stderr.splitlines() if "warm.done" in line]
    assert len(done) == 1  # models only
    assert f"repo={MODEL}" in done[0] and "device=page-cache" in done[0] and "GB/s" in done[0]
    assert proc.stdout.strip() == "started"


@pytest.mark.nocuda
def test_gpu_warm_without_cuda_exits_69_before_downloading(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    proc = run_preloader(["run", "--warm", "gpu", "--", "true"], env)
    assert proc.returncode == 69
    assert "CUDA is not available" in proc.stderr
    assert hub.count() == 0 and not cache.exists()


def test_warm_command_on_cached_models(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    proc = run_preloader(["warm", MODEL], env)
    assert proc.returncode == 66 and "not complete in the cache" in proc.stderr
    assert run_preloader(["run"], env).returncode == 0
    hub.reset()
    proc = run_preloader(["warm", MODEL, "--log-format", "json"], env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    done = [e for e in events if e.get("event") == "warm.done"]
    assert done and done[0]["repo"] == MODEL and done[0]["bytes"] > 0
    assert hub.count() == 0  # no network


def test_warm_lock_sidecar_holds_until_sigterm(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_WARM="page-cache",
                        PRELOADER_WARM_LOCK="1")
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    lines = []
    while not any("warm.holding" in line for line in lines):  # logged whether or not mlock was allowed
        assert time.monotonic() < deadline and proc.poll() is None, lines
        lines.append(proc.stderr.readline())
    holding = next(line for line in lines if "warm.holding" in line)
    if not any("warm.lock_failed" in line for line in lines):  # RLIMIT_MEMLOCK permitting, the pages are locked
        assert int(holding.split("locked=")[1].split()[0]) > 0, holding
    assert proc.poll() is None  # it stays up holding them until told to stop
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 0


def test_warm_lock_with_a_command_is_ignored_with_a_warning(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_WARM="page-cache")
    proc = run_preloader(["run", "--warm-lock", "--", "true"], env)
    assert proc.returncode == 0
    assert "warning: --warm-lock is ignored with a command" in proc.stderr


def test_plan_shows_warm(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_WARM="gpu:1", PRELOADER_DTYPE="bfloat16")
    plan = json.loads(run_preloader(["plan"], env).stdout)
    assert plan["warm"] == {"mode": "gpu:1", "lock": False, "dtype": "bfloat16"}
