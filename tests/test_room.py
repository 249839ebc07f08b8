"""Making room before a download (PRELOADER_MAX_CACHE_SIZE): a node cache on a small real tmpfs.

Three 1 MiB models (localhub/room.py) fill a 4 MiB volume; the fourth does not fit beside them. With the
bound set, least recently used snapshots are evicted before the download and the service starts; a
snapshot of the plan or one whose lock is held is never evicted; when nothing that may go would make room,
nothing goes and the run fails with 74 and the numbers. Use times are written explicitly (records.mark_used),
so the order of eviction does not rest on the clock.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import preloader_env, run_preloader

from localhub.room import ROOM_MODELS
from preloader.cache import records
from preloader.cache.layout import Layout
from preloader.cache.locks import RepoLocks
from preloader.spec import RepoSpec

A, B, C, D = ROOM_MODELS
MIB = 1024 * 1024
# What the service prints: the snapshot it was given and the config it loads from there.
SERVICE = [sys.executable, "-c", "import os; p = os.environ['PRELOADER_MODEL_PATH']; "
           "print('service:', p, sorted(os.listdir(p)), open(os.path.join(p, 'config.json')).read().strip())"]


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the tests run as root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def node(tmp_path, hub, mirrors):
    """A 4 MiB volume whose cache holds A, B and C, used last A, then C, then B (B is the least recent)."""
    with tmpfs(tmp_path / "node", "4m") as volume:
        cache = volume / "hub"
        env = preloader_env(hub, cache, PRELOADER_MIN_FREE="64KiB")
        filled = run_preloader(["run"], {**env, "RUNPOD_HUGGINGFACE_MODEL": ",".join((A, B, C))})
        assert filled.returncode == 0, filled.stderr
        layout = Layout.build(cache)
        for repo, used in ((B, 1000.0), (C, 2000.0), (A, 3000.0)):
            records.mark_used(layout, spec(repo), commit(mirrors, repo), now=used)
        hub.reset()
        yield cache, env, layout


def spec(repo: str) -> RepoSpec:
    return RepoSpec("model", repo)


def commit(mirrors, repo: str) -> str:
    return mirrors.sha("model", repo, "main")


def snapshot(cache: Path, mirrors, repo: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit(mirrors, repo)


def present(cache: Path, mirrors) -> list[str]:
    """The models whose weights are on disk, whole."""
    return [repo for repo in ROOM_MODELS
            if (snapshot(cache, mirrors, repo) / "model.safetensors").is_file()
            and (snapshot(cache, mirrors, repo) / "model.safetensors").stat().st_size == MIB]


def served(proc, cache: Path, mirrors, repo: str) -> None:
    """The service ran on `repo`'s snapshot and read its config."""
    assert proc.returncode == 0, proc.stderr
    n = ROOM_MODELS.index(repo)
    assert f"service: {snapshot(cache, mirrors, repo)} ['.gitattributes', 'config.json', 'model.safetensors'] " \
           f'{{"model_type": "blob", "n": {n}}}' in proc.stdout


def test_without_a_bound_a_full_volume_fails_as_before(node, hub, mirrors):
    cache, env, _ = node
    proc = run_preloader(["run", "--", *SERVICE], {**env, "RUNPOD_HUGGINGFACE_MODEL": D})
    assert proc.returncode == 74, proc.stderr
    assert "preloader: error: not enough space on the cache volume" in proc.stderr
    assert "(PRELOADER_MIN_FREE); free space (`preloader prune`) or use a bigger volume" in proc.stderr
    assert present(cache, mirrors) == [A, B, C]
    assert hub.file_gets() == {}
    assert "service:" not in proc.stdout


def test_the_least_recently_used_go_before_the_download_and_the_service_starts(node, hub, mirrors):
    """The bound (2.5 MiB) leaves room for 1.5 MiB besides D: B and C, the two least recently used, go."""
    cache, env, _ = node
    proc = run_preloader(["run", "--", *SERVICE],
                         {**env, "RUNPOD_HUGGINGFACE_MODEL": D, "PRELOADER_MAX_CACHE_SIZE": "2.5MiB"})
    served(proc, cache, mirrors, D)
    assert present(cache, mirrors) == [A, D]
    assert not (cache / "models--org--room-b").exists() and not (cache / "models--org--room-c").exists()
    assert "preloader: capacity.room " in proc.stderr and " evicted=2 " in proc.stderr
    assert hub.file_gets()[(D, "model.safetensors")] == 1
    assert {repo for repo, _ in hub.file_gets()} == {D}


def test_a_full_disk_under_a_loose_bound_evicts_only_what_the_download_needs(node, hub, mirrors):
    """A bound the cache is far from (1 GiB): the free space alone asks for room, one snapshot's worth."""
    cache, env, _ = node
    proc = run_preloader(["run", "--", *SERVICE],
                         {**env, "RUNPOD_HUGGINGFACE_MODEL": D, "PRELOADER_MAX_CACHE_SIZE": "1GiB"})
    served(proc, cache, mirrors, D)
    assert present(cache, mirrors) == [A, C, D]
    assert " evicted=1 " in proc.stderr


def test_a_plan_bigger_than_the_bound_evicts_every_other_and_still_runs(node, hub, mirrors):
    """D alone (1 MiB) is over a 512 KiB bound: every other snapshot goes, and the disk, not the bound, decides."""
    cache, env, _ = node
    proc = run_preloader(["run", "--", *SERVICE],
                         {**env, "RUNPOD_HUGGINGFACE_MODEL": D, "PRELOADER_MAX_CACHE_SIZE": "512KiB"})
    served(proc, cache, mirrors, D)
    assert present(cache, mirrors) == [D]
    assert " evicted=3 " in proc.stderr


def test_a_held_lock_protects_its_snapshot(node, hub, mirrors):
    """B is the least recently used, but its lock is held (another preload, a removal): C and A go instead."""
    cache, env, layout = node
    with RepoLocks.auto(layout).hold(spec(B), timeout=0):
        proc = run_preloader(["run", "--", *SERVICE],
                             {**env, "RUNPOD_HUGGINGFACE_MODEL": D, "PRELOADER_MAX_CACHE_SIZE": "2.5MiB"})
    served(proc, cache, mirrors, D)
    assert present(cache, mirrors) == [B, D]
    assert f"not evicted: model {B}@{commit(mirrors, B)[:12]}: locked" in proc.stderr


def test_a_snapshot_of_the_plan_is_never_evicted(node, hub, mirrors):
    """B is the least recently used and in the plan (already complete): C and A go; B is served first."""
    cache, env, _ = node
    proc = run_preloader(["run", "--", *SERVICE],
                         {**env, "RUNPOD_HUGGINGFACE_MODEL": f"{B},{D}", "PRELOADER_MAX_CACHE_SIZE": "2.5MiB"})
    served(proc, cache, mirrors, B)
    assert present(cache, mirrors) == [B, D]
    assert {repo for repo, _ in hub.file_gets()} == {D}


def test_when_eviction_cannot_make_room_nothing_goes(node, hub, mirrors):
    """A, B and C are all in the plan with D: nothing may go, the disk cannot take D: 74, every snapshot kept."""
    cache, env, _ = node
    proc = run_preloader(["run", "--", *SERVICE],
                         {**env, "RUNPOD_HUGGINGFACE_MODEL": ",".join(ROOM_MODELS), "PRELOADER_MAX_CACHE_SIZE": "2MiB"})
    assert proc.returncode == 74, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    assert "the plan needs 1,048,6" in line and "evicting every other complete snapshot would free only 0 bytes" in line
    assert f"so none was evicted (kept, in the plan: model {A}@" in line
    assert line.endswith("; free space (`preloader prune`) or use a bigger volume")
    assert present(cache, mirrors) == [A, B, C]
    assert hub.file_gets() == {}
    assert "service:" not in proc.stdout


def test_when_the_locked_snapshot_is_the_only_room_nothing_else_goes(node, hub, mirrors):
    """A and C are in the plan, B is locked: the room D needs is not there, and A and C are not touched."""
    cache, env, layout = node
    with RepoLocks.auto(layout).hold(spec(B), timeout=0):
        proc = run_preloader(["run", "--", *SERVICE],
                             {**env, "RUNPOD_HUGGINGFACE_MODEL": f"{A},{C},{D}", "PRELOADER_MAX_CACHE_SIZE": "1GiB"})
    assert proc.returncode == 74, proc.stderr
    assert f"so none was evicted (kept, in the plan: model {A}@" in proc.stderr
    assert f"; locked: model {B}@{commit(mirrors, B)[:12]})" in proc.stderr
    assert present(cache, mirrors) == [A, B, C]
    assert hub.file_gets() == {}
