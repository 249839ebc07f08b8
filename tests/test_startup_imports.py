"""A pinned cached start stays light: it imports none of the heavy libraries it does not need."""

from __future__ import annotations

import re
import sys

from conftest import ROOT, preloader_env, run_preloader

MODEL = "org/tiny-model"
HEAVY = ("huggingface_hub", "filelock", "tenacity", "torch", "safetensors", "transformers", "prometheus_client")


def imported(stderr: str) -> set[str]:
    """Top-level packages `python -X importtime` saw imported (it prints one line per module, as imported)."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", stderr, re.M)
    return {name.split(".")[0] for name in names}


def test_a_pinned_cached_start_imports_no_heavy_library(hub, mirrors, cache):
    commit = mirrors.sha("model", MODEL, "main")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}:{commit}")
    assert run_preloader(["run"], env).returncode == 0
    hub.reset()
    import subprocess

    # The service is a command that exits 0: the hand-off is an exec, so what the preloader imported is what
    # importtime printed before it.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "preloader", "run", "--", "true"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert hub.count() == 0
    seen = imported(proc.stderr)
    assert "preloader" in seen and "click" in seen  # the probe sees imports at all
    assert not seen & set(HEAVY), sorted(seen & set(HEAVY))
