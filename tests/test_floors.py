"""The declared floor of every runtime dependency works: installed alone in a fresh venv, it preloads.

A floor that cannot be installed together with the others, or whose API the code has outgrown, fails here
instead of at a user's. pip takes the floors from PyPI (or this machine's wheel mirror) into a venv of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import venv

import pytest
from conftest import ROOT, preloader_env
from packaging.version import Version

MODEL = "org/tiny-model"


def floors() -> list[str]:
    """`name==floor` for every runtime dependency in pyproject.toml."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = []
    for dep in deps:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([^,\s;]+)", dep)
        assert match, f"{dep!r} declares no floor"
        pins.append(f"{match[1]}=={match[2]}")
    return pins


@pytest.fixture(scope="module")
def floor_python(tmp_path_factory):
    where = tmp_path_factory.mktemp("floors")
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *floors()], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the declared floors cannot be installed together:\n{proc.stderr[-3000:]}"
    return python


def installed(python) -> dict[str, str]:
    proc = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                          check=True)
    import json

    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(proc.stdout)}


@pytest.mark.parametrize("lock", ["flock", "lease"])
def test_the_floors_preload_a_model(floor_python, hub, mirrors, cache, lock):
    versions = installed(floor_python)
    for pin in floors():
        name, version = pin.split("==")
        assert Version(versions[name.lower().replace("_", "-")]) == Version(version)  # the floor, not newer
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCK=lock, PYTHONPATH=str(ROOT))
    proc = subprocess.run([str(floor_python), "-m", "preloader", "run", "--", sys.executable, "-c", "print('up')"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "up"
    snapshot = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main")
    for name, content in mirrors.files("model", MODEL, "main").items():
        assert (snapshot / name).read_bytes() == content
