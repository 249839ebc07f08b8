"""Fault suite: folders of the cache planted as symlinks leading out of it (issue 19, item 1).

Each test preloads a real cache, then moves one of its folders (a repo folder, `blobs/`, `snapshots/`,
`refs/`, a state sub-folder, the shared blob store) to a directory outside every root and links it back,
as a hostile user with write access to a shared volume could. Every command that writes or deletes must
refuse (73, naming the folder) or skip it with a warning; read-only commands report it as a problem.
The outside directory is inventoried before and after: no file, link or inode there may change.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from faultsuite import (
    MODEL,
    account,  # noqa: F401 (the suite's autouse fixture)
    env_for,
    inject,
    run,
)

pytestmark = pytest.mark.faults

FORK, SECOND = "org/tiny-model-fork", "org/second-model"
REPO = "models--org--tiny-model"


def inventory(root: Path) -> dict[str, tuple]:
    """Every entry under `root`, links not followed: a file's content and inode, a link's target."""
    found = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in dirnames + names:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_file():
                st = path.stat()
                found[rel] = ("file", path.read_bytes(), st.st_ino)
            else:
                found[rel] = ("dir",)
    return found


def planted_folder(cache: Path, where: str) -> Path:
    repo = cache / REPO
    return {"repo": repo, "blobs": repo / "blobs", "snapshots": repo / "snapshots", "refs": repo / "refs",
            "state": cache.parent / "preloader" / "complete" / REPO}[where]


def plant(cache: Path, where: str, outside: Path) -> Path:
    """Move the folder out of the cache and link it back; the sentinel tree it leaves outside."""
    folder = planted_folder(cache, where)
    moved = outside / where
    shutil.move(folder, moved)
    os.symlink(moved, folder)
    (moved / "sentinel").write_text("not the cache's")
    inject()
    return moved


@pytest.fixture
def preloaded(hub, cache, tmp_path):
    """tiny-model, its fork (separate copies of the same blobs, as two downloads without linking leave them)
    and second-model, preloaded; a directory outside every root."""
    import preloader

    preloader.preload(models=[MODEL, FORK, SECOND], cache_dir=cache, endpoint=hub.url)
    for blob in (cache / "models--org--tiny-model-fork" / "blobs").iterdir():
        copy = blob.with_name("copy")
        shutil.copyfile(blob, copy)
        os.replace(copy, blob)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    return outside


@pytest.mark.parametrize("where", ["repo", "blobs", "snapshots", "refs", "state"])
def test_rm_refuses_a_repo_with_a_folder_leading_out_and_deletes_nothing(preloaded, hub, cache, where):
    moved = plant(cache, where, preloaded)
    before = inventory(preloaded)
    env = env_for(hub, cache)
    for args in (["rm", MODEL, "--yes"], ["rm", "--all", "--yes"], ["rm", MODEL, "--dry-run"],
                 ["rm", MODEL, "--revision", "main", "--yes"]):
        proc = run(args, env, expect=73)
        assert proc.returncode == 73, (args, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error: ")]
        assert len(errors) == 1 and errors[0].startswith("preloader: error: refusing to remove model org/tiny-model")
        assert str(planted_folder(cache, where)) in errors[0] and str(moved) in errors[0]
        assert proc.stderr.splitlines()[-1] == errors[0] and "Traceback" not in proc.stderr
        assert inventory(preloaded) == before
    # Nothing else went either: `--all` refused before touching the other repos.
    assert (cache / "models--org--second-model" / "snapshots").is_dir()


@pytest.mark.parametrize("where", ["repo", "blobs", "snapshots", "refs", "state"])
def test_prune_skips_a_repo_with_a_folder_leading_out(preloaded, hub, cache, where):
    moved = plant(cache, where, preloaded)
    before = inventory(preloaded)
    env = env_for(hub, cache)
    for args in (["prune", "--max-size", "1", "--dry-run", "--json"],
                 ["prune", "--max-size", "1", "--json"]):
        proc = run(args, env, expect=0)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert any(line.startswith("model org/tiny-model: unsafe: ") and str(moved) in line
                   for line in report["skipped"]), report
        assert all(r["repo_id"] != MODEL for r in report["removed"])
        assert f"{planted_folder(cache, where)} leads to {moved}" in proc.stderr  # the warning names it
        assert inventory(preloaded) == before
    # The bound was still applied to what is the cache's own.
    assert not (cache / "models--org--second-model").exists()


@pytest.mark.parametrize("where", ["repo", "snapshots", "state"])
def test_read_only_commands_report_the_folder_as_a_problem(preloaded, hub, cache, where):
    moved = plant(cache, where, preloaded)
    before = inventory(preloaded)
    env = env_for(hub, cache)
    listing = run(["ls", "--json"], env, expect=0)
    repo = next(r for r in json.loads(listing.stdout)["repos"] if r["repo"] == MODEL)
    assert repo["revisions"] and {rev["state"] for rev in repo["revisions"]} == {"unsafe"}
    assert repo["size"] == 0  # its bytes are not the cache's
    assert str(moved) in listing.stderr
    status = run(["status", MODEL], env, expect=1)
    assert status.returncode == 1
    assert status.stdout.startswith("NOT READY") and f"unsafe: {planted_folder(cache, where)} leads to {moved}" \
        in status.stdout
    verify = run(["verify", "--json"], env, expect=1)
    assert verify.returncode == 1
    check = next(c for c in json.loads(verify.stdout)["snapshots"] if c["repo_id"] == MODEL)
    assert not check["ok"] and str(moved) in check["unsafe"]
    text = run(["verify", MODEL], env, expect=1)
    assert text.returncode == 1 and f"BROKEN  model {MODEL}@" in text.stdout and "not checked: " in text.stdout \
        and str(moved) in text.stdout
    repair = run(["verify", "--repair", MODEL], env, expect=73)
    assert repair.returncode == 73 and str(moved) in repair.stderr
    assert inventory(preloaded) == before


@pytest.mark.parametrize("where", ["repo", "blobs", "state"])
def test_run_and_pull_refuse_to_write_through_a_folder_leading_out(preloaded, hub, cache, where):
    moved = plant(cache, where, preloaded)
    before = inventory(preloaded)
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    for args in (["run"], ["pull", MODEL]):
        proc = run(args, env, expect=73)
        assert proc.returncode == 73, proc.stderr
        assert str(moved) in proc.stderr and "Traceback" not in proc.stderr
        assert inventory(preloaded) == before


def test_import_refuses_to_write_through_a_repo_folder_leading_out(preloaded, hub, cache, tmp_path):
    env = env_for(hub, cache)
    archive = tmp_path / "tiny.tar"
    assert run(["export", MODEL, "-o", str(archive)], env, expect=0).returncode == 0
    assert run(["rm", MODEL, "--yes"], env, expect=0).returncode == 0
    moved = preloaded / "repo"  # an empty folder out there: an import must not even create `blobs/` in it
    moved.mkdir()
    os.symlink(moved, cache / REPO)
    inject()
    before = inventory(preloaded)
    proc = run(["import", str(archive)], env, expect=73)
    assert proc.returncode == 73 and str(moved) in proc.stderr, proc.stderr
    assert inventory(preloaded) == before


def test_dedup_leaves_a_repo_folder_leading_out_alone(preloaded, hub, cache):
    moved = plant(cache, "repo", preloaded)
    before = inventory(preloaded)
    proc = run(["dedup", "--json"], env_for(hub, cache), expect=0)
    assert proc.returncode == 0, proc.stderr
    assert inventory(preloaded) == before  # no blob out there replaced by a link, none linked to it
    assert all(str(moved) not in path and f"/{REPO}/" not in path
               for paths in json.loads(proc.stdout)["linked"].values() for path in paths)


def test_eviction_by_capacity_and_the_python_api_never_follow_the_link(preloaded, hub, cache):
    import preloader
    from preloader import cache as manage
    from preloader.errors import UnsafePathError
    from preloader.spec import RepoSpec

    moved = plant(cache, "repo", preloaded)
    before = inventory(preloaded)
    with pytest.raises(UnsafePathError, match="refusing to remove model org/tiny-model") as error:
        manage.remove(cache, repos=[RepoSpec("model", MODEL)])
    assert error.value.exit_code == 73 and str(moved) in str(error.value)
    with pytest.raises(UnsafePathError):
        manage.remove(cache, everything=True, dry_run=True)
    report = manage.prune(cache, max_size=1)
    assert any(line.startswith("model org/tiny-model: unsafe") for line in report.skipped)
    assert inventory(preloaded) == before
    # A Cache with a capacity evicts the cache's own snapshots, never through the link.
    store = preloader.Cache(cache, capacity_bytes=1, endpoint=hub.url)
    store.preload(models=[SECOND])
    assert inventory(preloaded) == before
    assert MODEL not in store and SECOND in store
    # `run` with a capacity: the same eviction, as a subprocess.
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SECOND, PRELOADER_MAX_CACHE_SIZE="1")
    assert run(["run"], env, expect=0).returncode == 0
    assert inventory(preloaded) == before


def test_a_shared_blob_store_leading_out_is_never_swept(hub, cache, tmp_path):
    from test_hf_cache import to_store

    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{FORK}")
    assert run(["run"], env, expect=0).returncode == 0
    assert to_store(cache) == 2  # both repos' weights, now links to one entry
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(cache / "blobs", outside / "blobs")
    os.symlink(outside / "blobs", cache / "blobs")
    inject()
    before = inventory(outside)
    for args in (["rm", FORK, "--yes", "--json"], ["rm", MODEL, "--yes", "--json"]):
        proc = run(args, env, expect=0)
        assert proc.returncode == 0, proc.stderr
        assert inventory(outside) == before  # the entry stays where it is; only the repos' links went
    assert not any(cache.glob("models--org--tiny-model*"))
    listing = run(["ls", "--json"], env, expect=0)
    assert str(outside / "blobs") in listing.stderr  # not counted as the cache's, and said so
    assert json.loads(listing.stdout)["totals"]["size"] == 0


def test_a_planted_dot_locks_never_moves_state_or_locks_out_of_the_cache(hub, tmp_path):
    """A cache not named `hub` keeps its state in `<cache>/.locks/preloader`: `.locks` planted as a link out
    would move our records, our locks and huggingface_hub's blob locks out of the cache."""
    cache = tmp_path / "volume"
    cache.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, cache / ".locks")
    inject()
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    for args in (["run"], ["pull", MODEL]):
        proc = run(args, env, expect=73)
        assert proc.returncode == 73, proc.stderr
        assert f"{cache / '.locks'} leads to {outside}" in proc.stderr
        assert inventory(outside) == {}  # not a lock, record or folder out there
    assert run(["status", MODEL], env, expect=1).returncode == 1


@pytest.mark.parametrize("where", ["repo", "state"])
def test_wait_on_a_repo_leading_out_fails_at_once_with_73(preloaded, hub, cache, where):
    """No other process's preload can make such a repo ready: `wait` says so now, not at its timeout."""
    moved = plant(cache, where, preloaded)
    before = inventory(preloaded)
    proc = run(["wait", "--timeout", "1h", MODEL], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=73,
               timeout=60)
    assert proc.returncode == 73 and str(moved) in proc.stderr, proc.stderr
    assert inventory(preloaded) == before


def test_deleting_a_repo_leading_out_from_a_cache_object_is_refused(preloaded, hub, cache):
    import preloader
    from preloader.errors import UnsafePathError

    moved = plant(cache, "repo", preloaded)
    before = inventory(preloaded)
    store = preloader.Cache(cache, endpoint=hub.url)
    with pytest.raises(UnsafePathError, match="refusing to remove"):
        del store[MODEL]
    assert inventory(preloaded) == before and (moved / "sentinel").exists()


def test_the_manifest_is_never_written_through_a_manifests_folder_leading_out(preloaded, hub, cache):
    manifests = cache.parent / "preloader" / "manifests"
    outside = preloaded / "manifests"
    outside.mkdir()
    if manifests.exists():
        shutil.rmtree(manifests)
    os.symlink(outside, manifests)
    inject()
    proc = run(["run", "--", "true"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=73)
    assert proc.returncode == 73 and "manifests" in proc.stderr, proc.stderr
    assert list(outside.iterdir()) == []
