"""Identical bytes in several repos are downloaded and stored once per volume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jsonschema
from conftest import ROOT, preloader_env, run_preloader

MODEL, FORK = "org/tiny-model", "org/tiny-model-fork"


def du(path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def blob(cache, repo: str, commit: str, name: str):
    return (cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit / name).resolve()


def test_a_file_another_repo_holds_is_linked_not_downloaded(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    hub.reset()
    proc = run_preloader(["run", "--model", FORK], env | {"RUNPOD_HUGGINGFACE_MODEL": ""})
    assert proc.returncode == 0, proc.stderr
    fetched = sorted(r.path.rsplit("/", 1)[1] for r in hub.requests(method="GET") if "/resolve/" in r.path)
    fork_files, model_files = mirrors.files("model", FORK, "main"), mirrors.files("model", MODEL, "main")
    assert fetched == sorted(p for p in fork_files if model_files.get(p) != fork_files[p]) == ["README.md"]
    assert sum(r.body_bytes for r in hub.requests(method="GET") if "/resolve/" in r.path) == len(fork_files["README.md"])
    main, fork = mirrors.sha("model", MODEL, "main"), mirrors.sha("model", FORK, "main")
    ours, theirs = blob(cache, MODEL, main, "model.safetensors"), blob(cache, FORK, fork, "model.safetensors")
    assert ours != theirs and os.path.samefile(ours, theirs)  # one file on disk, in both repos' blobs/
    ready = next(line for line in proc.stderr.splitlines() if "ready repo=org/tiny-model-fork" in line)
    assert f"fetched={len(fork_files['README.md'])}" in ready
    assert f"reused={sum(map(len, fork_files.values())) - len(fork_files['README.md'])}" in ready
    listing = json.loads(run_preloader(["ls", "--json"], env).stdout)["totals"]
    linked = sum(len(d) for p, d in fork_files.items() if model_files.get(p) == d)
    assert listing["shared"] == linked
    assert run_preloader(["verify"], env).returncode == 0


def test_rm_reports_only_the_last_link_as_freed(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{FORK}")
    assert run_preloader(["run"], env).returncode == 0
    fork_files, model_files = mirrors.files("model", FORK, "main"), mirrors.files("model", MODEL, "main")
    report = json.loads(run_preloader(["rm", FORK, "--yes", "--json"], env).stdout)
    assert report["freed"] == len(fork_files["README.md"])  # the rest is still tiny-model's
    report = json.loads(run_preloader(["rm", MODEL, "--yes", "--json"], env).stdout)
    assert report["freed"] >= sum(map(len, model_files.values()))
    assert not any(cache.glob("models--org--tiny-model*/blobs/*"))


def test_dedup_links_copies_already_on_the_volume(hub, cache, mirrors):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{FORK}")
    assert run_preloader(["run"], env).returncode == 0
    fork = mirrors.sha("model", FORK, "main")
    copies = []
    for name in ("model.safetensors", "config.json"):  # as two downloads without linking would leave them
        path = blob(cache, FORK, fork, name)
        shutil.copyfile(path, path.with_name("copy"))
        os.replace(path.with_name("copy"), path)
        copies.append(path)
    size = sum(p.stat().st_size for p in copies)
    before = du(cache)
    plan = json.loads(run_preloader(["dedup", "--dry-run", "--json"], env).stdout)
    jsonschema.validate(plan, json.loads((ROOT / "docs" / "schemas" / "dedup.schema.json").read_text()))
    assert plan["saved"] == size and plan["dry_run"]
    proc = run_preloader(["dedup", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["saved"] == size
    main = mirrors.sha("model", MODEL, "main")
    for path, name in zip(copies, ("model.safetensors", "config.json"), strict=True):
        assert os.path.samefile(path, blob(cache, MODEL, main, name))
    assert du(cache) == before - size  # du counts a hard-linked file once
    assert json.loads(run_preloader(["dedup", "--json"], env).stdout)["saved"] == 0  # nothing left to do
    assert run_preloader(["verify"], env).returncode == 0
