"""preloader.Cache, a capacity bound (PRELOADER_MAX_CACHE_SIZE) and `preloader pull`."""

from __future__ import annotations

import json
import re

import pytest
from conftest import preloader_env, run_preloader

import preloader
from preloader.cache import records
from preloader.spec import RepoSpec

MODEL, SECOND, BIG, DATA = "org/tiny-model", "org/second-model", "org/big-model", "org/tiny-data"


def test_a_cache_object_is_a_mapping_of_complete_snapshots(hub, cache, mirrors):
    store = preloader.Cache(cache, endpoint=hub.url)
    assert MODEL not in store and len(store) == 0
    with pytest.raises(KeyError, match="not complete"):
        store[MODEL]
    assert store.get(MODEL) is None
    results = store.preload(models=[MODEL, f"{MODEL}:dev"], datasets=f"{DATA}:v1.0")
    main = mirrors.sha("model", MODEL, "main")
    assert store[MODEL] == results[0].path == cache / "models--org--tiny-model" / "snapshots" / main
    assert f"hf://datasets/{DATA}@v1.0" in store and RepoSpec("dataset", DATA, "v1.0") in store
    assert f"{MODEL}:{main}" in store and "not a spec" not in store
    assert sorted(str(s) for s in store) == sorted([
        f"model:{MODEL}@{main}", f"model:{MODEL}@{mirrors.sha('model', MODEL, 'dev')}",
        f"dataset:{DATA}@{mirrors.sha('dataset', DATA, 'v1.0')}"])
    assert len(store) == 3
    del store[f"{MODEL}:dev"]
    assert f"{MODEL}:dev" not in store and MODEL in store and len(store) == 2
    with pytest.raises(KeyError):
        del store[f"{MODEL}:dev"]


def test_a_capacity_evicts_least_recently_used_never_the_one_just_preloaded(hub, cache, mirrors):
    size = {repo: sum(map(len, mirrors.files("model", repo, "main").values())) for repo in (MODEL, SECOND, BIG)}
    bound = size[BIG] + size[MODEL] + size[SECOND] // 2  # all three do not fit; big-model and tiny-model do
    store = preloader.Cache(cache, capacity_bytes=bound, endpoint=hub.url)
    # Each use stamped a second apart (what a preload records), not by sleeping between them.
    used = iter(range(1_000, 2_000))
    for repo in (MODEL, SECOND, MODEL):  # tiny-model used again: now second-model is the least recently used
        [result] = store.preload(models=[repo])
        records.mark_used(store.layout, RepoSpec("model", repo, result.commit), result.commit, now=next(used))
    assert MODEL in store and SECOND in store
    store.preload(models=[BIG])  # over the bound: evict in LRU order until it holds
    assert BIG in store
    assert SECOND not in store  # least recently used went first
    assert MODEL in store  # evicting one was enough
    total = json.loads(run_preloader(["ls", "--json"], preloader_env(hub, cache)).stdout)["totals"]["size"]
    assert total <= bound
    tiny = preloader.Cache(cache, capacity_bytes=1, endpoint=hub.url)
    tiny.preload(models=[MODEL])
    assert MODEL in tiny  # never the one just preloaded, whatever the bound


def test_run_takes_the_same_bound(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SECOND)
    assert run_preloader(["run"], env).returncode == 0
    proc = run_preloader(["run"], env | {"RUNPOD_HUGGINGFACE_MODEL": BIG, "PRELOADER_MAX_CACHE_SIZE": "1M"})
    assert proc.returncode == 0, proc.stderr
    # The room is made before the download (the least recently used snapshot goes), not after it.
    assert re.search(r"capacity\.room bound=1048576 needed=\d+ evicted=1 ", proc.stderr), proc.stderr
    assert run_preloader(["status", SECOND], env).returncode == 1
    assert run_preloader(["status", BIG], env).returncode == 0


def test_pull_at_a_shell(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SECOND)  # the env's repos are not pulled
    proc = run_preloader(["pull", MODEL, f"hf://models/{MODEL}@dev"], env)
    assert proc.returncode == 0, proc.stderr
    snapshots = cache / "models--org--tiny-model" / "snapshots"
    assert proc.stdout.split() == [str(snapshots / mirrors.sha("model", MODEL, "main")),
                                   str(snapshots / mirrors.sha("model", MODEL, "dev"))]
    assert not (cache / "models--org--second-model").exists()
    proc = run_preloader(["pull", "--dataset", f"{DATA}:v1.0"], env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(mirrors.sha("dataset", DATA, "v1.0"))
    proc = run_preloader(["pull", "nope"], env)
    assert proc.returncode == 78 and "nope" in proc.stderr and proc.stdout == ""
