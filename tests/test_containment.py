"""Containment helpers, links through symlinked roots, `rm --dry-run` truth, and a state dir inside the hub
cache (issue 19, items 1, 8, 9 and 12). The planted-link faults per command are in test_containment_faults.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import preloader_env, run_preloader

MODEL, FORK, SECOND, BIG = "org/tiny-model", "org/tiny-model-fork", "org/second-model", "org/big-model"


# -- the one judge: atomic.remove / ensure_inside ----------------------------------------------------------
def test_remove_never_deletes_through_a_folder_leading_out(tmp_path):
    from preloader.cache import atomic
    from preloader.errors import UnsafePathError

    root, outside = tmp_path / "cache", tmp_path / "outside"
    (outside / "blobs").mkdir(parents=True)
    (outside / "blobs" / "victim").write_text("keep")
    (root / "repo").mkdir(parents=True)
    os.symlink(outside / "blobs", root / "repo" / "blobs")
    victim = root / "repo" / "blobs" / "victim"
    with pytest.raises(UnsafePathError, match=re.escape(f"refusing to delete {victim}: its directory resolves "
                                                        f"to {outside / 'blobs'}")):
        atomic.remove(victim, [root])
    assert (outside / "blobs" / "victim").read_text() == "keep"
    # The link itself is removed as a link: what it points at stays.
    assert atomic.remove(root / "repo" / "blobs", [root])
    assert not (root / "repo" / "blobs").is_symlink() and (outside / "blobs" / "victim").exists()
    # A root itself, or a path in no root, is never removed.
    for path, roots in ((root, [root]), (outside / "blobs", [root])):
        with pytest.raises(UnsafePathError):
            atomic.remove(path, roots)
    assert root.is_dir() and (outside / "blobs" / "victim").exists()


def test_the_most_specific_root_decides(tmp_path):
    """The state dir may lie inside the cache (`<cache>/.locks/preloader`): a state folder leading elsewhere in
    the cache is still out of its root."""
    from preloader.cache import atomic
    from preloader.errors import UnsafePathError

    cache = tmp_path / "hub"
    state = cache / ".locks" / "preloader"
    (cache / "models--a--b" / "blobs").mkdir(parents=True)
    (cache / "models--a--b" / "blobs" / "x").write_text("blob")
    state.mkdir(parents=True)
    os.symlink(cache / "models--a--b" / "blobs", state / "complete")
    with pytest.raises(UnsafePathError, match="outside"):
        atomic.remove(state / "complete" / "x", [cache, state])
    assert (cache / "models--a--b" / "blobs" / "x").exists()


# -- item 8: links through symlinked roots -----------------------------------------------------------------
@pytest.mark.parametrize("which", ["link_root", "state_dir"])
def test_alias_works_when_its_root_is_reached_through_a_symlink_and_prune_keeps_it(hub, cache, tmp_path, mirrors,
                                                                                   which):
    import preloader

    real = tmp_path / "mounts" / "deep" / "folder"
    real.mkdir(parents=True)
    via = tmp_path / "via"
    os.symlink(real, via)
    setting = {"link_root": "PRELOADER_LINK_ROOT", "state_dir": "PRELOADER_STATE_DIR"}[which]
    link_root = via if which == "link_root" else via / "links"
    commit = mirrors.sha("model", MODEL, "main")
    snapshot = cache / "models--org--tiny-model" / "snapshots" / commit
    result = preloader.preload(models=[MODEL], cache_dir=cache, endpoint=hub.url, **{which: via})[0]
    alias = link_root / "model" / MODEL / "main"
    assert result.alias == alias and os.path.samefile(alias, snapshot)
    assert sorted(p.name for p in alias.iterdir()) == mirrors.filenames("model", MODEL, "main")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, **{setting: str(via)})
    assert run_preloader(["run"], env).returncode == 0
    for args in (["prune", "--grace", "0s"], ["prune", "--grace", "0s", "--max-size", "1T"]):
        proc = run_preloader(args, env)
        assert proc.returncode == 0 and "leftover" not in proc.stdout, proc.stdout + proc.stderr
    assert alias.is_symlink() and os.path.samefile(alias, snapshot)
    status = json.loads(run_preloader(["status", "--json"], env).stdout)
    assert status["ready"] and status["repos"][0]["path"] == str(alias)
    listing = json.loads(run_preloader(["ls", "--json"], env).stdout)
    assert listing["repos"][0]["revisions"][0]["aliases"] == [str(alias)]


def test_relative_target_is_computed_between_the_real_folders(tmp_path):
    from preloader.cache import atomic

    (tmp_path / "a" / "b" / "links").mkdir(parents=True)
    os.symlink(tmp_path / "a" / "b" / "links", tmp_path / "links")
    target = tmp_path / "hub" / "snap"
    target.mkdir(parents=True)
    link = tmp_path / "links" / "model" / "org" / "name" / "main"
    link.parent.mkdir(parents=True)
    os.symlink(atomic.relative_target(target, link), link)
    assert os.path.samefile(link, target)
    # The target itself is not resolved: a blob that is a link keeps being pointed at by name.
    (target / "blob").symlink_to(tmp_path / "a")
    assert atomic.relative_target(target / "blob", target / "file").endswith("blob")


# -- item 9: rm --dry-run says what rm frees -----------------------------------------------------------------
def payload(cache: Path) -> int:
    """Blob bytes on disk (40/64-hex names: repo blobs and store entries), each inode once."""
    files = {}
    for path in cache.rglob("*"):
        if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", path.name) and path.is_file() and not path.is_symlink():
            st = path.stat()
            files[(st.st_dev, st.st_ino)] = st.st_size
    return sum(files.values())


def removal(args, env) -> dict:
    proc = run_preloader(["rm", *args, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def dry_then_real(args, env, cache) -> int:
    before = payload(cache)
    planned = removal([*args, "--dry-run"], env)
    assert payload(cache) == before
    done = removal([*args, "--yes"], env)
    assert planned["removed"] == done["removed"]
    assert planned["freed"] == done["freed"] == before - payload(cache), (args, planned["freed"], done["freed"])
    return done["freed"]


def test_rm_dry_run_reports_the_bytes_rm_frees_with_hard_links_revisions_and_orphans(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev,{FORK},{SECOND}")
    assert run_preloader(["run"], env).returncode == 0
    blobs = cache / "models--org--tiny-model" / "blobs"
    orphan = blobs / ("0" * 40)  # a blob no snapshot links (what `hf cache rm` of a revision can leave)
    orphan.write_bytes(b"x" * 5000)
    assert dry_then_real(["org/tiny-model", "--revision", "dev"], env, cache) >= 5000  # shared with main: kept
    assert dry_then_real([FORK], env, cache) > 0  # hard-linked with tiny-model's: only its own README
    # Both at once: second-model's blobs hard-linked from tiny-model's count once, with their last link.
    assert dry_then_real([MODEL, SECOND], env, cache) > 0
    assert payload(cache) == 0


def test_rm_dry_run_counts_each_shared_store_entry_once(hub, cache):
    from test_hf_cache import to_store

    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{FORK},{BIG}")
    assert run_preloader(["run"], env).returncode == 0
    assert to_store(cache)
    shared = next(e for e in cache.glob("blobs/??/*[0-9a-f]") if e.stat().st_size < 1024 * 1024)
    size = shared.stat().st_size
    assert dry_then_real([MODEL, FORK], env, cache) > size  # the entry both link, once
    assert not shared.exists()
    assert dry_then_real(["--all"], env, cache) > 12 * 1024 * 1024 - 1


# -- item 12: a state dir inside the hub folder ---------------------------------------------------------------
@pytest.mark.parametrize("how", ["env", "flag", "symlink"])
def test_a_state_dir_inside_the_hub_cache_is_refused(hub, cache, tmp_path, how):
    inside = cache / "state"
    cache.mkdir(parents=True)
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    args = ["run"]
    if how == "env":
        env["PRELOADER_STATE_DIR"] = str(inside)
    elif how == "flag":
        args = ["ls", "--state-dir", str(inside)]
    else:
        os.symlink(inside, tmp_path / "state-link")
        env["PRELOADER_STATE_DIR"] = str(tmp_path / "state-link")
    proc = run_preloader(args, env)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.splitlines() == [
        f"preloader: error: the state dir (PRELOADER_STATE_DIR, --state-dir, state_dir=) "
        f"{inside if how != 'symlink' else tmp_path / 'state-link'} lies inside the hub cache {cache}, where "
        f"`hf cache` reports it as a corrupted repo; put it outside the cache or under {cache / '.locks'}/"]
    assert os.listdir(cache) == []  # nothing written
    if how == "env":  # under `.locks/`, which huggingface_hub's scanner skips: accepted, and `hf cache` agrees
        from huggingface_hub import scan_cache_dir

        env["PRELOADER_STATE_DIR"] = str(cache / ".locks" / "st")
        assert run_preloader(["run"], env).returncode == 0
        assert (cache / ".locks" / "st" / "complete").is_dir()
        report = scan_cache_dir(cache)
        assert report.warnings == [] and [r.repo_id for r in report.repos] == [MODEL]


def test_a_link_root_inside_the_hub_cache_is_refused_too(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LINK_ROOT=str(cache / "links"))
    proc = run_preloader(["run"], env)
    assert proc.returncode == 78 and "the link root (PRELOADER_LINK_ROOT" in proc.stderr
    assert not cache.exists()


def test_the_python_api_refuses_it_with_a_config_error(hub, cache):
    import preloader
    from preloader.errors import ConfigError

    with pytest.raises(ConfigError, match="lies inside the hub cache") as error:
        preloader.preload(models=[MODEL], cache_dir=cache, endpoint=hub.url, state_dir=cache / "state")
    assert error.value.exit_code == 78
    with pytest.raises(ConfigError):
        preloader.Cache(cache, state_dir=cache / "sub" / "state")
    assert not cache.exists()
