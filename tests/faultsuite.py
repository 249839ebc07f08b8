"""What every fault-suite file shares: the token to leak, the ledger of totals, and a run that counts itself.

A test file joins the suite with `pytestmark = pytest.mark.faults`: conftest loads this module as a plugin,
and its autouse fixture `account` then counts the faults fired and searches every file written for the token. The totals
for docs/RELIABILITY.md are printed once at the end of the session (`-s`) and written to
$PRELOADER_FAULT_SUMMARY if set (see conftest.pytest_sessionfinish).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env

TOKEN = "hf_FaultSuiteToken9f3c1b7e2d"
MODEL, BIG, DATA = "org/tiny-model", "org/big-model", "org/tiny-data"
SIZE = 12 * 1024 * 1024
LEDGER = {"faults_injected": 0, "runs": 0, "runs_survived": 0, "bytes_lost": 0, "token_leaks": 0, "tracebacks": 0}


def search_for_token(root: Path) -> None:
    """Fail the test (and count a leak) if any file under `root` holds the token."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if TOKEN.encode() in data:
                LEDGER["token_leaks"] += 1
                pytest.fail(f"token written to {path}")


@pytest.fixture(autouse=True)
def account(request, tmp_path):
    """After each fault-suite test: count the faults the proxy fired, and search every file written for the token."""
    yield
    if request.node.get_closest_marker("faults") is None:
        return
    hub = request.node.funcargs.get("hub")
    if hub is not None:
        LEDGER["faults_injected"] += sum(rule.action.fired for rule in hub.rules)
    search_for_token(tmp_path)


def env_for(hub, cache, **extra):
    return preloader_env(hub, cache, RUNPOD_HUGGINGFACE_USER="alice", RUNPOD_HUGGINGFACE_TOKEN=TOKEN, **extra)


def run(args, env, timeout=120, expect=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the preloader; a run "survives" when it exits with the code expected, and never shows the token
    or a traceback it was not asked for."""
    proc = subprocess.run([sys.executable, "-m", "preloader", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=kwargs.pop("cwd", ROOT), **kwargs)
    LEDGER["runs"] += 1
    if TOKEN in proc.stdout + proc.stderr:
        LEDGER["token_leaks"] += 1
        pytest.fail("token in the output")
    traceback_asked = env.get("PRELOADER_DEBUG") == "1"
    if not traceback_asked and "Traceback" in proc.stderr:
        LEDGER["tracebacks"] += 1
    if (traceback_asked or "Traceback" not in proc.stderr) and (expect is None or proc.returncode == expect):
        LEDGER["runs_survived"] += 1
    return proc


def snapshot_bytes_ok(cache: Path, mirrors, repo: str, rev: str = "main", repo_type: str = "model") -> bool:
    """The snapshot holds exactly the mirror's bytes; counts what differs as bytes lost."""
    folder = ("models--" if repo_type == "model" else "datasets--") + repo.replace("/", "--")
    snapshot = cache / folder / "snapshots" / mirrors.sha(repo_type, repo, rev)
    ok = True
    for name, content in mirrors.files(repo_type, repo, rev).items():
        path = snapshot / name
        if not path.exists() or path.read_bytes() != content:
            LEDGER["bytes_lost"] += len(content)
            ok = False
    return ok


def inject(n: int = 1) -> None:
    """Count faults made outside the proxy: a kill, a full disk, a planted link, a racing process..."""
    LEDGER["faults_injected"] += n


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".incomplete") or ".preloader-tmp-" in p.name]


def records(cache: Path) -> list[Path]:
    return list((cache.parent / "preloader" / "complete").rglob("*.json"))
