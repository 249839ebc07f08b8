"""The lock file end to end: `preloader lock` against the real local hub, then run, pull and wait held to it
(real subprocesses; the proxy counts what the hub was asked and sent)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import preloader_env, run_preloader

from localhub.locked import LOCKED, advance
from preloader.logs import shown

MODEL = "org/tiny-model"
SECOND = "org/second-model"
SHOW_PATH = [sys.executable, "-c", "import os; print(os.environ['PRELOADER_MODEL_PATH'])"]


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


def lock(hub, cache, path: Path, *specs: str, **env) -> tuple[dict, str]:
    proc = run_preloader(["lock", *specs, "-o", str(path)], preloader_env(hub, cache, **env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(path.read_text()), proc.stdout


def one_error_line(proc) -> str:
    """The run's single error line: no traceback, nothing else after the logs."""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def resolve_bytes(hub) -> int:
    return hub.body_bytes("GET", "/resolve/")


def test_lock_writes_each_commit_and_every_selected_file_digest(hub, mirrors, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    data, out = lock(hub, cache, path, MODEL, f"{SECOND}", PRELOADER_EXCLUDE="*.bin")
    assert data["version"] == 1
    [tiny, second] = data["repos"]
    assert (tiny["type"], tiny["repo"], tiny["revision"]) == ("model", MODEL, "main")
    assert tiny["commit"] == mirrors.sha("model", MODEL, "main")
    files = mirrors.files("model", MODEL, "main")
    assert set(tiny["files"]) == set(files)
    # LFS files by sha256 (the hub's etag), the others by git blob id.
    assert tiny["files"]["model.safetensors"] == {"size": len(files["model.safetensors"]),
                                                  "sha256": hashlib.sha256(files["model.safetensors"]).hexdigest()}
    assert tiny["files"]["config.json"] == {"size": len(files["config.json"]),
                                            "blob_id": git_blob_id(files["config.json"])}
    # The selection applies: the excluded *.bin is not locked.
    assert "pytorch_model.bin" not in second["files"] and "sub/extra.txt" in second["files"]
    assert out.splitlines()[0] == f"added model:{MODEL}@main at {tiny['commit'][:12]} ({len(files)} files)"
    assert hub.count("GET", "/resolve/") == 0  # locking reads listings, never file bytes

    before = path.read_bytes()
    again = run_preloader(["lock", MODEL, SECOND, "-o", str(path)], preloader_env(hub, cache, PRELOADER_EXCLUDE="*.bin"))
    assert again.returncode == 0 and again.stdout == f"{path}: up to date, unchanged\n"
    assert path.read_bytes() == before


def test_a_lock_pins_a_branch_that_moved_on_and_a_cached_locked_start_makes_no_call(hub, mirrors, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    data, _ = lock(hub, cache, path, LOCKED)
    locked = data["repos"][0]["commit"]
    moved = advance(mirrors)  # an upload after the lock was written
    with urllib.request.urlopen(f"{hub.url}/api/models/{LOCKED}/revision/main") as answer:
        assert json.load(answer)["sha"] == moved != locked  # the hub's main has moved on
    hub.reset()

    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=LOCKED, PRELOADER_LOCKFILE=str(path))
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 0, proc.stderr
    repo = cache / "models--org--locked-model"
    assert proc.stdout.splitlines()[-1] == str(repo / "snapshots" / locked)
    assert (repo / "refs" / "main").read_text() == locked  # refs/ as a run that resolved main to it writes
    assert os.readlink(repo / "snapshots" / "latest") == locked
    assert hub.count(path_contains="/revision/main") == 0  # the branch was never looked up
    served = mirrors.contents[("model", LOCKED, locked)]
    assert (repo / "snapshots" / locked / "model.safetensors").read_bytes() == served["model.safetensors"]

    hub.reset()
    again = run_preloader(["run", "--", *SHOW_PATH], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == str(repo / "snapshots" / locked)
    assert hub.count() == 0  # a locked cached start: no network call at all

    # `lock` on the existing file updates it and says what changed.
    update = run_preloader(["lock", LOCKED, "-o", str(path)], preloader_env(hub, cache))
    assert update.returncode == 0, update.stderr
    lines = update.stdout.splitlines()
    assert lines[0].startswith(f"changed model:{LOCKED}@main: {locked[:12]} -> {moved[:12]} (")
    assert any(line.startswith("  ~ model.safetensors (sha256 ") for line in lines)
    assert lines[-1] == f"{path}: 1 repo(s) changed"
    assert json.loads(path.read_text())["repos"][0]["commit"] == moved


def test_pull_and_wait_use_the_locked_commit(hub, mirrors, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    dev = mirrors.sha("model", MODEL, "dev")
    document, _ = lock(hub, cache, path, f"{MODEL}:dev")
    main_commit = mirrors.sha("model", MODEL, "main")
    # A lock made for main pinned to dev's commit: a branch whose locked commit is not what it is now.
    document["repos"][0].update(revision="main")
    path.write_text(json.dumps(document))
    env = preloader_env(hub, cache, PRELOADER_LOCKFILE=str(path))
    proc = run_preloader(["pull", MODEL], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cache / "models--org--tiny-model" / "snapshots" / dev) != main_commit
    assert hub.count(path_contains="/revision/main") == 0

    hub.reset()
    waited = run_preloader(["wait", "--", *SHOW_PATH], {**env, "RUNPOD_HUGGINGFACE_MODEL": MODEL})
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.splitlines()[-1] == str(cache / "models--org--tiny-model" / "snapshots" / dev)
    assert hub.count() == 0

    # wait refuses a repo of its plan that the lock does not hold, at once and without waiting for it.
    other = run_preloader(["wait", "--timeout", "1h", "--", *SHOW_PATH],
                          {**env, "RUNPOD_HUGGINGFACE_MODEL": f"{MODEL},{SECOND}"})
    assert other.returncode == 79
    assert f"model:{SECOND}@main is in the plan but not in the lock file {path}" in one_error_line(other)


def test_a_wrong_digest_refuses_before_any_download(hub, mirrors, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    document, _ = lock(hub, cache, path, MODEL)
    document["repos"][0]["files"]["config.json"]["blob_id"] = "0" * 40
    path.write_text(json.dumps(document))
    hub.reset()
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCKFILE=str(path))
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 79
    line = one_error_line(proc)
    assert line.startswith(f"preloader: error: model:{MODEL}@main is not as the lock file {path} says: config.json: "
                           f"the hub lists {git_blob_id(mirrors.files('model', MODEL, 'main')['config.json'])[:12]}")
    assert "the lock says blob_id 000000000000" in line
    assert proc.stdout == ""  # the service never ran
    assert hub.count("GET", "/resolve/") == 0 and not (cache / "models--org--tiny-model" / "blobs").exists()


def test_a_wrong_digest_refuses_a_cached_snapshot_offline_and_deletes_nothing(hub, mirrors, cache, tmp_path):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    path = tmp_path / "preloader.lock"
    document, _ = lock(hub, cache, path, MODEL)
    digest = document["repos"][0]["files"]["model.safetensors"]["sha256"]
    document["repos"][0]["files"]["model.safetensors"]["sha256"] = "f" * 64
    path.write_text(json.dumps(document))
    snapshot = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main")
    before = sorted(p.name for p in snapshot.iterdir())
    hub.reset()
    proc = run_preloader(["run", "--", *SHOW_PATH], {**env, "PRELOADER_LOCKFILE": str(path)})
    assert proc.returncode == 79 and proc.stdout == ""
    assert (f"model.safetensors: the cache has {digest[:12]} ({len(mirrors.files('model', MODEL, 'main')['model.safetensors'])}"
            f" bytes), the lock says sha256 ffffffffffff") in one_error_line(proc)
    assert hub.count() == 0
    assert sorted(p.name for p in snapshot.iterdir()) == before  # the bytes stay: they may be evidence


def test_bytes_changed_in_the_cache_refuse(hub, mirrors, cache, tmp_path):
    """A snapshot file that is no link to a blob is hashed: other bytes of the same size refuse."""
    path = tmp_path / "preloader.lock"
    lock(hub, cache, path, MODEL)
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCKFILE=str(path))
    assert run_preloader(["run"], env).returncode == 0
    config = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main") / "config.json"
    size = config.stat().st_size
    config.unlink()
    config.write_bytes(b" " * size)
    hub.reset()
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 79 and proc.stdout == ""
    assert f"config.json: the cache has other bytes ({size} bytes)" in one_error_line(proc)
    assert hub.count() == 0


def test_a_repo_missing_from_the_lock_refuses_before_any_download(hub, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    lock(hub, cache, path, MODEL)
    hub.reset()
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{SECOND}", PRELOADER_LOCKFILE=str(path))
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 79 and proc.stdout == ""
    assert one_error_line(proc) == (
        f"preloader: error: model:{SECOND}@main is in the plan but not in the lock file {path} (it holds "
        f"model:{MODEL}@main); run `preloader lock` to add it, or take it out of the plan")
    assert hub.count("GET", "/resolve/") == 0


def test_a_selection_the_lock_does_not_hold_refuses(hub, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    lock(hub, cache, path, SECOND, PRELOADER_EXCLUDE="*.bin")
    # Every file: the default selection would leave pytorch_model.bin out anyway (the repo has safetensors).
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SECOND, PRELOADER_LOCKFILE=str(path),
                        PRELOADER_WEIGHTS="all")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 79
    assert "pytorch_model.bin is selected by the plan but not locked" in one_error_line(proc)
    narrower = run_preloader(["run"], {**env, "PRELOADER_EXCLUDE": "*.bin,sub/*"})
    assert narrower.returncode == 79
    assert "sub/extra.txt is locked but not in the commit's listing or not selected by the plan" \
        in one_error_line(narrower)
    assert hub.count("GET", "/resolve/") == 0


def bad_locks(tmp_path: Path) -> list[tuple[Path, str]]:
    commit = "a" * 40
    entry = {"type": "model", "repo": MODEL, "revision": "main", "commit": commit,
             "files": {"../x": {"size": 1, "blob_id": "b" * 40}}}
    cases = {
        "not-json": (b"{nope", "not JSON at line 1: not a lock file"),
        "array": (b"[]", "not a JSON object: not a lock file"),
        "version": (json.dumps({"version": 2, "repos": []}).encode(),
                    "version 2: this preloader reads version 1; use the preloader that wrote it, or run "
                    "`preloader lock` again"),
        "hostile": (json.dumps({"version": 1, "repos": [entry]}).encode(),
                    "repos[1].files['../x']: unsafe path ('.', '..' or empty path component)"),
        "binary": (b"\xff\xfe\x00", "not UTF-8 text: not a lock file"),
    }
    made = []
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        made.append((tmp_path / name, message))
    huge = tmp_path / "huge"
    with open(huge, "wb") as file:
        file.truncate(33 * 1024 * 1024)  # sparse: no 33 MiB written
    made.append((huge, "larger than 32 MiB: not a lock file"))
    made.append((tmp_path / "absent", "No such file or directory"))
    return made


def test_bad_lock_files_are_one_line_setting_errors(hub, cache, tmp_path):
    for path, message in bad_locks(tmp_path):
        env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCKFILE=str(path))
        proc = run_preloader(["run", "--", "true"], env)
        assert proc.returncode == 78, (path, proc.stderr)
        # The path as messages quote any value: cut at 80 characters (a worker's tmp_path can be longer).
        assert one_error_line(proc) == f"preloader: error: invalid settings: PRELOADER_LOCKFILE={shown(str(path))}: {message}"
    assert hub.count() == 0


def test_lock_does_not_overwrite_a_file_that_is_not_a_lock(hub, cache, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    proc = run_preloader(["lock", MODEL, "-o", str(path)], preloader_env(hub, cache))
    assert proc.returncode == 78
    assert one_error_line(proc) == (f"preloader: error: {path} exists and is not a lock file this preloader reads "
                                    "(not JSON at line 1: not a lock file); not overwritten: move it away or give "
                                    "another -o")
    assert path.read_text() == "my notes\n"


def test_lock_writes_where_the_lockfile_variable_points_even_before_it_exists(hub, cache, tmp_path):
    path = tmp_path / "deploy" / "preloader.lock"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCKFILE=str(path))
    proc = run_preloader(["lock"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(path.read_text())["repos"][0]["repo"] == MODEL


@pytest.mark.parametrize("keyword, value, message", [
    ("lockfile", 123, "invalid settings: lockfile=123: expected a path"),
    ("pickle", "maybe", "invalid settings: pickle='maybe': expected one of allow, refuse"),
    ("pickle", True, "invalid settings: pickle=True: expected one of allow, refuse"),
])
def test_the_api_keywords_refuse_wrong_values(keyword, value, message):
    import preloader
    from preloader.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        preloader.preload(MODEL, **{keyword: value})
    assert str(raised.value) == message


def test_the_api_takes_a_lockfile_keyword(hub, mirrors, cache, tmp_path):
    import preloader
    from preloader.errors import LockRefusedError

    path = tmp_path / "preloader.lock"
    document, _ = lock(hub, cache, path, f"{MODEL}:v1.0")
    document["repos"][0].update(revision="main")
    path.write_text(json.dumps(document))
    [result] = preloader.preload(MODEL, lockfile=path, cache_dir=cache, endpoint=hub.url)
    assert result.commit == mirrors.sha("model", MODEL, "v1.0") != mirrors.sha("model", MODEL, "main")
    with pytest.raises(LockRefusedError) as raised:
        preloader.wait([MODEL, SECOND], lockfile=str(path), cache_dir=cache)
    assert raised.value.exit_code == 79


def test_a_planted_link_named_like_the_blob_is_hashed_not_trusted(hub, mirrors, cache, tmp_path):
    """Only a link into the repo's own blobs/ is judged by its name: one planted to a file elsewhere that bears
    the locked digest as its name is hashed, and its other bytes refuse."""
    path = tmp_path / "preloader.lock"
    document, _ = lock(hub, cache, path, MODEL)
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCKFILE=str(path))
    assert run_preloader(["run"], env).returncode == 0
    locked = document["repos"][0]["files"]["config.json"]
    planted = tmp_path / "elsewhere" / locked["blob_id"]
    planted.parent.mkdir()
    planted.write_bytes(b"{" + b" " * (locked["size"] - 2) + b"}")
    link = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main") / "config.json"
    link.unlink()
    link.symlink_to(planted)
    hub.reset()
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 79 and proc.stdout == ""
    assert f"config.json: the cache has other bytes ({locked['size']} bytes)" in one_error_line(proc)
    assert hub.count() == 0


def test_a_locked_file_the_commit_lacks_refuses(hub, cache, tmp_path):
    path = tmp_path / "preloader.lock"
    document, _ = lock(hub, cache, path, MODEL)
    document["repos"][0]["files"]["extra.safetensors"] = {"size": 5, "sha256": "e" * 64}
    path.write_text(json.dumps(document))
    hub.reset()
    proc = run_preloader(["pull", MODEL], preloader_env(hub, cache, PRELOADER_LOCKFILE=str(path)))
    assert proc.returncode == 79 and proc.stdout == ""
    assert "extra.safetensors is locked but not in the commit's listing or not selected by the plan" \
        in one_error_line(proc)
    assert hub.count("GET", "/resolve/") == 0


def test_a_locked_start_on_a_read_only_volume_starts_and_still_checks(hub, mirrors, cache, tmp_path):
    """A consumer node that mounts the preloaded volume read-only: the locked start writes nothing it needs,
    makes no network call, and still refuses bytes that are not the locked ones."""
    import subprocess

    path = tmp_path / "preloader.lock"
    document, _ = lock(hub, cache, path, MODEL)
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCKFILE=str(path))
    assert run_preloader(["run"], env).returncode == 0
    volume = cache.parent
    subprocess.run(["mount", "--bind", str(volume), str(volume)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(volume)], check=True)
        hub.reset()
        proc = run_preloader(["run", "--", *SHOW_PATH], env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == str(cache / "models--org--tiny-model" / "snapshots"
                                                   / mirrors.sha("model", MODEL, "main"))
        document["repos"][0]["files"]["config.json"]["blob_id"] = "1" * 40
        path.write_text(json.dumps(document))
        refused = run_preloader(["run", "--", *SHOW_PATH], env)
        assert refused.returncode == 79 and refused.stdout == ""
        assert hub.count() == 0
    finally:
        subprocess.run(["umount", str(volume)], check=True)


def test_a_lock_holds_what_the_default_selection_and_a_named_quantization_fetch(hub, cache, tmp_path):
    """`preloader lock` resolves and selects as a run does: the shards an index names, one quantization."""
    path = tmp_path / "preloader.lock"
    data, _ = lock(hub, cache, path, "org/sharded-consolidated", "org/llama-gguf:Q8_0")
    files = {repo["repo"]: set(repo["files"]) for repo in data["repos"]}
    assert "consolidated.safetensors" not in files["org/sharded-consolidated"]
    assert {f"model-0000{n}-of-00003.safetensors" for n in (1, 2, 3)} <= files["org/sharded-consolidated"]
    ggufs = {name for name in files["org/llama-gguf"] if name.endswith(".gguf")}
    assert ggufs == {"Llama-3.2-1B-Instruct-Q8_0.gguf"}
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/sharded-consolidated,org/llama-gguf:Q8_0",
                        PRELOADER_LOCKFILE=str(path))
    first = run_preloader(["run"], env)
    assert first.returncode == 0, first.stderr
    hub.reset()
    again = run_preloader(["run"], env)  # locked and complete: no hub call at all
    assert again.returncode == 0, again.stderr
    assert hub.count() == 0
