"""The CLI and the API are one path: the same settings give the same results from `preloader run`/`pull` and
from `preloader.preload`/`Cache`; and where no argument says otherwise, the API follows huggingface_hub's env
conventions (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE), never the CLI's RunPod and PRELOADER_* variables."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import ROOT, preloader_env, run_preloader

import preloader
from preloader.errors import PreloaderError

MODEL, SECOND, BIG, DATA = "org/tiny-model", "org/second-model", "org/big-model", "org/tiny-data"


def snapshots(cache) -> list[str]:
    """Every complete snapshot in a cache, pinned to its commit."""
    return sorted(str(spec) for spec in preloader.Cache(cache))


def relative(cache, path) -> str:
    return os.path.relpath(path, cache)


def test_the_same_settings_give_the_same_results_from_the_cli_and_the_api(hub, mirrors, tmp_path, caplog):
    pytest.importorskip("datasets")
    cli_cache, api_cache = tmp_path / "cli" / "hub", tmp_path / "api" / "hub"
    settings = {"max_cache_size": "1M", "warm": "page-cache", "prepare_datasets": "1", "exclude": "config.json"}

    # The CLI: `pull` one model, then `run` the next with a capacity, warming and a dataset to prepare.
    env = preloader_env(hub, cli_cache)
    assert run_preloader(["pull", SECOND], env).returncode == 0
    cli_first = hub.file_gets()
    hub.reset()
    env |= {f"PRELOADER_{name.upper()}": value for name, value in settings.items()}
    env |= {"RUNPOD_HUGGINGFACE_MODEL": BIG, "RUNPOD_HUGGINGFACE_DATASET": f"{DATA}:v1.0"}
    proc = run_preloader(["run", "--", "sh", "-c", 'cat "$PRELOADER_MANIFEST"'], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cli_repos = [(r["repo"], r["commit"], relative(cli_cache, r["path"])) for r in json.loads(proc.stdout)["repos"]]
    cli_second = hub.file_gets()
    assert "warm.done repo=org/big-model" in proc.stderr
    hub.reset()

    # The API, with the same settings as keywords.
    caplog.set_level(logging.INFO, logger="preloader")
    preloader.preload(SECOND, cache_dir=api_cache, endpoint=hub.url)
    assert hub.file_gets() == cli_first
    hub.reset()
    results = preloader.preload(BIG, f"{DATA}:v1.0", cache_dir=api_cache, endpoint=hub.url, **settings)
    assert [(r.repo_id, r.commit, relative(api_cache, r.path)) for r in results] == cli_repos
    assert hub.file_gets() == cli_second  # the same files fetched, config.json excluded from both
    assert (BIG, "config.json") not in cli_second and "config.json" in mirrors.files("model", BIG, "main")
    warmed = [r.fields["repo"] for r in caplog.records if r.getMessage() == "warm.done"]
    assert warmed == [BIG]

    # The same evictions: the capacity removed second-model from both caches, never what was just preloaded.
    assert snapshots(api_cache) == snapshots(cli_cache) == sorted([
        f"model:{BIG}@{mirrors.sha('model', BIG, 'main')}", f"dataset:{DATA}@{mirrors.sha('dataset', DATA, 'v1.0')}"])
    # The dataset prepared for `datasets` beside each cache (HF_HOME/datasets).
    for cache in (cli_cache, api_cache):
        assert any((cache.parent / "datasets").iterdir())


def test_cache_objects_take_every_setting_as_a_keyword(hub, mirrors, cache, tmp_path):
    store = preloader.Cache(cache, endpoint=hub.url, max_cache_size="1k")
    assert store.capacity == 1024
    store.preload(SECOND)
    store.preload(BIG)
    assert SECOND not in store and BIG in store  # evicted within max_cache_size, never the one just preloaded
    jsons = preloader.Cache(tmp_path / "jsons", endpoint=hub.url, include=["*.json"])
    [result] = jsons.preload(BIG)
    assert sorted(p.name for p in result.path.iterdir()) == sorted(
        name for name in mirrors.files("model", BIG, "main") if name.endswith(".json"))
    assert jsons[BIG] == result.path  # complete as its include sees it
    with pytest.raises(preloader.ConfigError, match="capacity_bytes and max_cache_size are the same setting"):
        preloader.Cache(cache, capacity_bytes=1, max_cache_size=2)


def test_pull_prepares_datasets_as_run_does(hub, cache):
    pytest.importorskip("datasets")
    proc = run_preloader(["pull", "--dataset", "--prepare-datasets", f"{DATA}:v1.0"], preloader_env(hub, cache),
                         timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "datasets.prepared repo=org/tiny-data" in proc.stderr
    assert any((cache.parent / "datasets").iterdir())


def test_a_worker_with_hf_home_and_hf_endpoint_fills_hf_home_from_that_endpoint(hub, mirrors, tmp_path):
    """A container with HF_HOME on the volume and HF_ENDPOINT at its mirror: preload() with no arguments but the
    repo fills $HF_HOME/hub from the mirror. The CLI's RunPod and PRELOADER_* variables are not the API's."""
    home = tmp_path / "runpod-volume"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRELOADER_", "RUNPOD_"))}
    env |= {"HF_HOME": str(home), "HF_ENDPOINT": hub.url,
            "PRELOADER_CACHE_DIR": str(tmp_path / "cli-cache"), "PRELOADER_TIMEOUT": "not a duration",
            "RUNPOD_HUGGINGFACE_MODEL": SECOND}
    script = f"import preloader\nfor r in preloader.preload({MODEL!r}):\n    print(r.path)\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    main = mirrors.sha("model", MODEL, "main")
    assert proc.stdout.split() == [str(home / "hub" / "models--org--tiny-model" / "snapshots" / main)]
    assert hub.count("GET", "/resolve/") == len(mirrors.files("model", MODEL, "main"))
    assert not (tmp_path / "cli-cache").exists() and not (home / "hub" / "models--org--second-model").exists()
    assert not (tmp_path / "home").exists()  # not ~/.cache


def test_hf_hub_offline_holds_for_the_api_unless_a_keyword_says_otherwise(hub, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with pytest.raises(PreloaderError):
        preloader.preload(MODEL, cache_dir=cache)
    assert hub.count() == 0
    [result] = preloader.preload(MODEL, cache_dir=cache, offline=False)
    assert result.source == "hub" and hub.count("GET", "/resolve/") > 0
    hub.reset()
    assert [r.path for r in preloader.preload(MODEL, cache_dir=cache)] == [result.path]  # offline, from the cache
    assert hub.count() == 0


def test_wait_and_warm_take_the_settings_keywords(hub, cache, tmp_path):
    preloader.preload(MODEL, cache_dir=cache, endpoint=hub.url, include="*.json")
    [ready] = preloader.wait(MODEL, cache_dir=cache, include=["*.json"], timeout="1s")
    assert ready.files == len(list(ready.path.iterdir()))
    with pytest.raises(preloader.TransientError):  # the whole snapshot is not there: not ready
        preloader.wait(MODEL, cache_dir=cache, timeout="10ms")
    [report] = preloader.api.warm(MODEL, cache_dir=cache, include="*.json", warm="page-cache")
    assert report.files == 0 and report.device == "page-cache"  # no weight file among the JSON files
    with pytest.raises(preloader.ConfigError, match="mode and warm are the same setting"):
        preloader.api.warm(MODEL, cache_dir=cache, mode="page-cache", warm="page-cache")
