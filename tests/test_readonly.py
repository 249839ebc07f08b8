"""A complete cache mounted read-only (the readers of a shared volume): the service starts, nothing is written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import preloader_env, run_preloader

MODEL, DATA = "org/tiny-model", "org/tiny-data"
ON_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
needs_root = pytest.mark.skipif(os.geteuid() != 0 and not ON_CI, reason="bind mounts need root")


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with what a write would change."""
    found = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in dirnames + names:
            path = Path(dirpath) / name
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                                  os.readlink(path) if path.is_symlink() else None)
    return found


@pytest.fixture
def read_only(tmp_path):
    """mount(src) -> a read-only bind mount of src; unmounted after the test."""
    mounts = []

    def mount(src: Path) -> Path:
        dst = tmp_path / f"ro-{len(mounts)}"
        dst.mkdir()
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
        mounts.append(dst)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], check=True)
        return dst

    yield mount
    for dst in reversed(mounts):
        subprocess.run(["umount", str(dst)], check=False)


@needs_root
def test_a_read_only_volume_starts_the_service_and_writes_nothing(hub, mirrors, tmp_path, read_only):
    volume = tmp_path / "volume"
    commit = mirrors.sha("model", MODEL, "main")
    writer = preloader_env(hub, volume / "hub", RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev",
                           RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0")
    assert run_preloader(["run"], writer).returncode == 0
    before = tree(volume)
    ro = read_only(volume)
    names = " ".join(f'"$PRELOADER_MODEL_PATH/{n}"' for n in mirrors.filenames("model", MODEL, "main"))
    reader = writer | {"PRELOADER_CACHE_DIR": str(ro / "hub")}
    hub.reset()
    # By branch and tag name: one lookup per repo, then the service, with one warning.
    proc = run_preloader(["run", "--", "sh", "-c", f"cat {names} >/dev/null && echo started"], reader)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "started"
    warnings = [line for line in proc.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "the cache is read-only here" in warnings[0], proc.stderr
    assert not any("/resolve/" in r.path for r in hub.requests())  # no file was fetched
    # Pinned to its commit: no network at all.
    hub.reset()
    pinned = reader | {"RUNPOD_HUGGINGFACE_MODEL": f"{MODEL}:{commit}", "RUNPOD_HUGGINGFACE_DATASET": ""}
    proc = run_preloader(["run", "--", "sh", "-c", 'cat "$PRELOADER_MANIFEST" >/dev/null && echo started'], pinned)
    assert proc.returncode == 0 and proc.stdout.strip() == "started", proc.stderr
    assert hub.count() == 0
    # `wait` on the readers' side.
    proc = run_preloader(["wait", "--", "sh", "-c", "echo waited"], reader)
    assert proc.returncode == 0 and proc.stdout.strip() == "waited", proc.stderr
    assert tree(volume) == before


@needs_root
def test_a_read_only_volume_missing_files_fails_clearly(hub, tmp_path, read_only):
    volume = tmp_path / "volume"
    writer = preloader_env(hub, volume / "hub", RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], writer).returncode == 0
    before = tree(volume)
    ro = read_only(volume)
    reader = writer | {"PRELOADER_CACHE_DIR": str(ro / "hub"), "RUNPOD_HUGGINGFACE_MODEL": f"{MODEL},org/second-model"}
    proc = run_preloader(["run", "--", "true"], reader)
    assert proc.returncode == 77, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"preloader: error: the cache {ro / 'hub'} is on a volume mounted read-only here and "
                                "needs files: "
                                "model:org/second-model@main: commit ")
    assert lines[-1].endswith("is not in the cache; preload it from a node that mounts it read-write (`preloader run`), "
                              "then start this one")
    assert "Traceback" not in proc.stderr
    proc = run_preloader(["wait", "--timeout", "1s", "--", "true"], reader)
    assert proc.returncode == 75 and "org/second-model" in proc.stderr and "Traceback" not in proc.stderr
    assert tree(volume) == before
