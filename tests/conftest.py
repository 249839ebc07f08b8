"""Shared fixtures: a clean environment per test, and one real olah hub per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["faultsuite"]  # the fault suite's ledger and its per-test accounting (tests/faultsuite.py)
ENV_PREFIXES = ("PRELOADER_", "RUNPOD_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_")


def cuda_available() -> bool:
    """torch sees a CUDA device. torch is imported only when a test marked gpu or nocuda is collected."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Test files that share machine-wide state (podman's images and containers) run on one xdist worker.
SHARED_GROUPS = {"test_baked_image.py": "containers", "test_containers.py": "containers",
                 "test_kubernetes.py": "containers"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA and `nocuda` tests check a machine without it: each skips by its marker alone.

    Under `pytest -n N --dist loadgroup` (make test) each file is one unit of work, as with loadfile, so a
    module's fixtures are built once; the container files form one unit, since they share podman's images."""
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(name, name)))
    marked = [item for item in items if "gpu" in item.keywords or "nocuda" in item.keywords]
    if not marked:
        return
    cuda = cuda_available()
    for item in marked:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "nocuda" in item.keywords and cuda:
            item.add_marker(pytest.mark.skip(reason="checks a machine without CUDA"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting leaks in from the machine; the cache lives in tmp_path."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def mirrors(tmp_path_factory):
    from localhub import build_mirrors

    return build_mirrors(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="session")
def olah(mirrors, tmp_path_factory):
    from localhub import start_olah

    server = start_olah(mirrors.mirrors_dir, tmp_path_factory.mktemp("olah"))
    yield server
    server.stop()


@pytest.fixture
def hub(olah):
    """A counting proxy in front of olah, fresh per test so its counts are the test's own."""
    from localhub import HubProxy

    proxy = HubProxy(olah.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "volume" / "hub"


def preloader_env(hub, cache, **extra) -> dict[str, str]:
    """The environment for a preloader subprocess: this test's env plus hub and cache."""
    env = {k: v for k, v in os.environ.items()}
    env.update({"HF_ENDPOINT": hub.url, "PRELOADER_CACHE_DIR": str(cache), "PRELOADER_RETRIES": "2"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_preloader(args, env, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m preloader ARGS` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "preloader", *args], env=env, capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, **kwargs,
    )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Under xdist, each worker's fault-suite counts join the controller's totals."""
    suite = sys.modules.get("faultsuite")
    counts = getattr(node, "workeroutput", {}).get("fault_ledger")
    if suite is not None and counts:
        for key, value in counts.items():
            suite.LEDGER[key] += value


def pytest_sessionfinish(session, exitstatus):
    """The fault suite's totals (tests/faultsuite.py), once for every file that joined it; an xdist worker
    hands its counts to the controller instead."""
    suite = sys.modules.get("faultsuite")
    if hasattr(session.config, "workeroutput"):
        if suite is not None:
            session.config.workeroutput["fault_ledger"] = dict(suite.LEDGER)
        return
    if suite is None or not suite.LEDGER["runs"]:
        return
    import json

    line = "fault suite: " + " ".join(f"{k}={v}" for k, v in suite.LEDGER.items())
    print("\n" + line)
    if os.environ.get("PRELOADER_FAULT_SUMMARY"):
        Path(os.environ["PRELOADER_FAULT_SUMMARY"]).write_text(json.dumps(suite.LEDGER, indent=2) + "\n")
