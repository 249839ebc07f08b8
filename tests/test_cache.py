"""Cache management against caches built by real preloads from the olah hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, preloader_env, run_preloader

import preloader
from preloader import cache as pcache
from preloader.cache import locks, records
from preloader.cache.layout import Layout
from preloader.spec import RepoSpec

MODEL = "org/tiny-model"
SCHEMAS = ROOT / "docs" / "schemas"


def schema_check(document: dict, name: str) -> dict:
    jsonschema.validate(document, json.loads((SCHEMAS / f"{name}.schema.json").read_text()))
    return document


def cli_json(args, env, name, code=0) -> dict:
    """Run a cache command with --json; check its schema, and that huggingface_hub still reads the cache cleanly."""
    from huggingface_hub import scan_cache_dir

    proc = run_preloader([*args, "--json"], env)
    assert proc.returncode == code, proc.stderr
    cache = Path(env["PRELOADER_CACHE_DIR"])
    if cache.is_dir():
        assert scan_cache_dir(cache).warnings == []
    return schema_check(json.loads(proc.stdout), name)


@pytest.fixture
def filled(hub, cache):
    """A cache with tiny-model main and dev, second-model, and the dataset at v1.0."""
    preloader.preload(models=[MODEL, f"{MODEL}:dev", "org/second-model"], datasets="org/tiny-data:v1.0",
                      cache_dir=cache, endpoint=hub.url)
    hub.reset()
    return cache


def blob_sizes(repo_dir: Path) -> int:
    return sum(p.stat().st_size for p in (repo_dir / "blobs").iterdir())


def test_ls_lists_revisions_links_and_counts_shared_blobs_once(filled, hub, mirrors):
    env = preloader_env(hub, filled)
    data = cli_json(["ls"], env, "ls")
    repos = {r["repo"]: r for r in data["repos"]}
    assert set(repos) == {MODEL, "org/second-model", "org/tiny-data"}
    tiny = repos[MODEL]
    revs = {r["commit"]: r for r in tiny["revisions"]}
    main, dev = mirrors.sha("model", MODEL, "main"), mirrors.sha("model", MODEL, "dev")
    assert set(revs) == {main, dev}
    assert revs[main]["refs"] == ["main"] and revs[dev]["refs"] == ["dev"]
    assert revs[main]["state"] == revs[dev]["state"] == "complete"
    assert revs[main]["latest"] and tiny["latest"] == main
    assert revs[dev]["aliases"] == [str(filled.parent / "preloader" / "links" / "model" / MODEL / "dev")]
    assert revs[main]["last_used"] is not None
    # Shared blobs (.gitattributes, README.md...) count once for the repo.
    repo_dir = filled / "models--org--tiny-model"
    assert tiny["size"] == blob_sizes(repo_dir)
    assert tiny["size"] < revs[main]["size"] + revs[dev]["size"]
    assert data["totals"]["repos"] == 3
    # The volume holds each file once: .gitattributes, the same in every repo, is one file linked into each.
    inodes = {(b.stat().st_dev, b.stat().st_ino): b.stat().st_size for b in filled.glob("*--*/blobs/*")}
    assert data["totals"]["size"] == sum(inodes.values()) < sum(r["size"] for r in data["repos"])
    assert data["totals"]["shared"] == len(mirrors.files("model", MODEL, "main")[".gitattributes"])
    assert data["totals"]["free"] > 0
    table = run_preloader(["ls"], env).stdout
    assert "org/tiny-model" in table and "complete" in table and "3 repos" in table


def test_ls_agrees_with_huggingface_hub(filled, hub):
    from huggingface_hub import scan_cache_dir

    ours = cli_json(["ls"], preloader_env(hub, filled), "ls")
    theirs = scan_cache_dir(filled)
    assert theirs.warnings == []
    assert {(r.repo_type, r.repo_id, r.size_on_disk) for r in theirs.repos} == {
        (r["type"], r["repo"], r["size"]) for r in ours["repos"]}
    hf = subprocess.run([str(Path(sys.executable).parent / "hf"), "cache", "ls", "--cache-dir", str(filled),
                         "--revisions", "--format", "json"], capture_output=True, text=True, check=True)
    # `hf cache ls` shows our `snapshots/latest` link as one more revision; it is the same snapshot.
    hf_revisions = {(r["repo_type"], r["repo_id"], r["revision"]) for r in json.loads(hf.stdout)
                    if r["revision"] != "latest"}
    assert hf_revisions == {(r["type"], r["repo"], rev["commit"]) for r in ours["repos"] for rev in r["revisions"]}


def test_ls_on_a_cache_only_huggingface_hub_wrote(hub, tmp_path):
    from huggingface_hub import snapshot_download

    cache = tmp_path / "plain" / "hub"
    snapshot_download(MODEL, cache_dir=cache, endpoint=hub.url, token=False)
    data = cli_json(["ls"], preloader_env(hub, cache), "ls")
    [repo] = data["repos"]
    [rev] = repo["revisions"]
    assert (repo["repo"], rev["refs"], rev["state"], rev["recorded"]) == (MODEL, ["main"], "partial", False)
    assert repo["size"] == blob_sizes(cache / "models--org--tiny-model")


def test_status_is_a_readiness_probe(filled, hub, mirrors):
    env = preloader_env(hub, filled)
    data = cli_json(["status", MODEL, f"{MODEL}:dev"], env, "status")
    assert data["ready"] is True
    assert data["repos"][0]["path"] == str(filled.parent / "preloader" / "links" / "model" / MODEL / "main")
    data = cli_json(["status", "--dataset", "org/tiny-data:v1.0"], env, "status")
    assert data["ready"] is True
    data = cli_json(["status", MODEL, "org/never-fetched"], env, "status", code=1)
    assert [r["cached"] for r in data["repos"]] == [True, False]
    assert "never downloaded" in data["repos"][1]["message"]
    snapshot = filled / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main")
    (snapshot / "config.json").unlink()
    data = cli_json(["status", MODEL], env, "status", code=1)
    assert data["repos"][0]["missing"] == ["config.json"]
    proc = run_preloader(["status", MODEL], env)
    assert proc.returncode == 1 and "NOT READY" in proc.stdout and "config.json" in proc.stdout


def test_verify_finds_truncated_and_corrupt_files_and_repair_fetches_only_those(filled, hub, mirrors):
    env = preloader_env(hub, filled)
    assert cli_json(["verify"], env, "verify")["ok"] is True
    commit = mirrors.sha("model", "org/second-model", "main")
    snapshot = filled / "models--org--second-model" / "snapshots" / commit
    weights = (snapshot / "model.safetensors").resolve()
    with open(weights, "r+b") as f:  # flip one byte, keep the size
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    config = (snapshot / "config.json").resolve()
    config.write_bytes(config.read_bytes()[:-5])
    data = cli_json(["verify", "org/second-model"], env, "verify", code=1)
    [snap] = data["snapshots"]
    assert snap["corrupt"] == ["model.safetensors"] and snap["truncated"] == ["config.json"]
    assert not list((filled.parent / "preloader" / "complete" / "models--org--second-model").glob("*.json"))
    assert run_preloader(["status", "org/second-model"], env).returncode == 1
    hub.reset()
    data = cli_json(["verify", "--repair", "org/second-model"], env, "verify")
    assert data["ok"] is True and sorted(data["snapshots"][0]["repaired"]) == ["config.json", "model.safetensors"]
    assert hub.file_gets() == {("org/second-model", "config.json"): 1, ("org/second-model", "model.safetensors"): 1}
    files = mirrors.files("model", "org/second-model", "main")
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert (snapshot / "config.json").read_bytes() == files["config.json"]
    assert run_preloader(["status", "org/second-model"], env).returncode == 0
    assert cli_json(["verify"], env, "verify")["ok"] is True


def test_rm_one_revision_keeps_blobs_the_other_uses(filled, hub, mirrors):
    env = preloader_env(hub, filled)
    repo_dir = filled / "models--org--tiny-model"
    main, dev = mirrors.sha("model", MODEL, "main"), mirrors.sha("model", MODEL, "dev")
    data = cli_json(["rm", f"{MODEL}:dev", "--yes"], env, "removal")
    assert [r["commit"] for r in data["removed"]] == [dev]
    assert not (repo_dir / "snapshots" / dev).exists()
    assert not (repo_dir / "refs" / "dev").exists()
    assert not (filled.parent / "preloader" / "links" / "model" / MODEL / "dev").is_symlink()
    for name, content in mirrors.files("model", MODEL, "main").items():
        assert (repo_dir / "snapshots" / main / name).read_bytes() == content
    assert data["freed"] == sum(len(c) for n, c in mirrors.files("model", MODEL, "dev").items()
                                if c not in mirrors.files("model", MODEL, "main").values())
    from huggingface_hub import scan_cache_dir

    assert scan_cache_dir(filled).warnings == []
    cli_json(["rm", MODEL, "--yes"], env, "removal")
    assert not repo_dir.exists()
    data = cli_json(["rm", "--all", "--yes"], env, "removal")
    assert len(data["removed"]) == 2 and list(filled.iterdir()) == [filled / ".locks"] or not any(
        p.name.startswith(("models--", "datasets--")) for p in filled.iterdir())


def test_rm_waits_for_a_held_lock_or_times_out(filled, hub):
    env = preloader_env(hub, filled)
    layout = Layout.build(filled)
    spec = RepoSpec("model", MODEL)
    held = threading.Event()
    release = threading.Event()

    def holder():
        with locks.hold(layout.lock_file(spec), timeout=5, what="test"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    proc = run_preloader(["rm", MODEL, "--yes", "--lock-timeout", "1"], env)
    assert proc.returncode == 75 and "waiting for the lock" in proc.stderr
    assert (filled / "models--org--tiny-model").exists()
    threading.Timer(1.5, release.set).start()
    started = time.monotonic()
    proc = run_preloader(["rm", MODEL, "--yes", "--lock-timeout", "20"], env)
    thread.join()
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 1.0
    assert not (filled / "models--org--tiny-model").exists()


def test_prune_evicts_lru_first_and_never_a_locked_repo(filled, hub, mirrors):
    env = preloader_env(hub, filled)
    layout = Layout.build(filled)
    now = time.time()
    ages = {("model", MODEL, "main"): 50, ("model", MODEL, "dev"): 40, ("model", "org/second-model", "main"): 30,
            ("dataset", "org/tiny-data", "v1.0"): 10}
    for (t, r, rev), days in ages.items():
        records.mark_used(layout, RepoSpec(t, r), mirrors.sha(t, r, rev), now=now - days * 86400)
    # Dry run: by age alone, the two tiny-model snapshots (50 and 40 days) go, oldest first.
    data = cli_json(["prune", "--older-than", "35d", "--dry-run"], env, "removal")
    assert [(r["repo_id"], r["commit"]) for r in data["removed"]] == [
        (MODEL, mirrors.sha("model", MODEL, "main")), (MODEL, mirrors.sha("model", MODEL, "dev"))]
    assert (filled / "models--org--tiny-model").exists()
    # Size bound with tiny-model locked by a running preload: its snapshots are skipped, LRU order holds.
    size = cli_json(["ls"], env, "ls")["totals"]["size"]
    dataset_size = blob_sizes(filled / "datasets--org--tiny-data")
    with locks.hold(layout.lock_file(RepoSpec("model", MODEL)), timeout=5, what="test"):
        data = cli_json(["prune", "--max-size", str(dataset_size), "--keep-dataset", "org/tiny-data:v1.0"],
                        env, "removal")
    assert [r["repo_id"] for r in data["removed"]] == ["org/second-model"]
    assert len(data["skipped"]) == 2 and all("tiny-model" in s for s in data["skipped"])
    assert (filled / "models--org--tiny-model").exists()
    assert data["freed"] == size - cli_json(["ls"], env, "ls")["totals"]["size"]
    # Unlocked now: the bound is reached by evicting tiny-model; the kept dataset stays.
    data = cli_json(["prune", "--max-size", str(dataset_size), "--keep-dataset", "org/tiny-data:v1.0"],
                    env, "removal")
    assert [r["repo_id"] for r in data["removed"]] == [MODEL, MODEL]
    assert cli_json(["ls"], env, "ls")["totals"]["size"] == dataset_size


def test_prune_keep_last_and_stale_leftovers(filled, hub, mirrors):
    env = preloader_env(hub, filled)
    blobs = filled / "models--org--tiny-model" / "blobs"
    stale = blobs / "deadbeef.incomplete"
    stale.write_bytes(b"x" * 10)
    fresh = blobs / "cafe.incomplete"
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    data = cli_json(["prune", "--older-than", "0s", "--keep-last", "1"], env, "removal")
    assert data["leftovers"] == [str(stale)]
    assert not stale.exists() and fresh.exists()
    listing = cli_json(["ls"], env, "ls")
    assert all(len(r["revisions"]) == 1 for r in listing["repos"])


def doctor_as(env, user_root: bool, path: Path) -> dict:
    """Run `preloader doctor --json` as another user when we are root (root writes anywhere)."""
    cmd = [sys.executable, "-m", "preloader", "doctor", "--json"]
    if user_root:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
    data = schema_check(json.loads(proc.stdout), "doctor")
    data["returncode"] = proc.returncode
    return data


def test_doctor_on_a_read_only_cache_and_one_without_group_write(hub, tmp_path):
    import tempfile

    root = os.geteuid() == 0
    # As root, nobody (uid 65534) plays the service user: it can reach this cache but not write it.
    base = Path(tempfile.mkdtemp(dir="/tmp" if root else tmp_path))
    cache = base / "ro" / "hub"
    cache.mkdir(parents=True)
    for p in (base, cache.parent, cache):
        os.chmod(p, 0o755 if root else 0o555)
    env = preloader_env(hub, cache, PYTHONPATH=str(ROOT), HOME=str(base))
    try:
        data = doctor_as(env, root, cache)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    checks = {c["name"]: c for c in data["checks"]}
    assert data["returncode"] == 1 and data["ok"] is False
    assert checks["writable"]["status"] == "fail" and checks["writable"]["fix"]
    assert checks["group sharing"]["status"] == "warn"
    assert checks["hub reachable"]["status"] == "ok"
    assert checks["token"]["status"] == "warn"
    assert "hf_" not in json.dumps(data)

    shared = tmp_path / "shared" / "hub"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o2775)
    data = doctor_as(preloader_env(hub, shared, RUNPOD_HUGGINGFACE_USER="a", RUNPOD_HUGGINGFACE_TOKEN="hf_doctorsecret"),
                     False, shared)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["writable"]["status"] == "ok" and checks["symlinks"]["status"] == "ok"
    assert checks["flock"]["status"] == "ok"
    assert checks["token"]["detail"] == "set (from RUNPOD_HUGGINGFACE_TOKEN)"
    assert "hf_doctorsecret" not in json.dumps(data)
    shutil.rmtree(shared)


def test_python_api_mirrors_the_commands(filled, mirrors):
    info = pcache.list_cache(filled)
    assert {r.repo_id for r in info.repos} == {MODEL, "org/second-model", "org/tiny-data"}
    [state] = pcache.status(filled, [RepoSpec("model", MODEL, "dev")])
    assert state.complete and state.commit == mirrors.sha("model", MODEL, "dev")
    assert all(c.ok for c in pcache.verify(filled))
    report = pcache.prune(filled, max_size=0, dry_run=True)
    assert len(report.removed) == 4 and report.freed == info.size
    report = pcache.remove(filled, revisions=[RepoSpec("model", MODEL, "dev")])
    assert [r.commit for r in report.removed] == [mirrors.sha("model", MODEL, "dev")]
