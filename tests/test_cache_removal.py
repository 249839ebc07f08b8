"""Removals that fail part-way (`rm`, `prune`'s eviction and clean-up) are reported, exit 74, and never counted.

Real failures: a folder or a blob made immutable (`chattr +i`, which even root cannot delete from) inside a
cache a real preload filled.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import preloader_env, run_preloader

import preloader
from preloader.spec import RepoSpec

MODEL = "org/tiny-model"
REPO = "models--org--tiny-model"


@pytest.fixture
def immutable():
    """immutable(path): `chattr +i` until the end of the test."""
    made: list[Path] = []

    def make(path: Path) -> None:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)


@pytest.fixture
def filled(hub, cache, mirrors):
    preloader.preload(models=MODEL, cache_dir=cache, endpoint=hub.url)
    return cache / REPO / "snapshots" / mirrors.sha("model", MODEL, "main")


def state(repo: Path) -> dict[str, int]:
    """Every file under the repo folder (links as links) and its size."""
    return {str(p.relative_to(repo)): p.lstat().st_size for p in sorted(repo.rglob("*")) if not p.is_dir()
            or p.is_symlink()}


def test_rm_of_a_snapshot_that_cannot_be_deleted_is_not_counted_and_exits_74(hub, cache, filled, immutable):
    links = state(filled)
    immutable(filled)  # its links cannot be unlinked, nor the folder removed
    blobs = state(cache / REPO / "blobs")
    env = preloader_env(hub, cache)
    proc = run_preloader(["rm", MODEL, "--yes"], env)
    assert proc.returncode == 74, proc.stderr
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("preloader: error: 1 removal(s) failed part-way and were not "
                                                   f"counted: model {MODEL}@{filled.name[:12]}: could not remove "
                                                   f"{filled} completely: ")
    assert "Operation not permitted" in error[0]
    assert "removed " not in proc.stdout and proc.stdout.splitlines()[-1] == "freed 0 B"
    assert proc.stdout.startswith(f"skipped  model {MODEL}@{filled.name[:12]}: could not remove")
    assert state(cache / REPO / "blobs") == blobs  # the links left still point at every blob: all kept
    assert state(filled) == links  # every link of it left, still counted as there
    subprocess.run(["chattr", "-i", str(filled)], check=True)
    again = run_preloader(["rm", MODEL, "--yes", "--json"], env)
    assert again.returncode == 0, again.stderr
    assert [r["repo_id"] for r in json.loads(again.stdout)["removed"]] == [MODEL]
    assert not (cache / REPO).exists()


def test_an_eviction_whose_blob_cannot_be_deleted_frees_only_what_left(hub, cache, filled, immutable):
    blobs = cache / REPO / "blobs"
    weights = os.path.realpath(filled / "model.safetensors")
    sizes = {p.name: p.stat().st_size for p in blobs.iterdir()}
    immutable(Path(weights))
    env = preloader_env(hub, cache)
    proc = run_preloader(["prune", "--max-size", "0", "--json"], env)
    assert proc.returncode == 74, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["repo_id"] for r in report["removed"]] == [MODEL]  # the snapshot itself went
    name = Path(weights).name
    assert report["freed"] == sum(sizes.values()) - sizes[name]  # not the blob that stayed
    assert [s for s in report["skipped"] if f"blob {name[:12]}" in s and "Operation not permitted" in s]
    assert sorted(os.listdir(blobs)) == [name]  # its bytes are still there, nothing else
    assert "removal(s) failed part-way" in proc.stderr


def test_the_api_reports_what_failed(hub, cache, filled, immutable):
    immutable(filled)
    report = preloader.cache.remove(cache, [RepoSpec("model", MODEL)])
    assert report.removed == [] and report.freed == 0
    assert len(report.failed) == 1 and report.failed == report.skipped
    assert f"could not remove {filled} completely" in report.failed[0]
