"""The cache huggingface_hub 2.x writes, and its own tools and consumers on the caches we write.

No Xet server runs here (olah serves no Xet files), so the caches that a Xet download leaves are built
with huggingface_hub's own `publish_blob_to_shared_store`: every LFS blob moves into the cache-wide
store, keyed by its sha256, and the repo's `blobs/<etag>` becomes a link to it, as after a Xet download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env, run_preloader

MODEL, FORK, BIG, DATA = "org/tiny-model", "org/tiny-model-fork", "org/big-model", "org/tiny-data"
HF = str(Path(sys.executable).parent / "hf")


def to_store(cache: Path) -> int:
    """Move every LFS blob (64-hex etag) into the shared store; identical files of several repos share an entry."""
    from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

    moved = 0
    for blob in sorted(cache.glob("*--*/blobs/*")):
        if re.fullmatch(r"[0-9a-f]{64}", blob.name) and not blob.is_symlink():
            assert publish_blob_to_shared_store(blob_path=str(blob), xet_hash=blob.name, cache_dir=cache,
                                                expected_size=blob.stat().st_size)
            moved += 1
    return moved


def payload(cache: Path, *, per_path: bool = False) -> int:
    """Bytes of blob content on disk, each file (inode) once: repo blobs of their own and store entries.
    `per_path`: a hard-linked blob once per name, as huggingface_hub counts it."""
    files = {}
    for path in cache.rglob("*"):
        if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", path.name) and path.is_file() and not path.is_symlink():
            st = path.stat()
            files[path if per_path else (st.st_dev, st.st_ino)] = st.st_size
    return sum(files.values())


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def preloader_json(args, env) -> dict:
    proc = run_preloader([*args, "--json"], env)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def stored(hub, cache):
    """tiny-model and its fork (same weights) and big-model, preloaded, then moved into the shared store."""
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{FORK},{BIG}")
    assert run_preloader(["run"], env).returncode == 0
    assert to_store(cache) == 3  # big-model's weights, and one entry for tiny-model's and the fork's
    return env


def test_ls_counts_each_store_entry_once_as_huggingface_hub_does(stored, cache):
    from huggingface_hub import scan_cache_dir

    hf = scan_cache_dir(cache)
    ours = preloader_json(["ls"], stored)
    # Each file once. huggingface_hub counts a blob hard-linked into two repos (the fork's config.json,
    # linked from tiny-model's by the preload) once per repo: what `du` says is ours.
    assert ours["totals"]["size"] == payload(cache) < hf.size_on_disk == payload(cache, per_path=True)
    assert ours["totals"]["shared"] > 18_000  # the weights both links show, and the files linked
    assert {r["repo"]: r["size"] for r in ours["repos"]} == {r.repo_id: r.size_on_disk for r in hf.repos}
    assert hf.warnings == []


def test_rm_frees_a_store_entry_with_its_last_link_and_reports_what_left_the_disk(stored, cache):
    from huggingface_hub.utils._shared_blobs import unreferenced_shared_blobs

    shared = next(e for e in cache.glob("blobs/??/*[0-9a-f]") if e.stat().st_size < 1024 * 1024)
    size = shared.stat().st_size  # the weights tiny-model and its fork share
    before, du_before = payload(cache), du(cache)
    report = preloader_json(["rm", FORK, "--yes"], stored)
    assert shared.exists()  # tiny-model still links it
    assert report["freed"] == before - payload(cache) < size
    middle = payload(cache)
    report = preloader_json(["rm", MODEL, "--yes"], stored)
    assert not shared.exists()  # its last link went: so did the entry
    assert report["freed"] == middle - payload(cache) > size
    assert preloader_json(["ls"], stored)["totals"]["size"] == payload(cache)
    assert du(cache) <= du_before - (before - payload(cache))
    assert unreferenced_shared_blobs(cache) == {}  # `hf cache prune` finds nothing left behind


def test_rm_of_each_repo_reports_exactly_the_bytes_freed(stored, cache):
    for repo in (FORK, BIG, MODEL):
        before = payload(cache)
        report = preloader_json(["rm", repo, "--yes"], stored)
        assert report["freed"] == before - payload(cache), repo
    assert payload(cache) == 0 and not list(cache.glob("blobs/??/*[0-9a-f]"))


def test_prune_dry_run_predicts_what_prune_frees(stored, cache):
    planned = preloader_json(["prune", "--max-size", "0", "--dry-run"], stored)
    before = payload(cache)
    done = preloader_json(["prune", "--max-size", "0"], stored)
    assert planned["freed"] == done["freed"] == before - payload(cache) == before


def test_verify_follows_links_into_the_store_and_repair_mends_the_entry_for_every_repo(stored, cache, mirrors):
    entry = next(e for e in cache.glob("blobs/??/*[0-9a-f]") if e.stat().st_size < 1024 * 1024)
    good = entry.read_bytes()
    entry.chmod(0o644)
    entry.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    proc = run_preloader(["verify", "--json"], stored)
    assert proc.returncode == 1
    broken = {s["repo_id"]: s["corrupt"] for s in json.loads(proc.stdout)["snapshots"] if s["corrupt"]}
    assert broken == {MODEL: ["model.safetensors"], FORK: ["model.safetensors"]}
    proc = run_preloader(["verify", "--repair", MODEL], stored)
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == entry.name  # the entry itself holds good bytes again
    assert run_preloader(["verify"], stored).returncode == 0  # the fork too, through the same entry
    link = cache / "models--org--tiny-model" / "blobs" / entry.name
    assert link.is_symlink() and link.resolve() == entry.resolve()  # still one copy, in the store
    ours = preloader_json(["ls"], stored)
    assert ours["totals"]["size"] == payload(cache)


def test_our_transfer_and_store_entries_live_side_by_side(stored, cache, hub, mirrors):
    """A revision whose weights are in the store and whose other files are ours: a re-run fetches nothing,
    a lost small file is fetched alone, and the consumers read both kinds."""
    commit = mirrors.sha("model", MODEL, "main")
    snapshot = cache / "models--org--tiny-model" / "snapshots" / commit
    (snapshot / "README.md").resolve().unlink()  # its blob (ours, not in the store) and its link
    (snapshot / "README.md").unlink()
    hub.reset()
    assert run_preloader(["run"], stored).returncode == 0
    fetched = [r.path for r in hub.requests(method="GET") if "/resolve/" in r.path]
    assert fetched == [f"/org/tiny-model/resolve/{commit}/README.md"]
    code = ("import sys; from transformers import AutoModel; "
            "AutoModel.from_pretrained(sys.argv[1], local_files_only=True); print('loaded')")
    env = stored | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, MODEL], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "loaded", proc.stderr


def test_doctor_says_whether_the_store_is_on(stored, cache, tmp_path):
    checks = {c["name"]: c for c in preloader_json(["doctor"], stored)["checks"]}
    assert checks["shared blob store"]["detail"].startswith("on: 2 entries")
    other = stored | {"PRELOADER_CACHE_DIR": str(tmp_path / "empty" / "hub")}
    checks = {c["name"]: c for c in preloader_json(["doctor"], other)["checks"]}
    assert checks["shared blob store"]["detail"].startswith("not created yet")


def hf(*args: str, env: dict, seed: str = "0") -> subprocess.CompletedProcess:
    """The `hf` CLI; PYTHONHASHSEED fixed, since `hf cache rm`'s outcome can depend on set order."""
    return subprocess.run([HF, *args], env=env | {"PYTHONHASHSEED": seed}, capture_output=True, text=True,
                          timeout=120)


def hf_revisions(cache: Path) -> dict[str, set[str]]:
    from huggingface_hub import scan_cache_dir

    return {r.repo_id: {rev.commit_hash for rev in r.revisions} for r in scan_cache_dir(cache).repos}


def our_revisions(env: dict) -> dict[str, set[str]]:
    return {r["repo"]: {rev["commit"] for rev in r["revisions"]} for r in preloader_json(["ls"], env)["repos"]}


def test_after_hf_cache_rm_of_a_revision_prune_tidies_and_run_fetches_only_what_went(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev")
    assert run_preloader(["run"], env).returncode == 0
    dev, main = mirrors.sha("model", MODEL, "dev"), mirrors.sha("model", MODEL, "main")
    proc = hf("cache", "rm", dev, "-y", "--cache-dir", str(cache), env=env)
    assert proc.returncode == 0, proc.stderr
    assert our_revisions(env) == {MODEL: {main}}  # ls tells the truth at once
    assert run_preloader(["status", f"{MODEL}:dev"], env).returncode == 1
    state = cache.parent / "preloader"
    assert (state / "complete" / "models--org--tiny-model" / f"{dev}.json").exists()  # ours, stale now
    report = preloader_json(["prune", "--grace", "0s"], env)
    assert str(state / "complete" / "models--org--tiny-model" / f"{dev}.json") in report["leftovers"]
    assert str(state / "links" / "model" / MODEL / "dev") in report["leftovers"]  # the alias dangled
    assert not (state / "links" / "model" / MODEL / "dev").is_symlink()
    hub.reset()
    assert run_preloader(["run"], env).returncode == 0
    fetched = sorted(r.path.rsplit("/", 1)[1] for r in hub.requests(method="GET") if "/resolve/" in r.path)
    dev_files, main_files = mirrors.files("model", MODEL, "dev"), mirrors.files("model", MODEL, "main")
    assert fetched == sorted(p for p in dev_files if main_files.get(p) != dev_files[p])  # only what was gone
    assert run_preloader(["verify"], env).returncode == 0


def test_after_hf_cache_rm_of_a_repo_prune_leaves_a_cache_every_tool_reads(hub, cache):
    """With `latest` under snapshots/, `hf cache rm <repo>` (huggingface_hub 2.4) can keep the repo folder
    with a dangling `latest`, and then every `hf cache` command fails; `preloader prune` repairs that."""
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev,{FORK}",
                        RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0")
    assert run_preloader(["run"], env).returncode == 0
    assert hf("cache", "rm", f"model/{MODEL}", "-y", "--cache-dir", str(cache), env=env).returncode == 0
    report = preloader_json(["prune", "--grace", "0s"], env)
    assert report["skipped"] == []
    listed = hf("cache", "ls", "--revisions", "--cache-dir", str(cache), "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    hf_view = {repo: revs - {"latest"} for repo, revs in hf_revisions(cache).items()}
    assert {repo: revs for repo, revs in hf_view.items() if revs} == our_revisions(env)
    assert MODEL not in our_revisions(env)
    assert run_preloader(["run"], env).returncode == 0  # and everything comes back
    assert run_preloader(["verify"], env).returncode == 0
    assert run_preloader(["status", MODEL, f"{MODEL}:dev", FORK], env).returncode == 0


def test_latest_at_the_repo_root_is_invisible_to_hf_cache(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{FORK}")
    assert run_preloader(["run"], env).returncode == 0  # the default: snapshots/latest
    repo = cache / "models--org--tiny-model"
    assert os.readlink(repo / "snapshots" / "latest") == mirrors.sha("model", MODEL, "main")
    env["PRELOADER_LATEST"] = "repo"
    assert run_preloader(["run"], env).returncode == 0
    assert not (repo / "snapshots" / "latest").exists()  # moved: the old placement is tidied away
    assert os.readlink(repo / "latest") == f"snapshots/{mirrors.sha('model', MODEL, 'main')}"
    assert (repo / "latest" / "config.json").is_file()
    assert "latest" not in set().union(*hf_revisions(cache).values())
    proc = hf("cache", "prune", "--dry-run", "--cache-dir", str(cache), env=env)
    assert proc.returncode == 0 and "Nothing to prune" in proc.stdout + proc.stderr
    assert preloader_json(["ls"], env)["repos"][0]["latest"] == mirrors.sha("model", MODEL, "main")
    for seed in ("0", "1"):  # whatever set order huggingface_hub happens to use
        assert hf("cache", "rm", f"model/{MODEL}", "-y", "--cache-dir", str(cache), env=env, seed=seed).returncode == 0
        assert not repo.exists()
        assert run_preloader(["run"], env).returncode == 0
    env["PRELOADER_LATEST"] = "off"
    assert run_preloader(["run"], env).returncode == 0
    assert not (repo / "latest").exists() and not (repo / "snapshots" / "latest").exists()


def test_hf_cache_prune_of_latest_links_is_mended_by_the_next_run(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    assert hf("cache", "prune", "-y", "--cache-dir", str(cache), env=env).returncode == 0
    assert preloader_json(["ls"], env)["repos"][0]["latest"] is None  # the truth: it is gone
    assert run_preloader(["status", MODEL], env).returncode == 0  # the snapshot itself is untouched
    hub.reset()
    assert run_preloader(["run"], env).returncode == 0
    assert os.readlink(cache / "models--org--tiny-model" / "snapshots" / "latest") == mirrors.sha("model", MODEL, "main")
    assert not [r for r in hub.requests() if "/resolve/" in r.path]


def python(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def test_tree_listing_is_huggingface_hubs_own_and_tells_partial_from_complete(hub, cache, mirrors, tmp_path):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    commit = mirrors.sha("model", MODEL, "main")
    ours = cache / "models--org--tiny-model" / "trees" / f"{commit}.json"
    theirs_cache = tmp_path / "theirs"
    proc = python("import sys; from huggingface_hub import snapshot_download; "
                  "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])", env | {"HF_ENDPOINT": hub.url},
                  MODEL, str(theirs_cache))
    assert proc.returncode == 0, proc.stderr
    assert ours.read_bytes() == (theirs_cache / "models--org--tiny-model" / "trees" / f"{commit}.json").read_bytes()
    offline = env | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    consumers = ("import sys; from huggingface_hub import hf_hub_download, snapshot_download; "
                 "print(snapshot_download(sys.argv[1], local_files_only=True)); "
                 "print(hf_hub_download(sys.argv[1], 'config.json'))")
    proc = python(consumers, offline, MODEL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(cache / "models--org--tiny-model" / "snapshots" / commit),
                                   str(cache / "models--org--tiny-model" / "snapshots" / commit / "config.json")]
    (cache / "models--org--tiny-model" / "snapshots" / commit / "README.md").unlink()
    proc = python(consumers, offline, MODEL)
    assert proc.returncode != 0 and "IncompleteSnapshotError" in proc.stderr and "README.md" in proc.stderr


def test_an_include_preload_starts_a_consumer_asking_for_the_same_files(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/second-model", PRELOADER_INCLUDE="*.json,sub/")
    assert run_preloader(["run"], env).returncode == 0
    offline = env | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    code = ("import sys, json; from huggingface_hub import snapshot_download; "
            "snapshot_download(sys.argv[1], allow_patterns=json.loads(sys.argv[2])); print('ok')")
    proc = python(code, offline, "org/second-model", '["*.json", "sub/*"]')
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    proc = python(code.replace("allow_patterns=json.loads(sys.argv[2])", ""), offline, "org/second-model")
    assert proc.returncode != 0 and "IncompleteSnapshotError" in proc.stderr  # the weights were left out: true


def test_hf_cli_on_a_preloaded_cache_verifies_and_downloads_nothing(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev",
                        RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0")
    assert run_preloader(["run"], env).returncode == 0
    env = env | {"HF_HUB_CACHE": str(cache)}
    for args in ([MODEL], [MODEL, "--revision", "dev"], [DATA, "--repo-type", "dataset", "--revision", "v1.0"]):
        proc = hf("cache", "verify", *args, "--cache-dir", str(cache), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    hub.reset()
    proc = hf("download", MODEL, "--cache-dir", str(cache), env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r for r in hub.requests(method="GET") if "/resolve/" in r.path] == []  # no file bytes sent
    assert sum(r.body_bytes for r in hub.requests() if "/resolve/" in r.path) == 0


def test_datasets_load_a_preloaded_dataset_offline_by_path_and_by_name(hub, cache, mirrors):
    pytest.importorskip("datasets")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0", PRELOADER_PREPARE_DATASETS="1")
    service = ("import os, datasets; "
               "by_path = datasets.load_dataset(os.environ['PRELOADER_DATASET_PATH']); "
               "by_name = datasets.load_dataset('org/tiny-data', revision='v1.0'); "
               "print(os.environ['HF_HUB_OFFLINE'], by_path['train'].num_rows, by_name['train'].num_rows, "
               "by_name['test'].num_rows)")
    proc = run_preloader(["run", "--", sys.executable, "-c", service], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-4:] == ["1", "6", "6", "2"]
    assert "datasets.prepared repo=org/tiny-data" in proc.stderr
    file_gets = [r for r in hub.requests(method="GET") if "/resolve/" in r.path]
    assert len(file_gets) == len(mirrors.files("dataset", DATA, "v1.0"))  # each file once, by the preload only
    prepared = cache.parent / "datasets"
    assert prepared.is_dir() and any(prepared.iterdir())
    # Without the preparation, the by-name call cannot work offline (datasets 5 never reads the hub cache).
    bare = preloader_env(hub, cache.parent.parent / "other" / "hub", RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0")
    proc = run_preloader(["run", "--", sys.executable, "-c", service], bare, timeout=300)
    assert proc.returncode != 0 and "OfflineModeIsEnabled" in proc.stderr + proc.stdout
