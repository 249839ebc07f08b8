"""End to end: `python -m preloader run -- python demo/service.py` in real subprocesses, real olah hub."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env, run_preloader

SERVICE = [sys.executable, str(ROOT / "demo" / "service.py")]
MODEL = "org/tiny-model"
DATA = "org/tiny-data"


def service_output(proc) -> dict:
    """The JSON line the demo service printed."""
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_run_preloads_links_and_execs_service_offline(hub, mirrors, cache, tmp_path):
    env = preloader_env(
        hub, cache,
        RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}, {MODEL}:dev",
        RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0",
        RUNPOD_HUGGINGFACE_USER="alice", RUNPOD_HUGGINGFACE_TOKEN="hf_topsecretvalue123",
    )
    proc = run_preloader(["run", "--", *SERVICE, "--flag"], env)
    seen = service_output(proc)
    main = mirrors.sha("model", MODEL, "main")
    dev = mirrors.sha("model", MODEL, "dev")
    tag = mirrors.sha("dataset", DATA, "v1.0")

    # The service loaded both revisions with from_pretrained under HF_HUB_OFFLINE=1.
    assert seen["argv"] == ["--flag"]
    assert seen["hf_hub_offline"] == "1"
    assert seen["hf_hub_cache"] == str(cache)
    assert seen["models"][f"{MODEL}:main"]["layers"] == 1
    assert seen["models"][f"{MODEL}:dev"]["layers"] == 2
    assert seen["datasets"][f"{DATA}:v1.0"]["files"] == mirrors.filenames("dataset", DATA, "v1.0")
    assert seen["tokens_in_env"] == []
    repo_dir = cache / "models--org--tiny-model"
    assert seen["model_path"] == str(repo_dir / "snapshots" / main)

    # Manifest: every requested repo with its commit, snapshot and alias.
    entries = {(e["repo"], e["revision"]): e for e in seen["manifest"]["repos"]}
    assert entries[(MODEL, "main")]["commit"] == main
    assert entries[(MODEL, "dev")]["commit"] == dev
    assert entries[(DATA, "v1.0")]["commit"] == tag
    assert entries[(DATA, "v1.0")]["type"] == "dataset"

    # Links: relative, pointing at the right snapshots.
    assert os.readlink(repo_dir / "snapshots" / "latest") == main  # the repo's first entry
    alias = cache.parent / "preloader" / "links" / "model" / "org" / "tiny-model" / "dev"
    assert entries[(MODEL, "dev")]["alias"] == str(alias)
    assert not os.path.isabs(os.readlink(alias))
    assert alias.resolve() == (repo_dir / "snapshots" / dev).resolve()
    data_alias = cache.parent / "preloader" / "links" / "dataset" / "org" / "tiny-data" / "v1.0"
    assert data_alias.resolve() == (cache / "datasets--org--tiny-data" / "snapshots" / tag).resolve()
    assert (repo_dir / "refs" / "dev").read_text() == dev
    assert (cache / "datasets--org--tiny-data" / "refs" / "v1.0").read_text() == tag

    # Bytes on disk are the bytes in the mirror.
    for name, content in mirrors.files("model", MODEL, "dev").items():
        assert (repo_dir / "snapshots" / dev / name).read_bytes() == content

    # The token never shows in logs.
    assert "hf_topsecretvalue123" not in proc.stderr + proc.stdout
    assert "done repos=3" in proc.stderr


def test_commit_pin_complete_locally_needs_no_network(hub, mirrors, cache):
    commit = mirrors.sha("model", MODEL, "v1.0")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}:{commit}")
    first = run_preloader(["run", "--", *SERVICE], env)
    assert service_output(first)["model_path"].endswith(commit)
    assert hub.count() > 0
    hub.reset()
    second = run_preloader(["run", "--", *SERVICE], env)
    assert service_output(second)["models"][f"{MODEL}:{commit}"]["layers"] == 1
    assert hub.count() == 0
    assert "source=cache" in second.stderr


def test_complete_snapshot_is_not_downloaded_again(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, RUNPOD_HUGGINGFACE_DATASET=DATA)
    assert run_preloader(["run"], env).returncode == 0
    # Each file once; a file byte-identical to one of the other repo (.gitattributes) is linked, not fetched.
    assert sum(hub.file_gets().values()) == len(mirrors.distinct(("model", MODEL, "main"), ("dataset", DATA, "main")))
    hub.reset()
    again = run_preloader(["run"], env)
    assert again.returncode == 0, again.stderr
    assert hub.file_gets() == {}
    assert "bytes_fetched=0" in again.stderr


def test_include_exclude(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/second-model",
                        PRELOADER_INCLUDE="*.json,sub/", PRELOADER_EXCLUDE="*.bin")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    names = set(hub.file_gets())
    expected = {("org/second-model", n) for n in mirrors.filenames("model", "org/second-model", "main")
                if (n.endswith(".json") or n.startswith("sub/")) and not n.endswith(".bin")}
    assert expected and names == expected


def test_hub_down_starts_from_complete_cache_but_never_from_partial(hub, mirrors, cache, olah):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    from localhub import free_port

    # Many retries allowed: with a complete snapshot at hand, one failed lookup is enough to start from it.
    down = dict(env, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", PRELOADER_RETRIES="8")
    proc = run_preloader(["run", "--", *SERVICE], down)
    seen = service_output(proc)
    assert seen["models"][f"{MODEL}:main"]["layers"] == 1
    assert "warning: hub.unreachable" in proc.stderr
    assert "warning: retry" not in proc.stderr

    # Make the snapshot partial: one file gone. It must not be used.
    snapshot = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main")
    (snapshot / "config.json").unlink()
    proc = run_preloader(["run", "--", *SERVICE], down)
    assert proc.returncode == 75
    assert "missing 1 file(s): config.json" in proc.stderr
    assert proc.stdout == ""  # the service did not start


def test_offline_mode_makes_no_network_call(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_OFFLINE="1")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 75
    assert "offline mode is on (PRELOADER_OFFLINE)" in proc.stderr
    assert "never downloaded here" in proc.stderr
    assert run_preloader(["run"], dict(env, PRELOADER_OFFLINE="0")).returncode == 0
    hub.reset()
    assert run_preloader(["run"], env).returncode == 0
    assert hub.count() == 0


@pytest.mark.parametrize(
    "env_extra, code, message, lookups",
    [  # a repo not found: one lookup, and one question whether the other type has it (olah also says
       # RepoNotFound for a missing branch, where the Hub says RevisionNotFound and is not asked again)
        ({"RUNPOD_HUGGINGFACE_MODEL": "org/missing-model"}, 66, "model org/missing-model@main: repository", 2),
        ({"RUNPOD_HUGGINGFACE_MODEL": f"{MODEL}:no-such-branch"}, 66, "model org/tiny-model@no-such-branch", 2),
        ({"RUNPOD_HUGGINGFACE_DATASET": "org/missing-data:v1"}, 66, "dataset org/missing-data@v1", 2),
    ],
)
def test_not_found_fails_fast_without_retry(hub, cache, env_extra, code, message, lookups):
    env = preloader_env(hub, cache, PRELOADER_RETRIES="5", **env_extra)
    started = time.monotonic()
    proc = run_preloader(["run", "--", *SERVICE], env)
    assert proc.returncode == code
    assert "warning: retry" not in proc.stderr
    assert time.monotonic() - started < 60  # the log says it did not retry; the clock only catches a storm
    errors = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in proc.stderr
    assert hub.count(path_contains="/api/models/") + hub.count(path_contains="/api/datasets/") == lookups  # no retry
    assert proc.stdout == ""


def test_invalid_env_exits_78_before_any_write_or_request(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/ok,bad,,org/x:..",
                        RUNPOD_HUGGINGFACE_USER="alice")
    proc = run_preloader(["run", "--", *SERVICE], env)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "RUNPOD_HUGGINGFACE_MODEL item 2 'bad'" in lines[0]
    assert "RUNPOD_HUGGINGFACE_MODEL item 3 ''" in lines[0]
    assert "RUNPOD_HUGGINGFACE_MODEL item 4 'org/x:..'" in lines[0]
    assert "RUNPOD_HUGGINGFACE_TOKEN is missing" in lines[0]
    assert hub.count() == 0
    assert not cache.parent.exists()


@pytest.mark.parametrize("code", [0, 1, 7, 42, 255])
def test_service_exit_code_passes_through(hub, cache, code):
    proc = run_preloader(["run", "--", "sh", "-c", f"exit {code}"], preloader_env(hub, cache))
    assert proc.returncode == code


def test_service_is_exec_d_in_place(hub, cache):
    proc = subprocess.Popen(
        [sys.executable, "-m", "preloader", "run", "--", "sh", "-c", "echo $$"],
        env=preloader_env(hub, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    out, _ = proc.communicate(timeout=60)
    assert int(out.strip()) == proc.pid


def test_missing_and_non_executable_service(hub, cache, tmp_path):
    env = preloader_env(hub, cache)
    proc = run_preloader(["run", "--", "no-such-command-xyz"], env)
    assert proc.returncode == 127
    assert "service command not found: 'no-such-command-xyz'" in proc.stderr
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    proc = run_preloader(["run", "--", str(script)], env)
    assert proc.returncode == 126
    assert "not executable" in proc.stderr


def test_export_token_is_opt_in(hub, cache):
    env = preloader_env(hub, cache, HF_TOKEN="hf_fallbacksecret1", RUNPOD_HUGGINGFACE_TOKEN="hf_runpodsecret1",
                        RUNPOD_HUGGINGFACE_USER="alice")
    hidden = run_preloader(["run", "--", "env"], env)
    assert hidden.returncode == 0
    assert "hf_runpodsecret1" not in hidden.stdout and "hf_fallbacksecret1" not in hidden.stdout
    shown = run_preloader(["run", "--export-token", "--", "env"], env)
    assert "HF_TOKEN=hf_runpodsecret1" in shown.stdout.splitlines()
    assert "RUNPOD_HUGGINGFACE_TOKEN" not in shown.stdout


def test_service_online_opt_out(hub, cache):
    proc = run_preloader(["run", "--no-service-offline", "--", "env"], preloader_env(hub, cache, HF_HUB_OFFLINE=""))
    assert proc.returncode == 0, proc.stderr
    assert f"HF_HUB_CACHE={cache}" in proc.stdout.splitlines()  # the service ran and printed its environment
    assert "HF_HUB_OFFLINE=" not in proc.stdout


def test_sigterm_while_preloading_exits_143_and_cleans_up(hub, cache):
    from localhub import Stall

    hub.add_rule(lambda method, path: method == "GET" and "/resolve/" in path, Stall(30, times=None))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", *SERVICE], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 300
    while hub.count(method="GET", path_contains="/resolve/") == 0:
        assert time.monotonic() < deadline, "the preloader never started downloading"
        time.sleep(0.05)  # polling for the first request, not ordering events
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 143
    assert time.monotonic() - sent < 20  # well before the 30 s stall ends: the signal ended the download
    assert out == ""
    leftovers = [p for p in cache.rglob("*") if p.name.endswith(".incomplete") or ".preloader-tmp-" in p.name]
    assert leftovers == []
    assert not list((cache.parent / "preloader").glob("complete/*/*.json"))


def test_eight_processes_download_each_file_once(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},org/second-model",
                        RUNPOD_HUGGINGFACE_DATASET=DATA, PRELOADER_WEIGHTS="all")  # every file of the mirrors
    procs = [subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=180)]]
    assert [code for code, _ in results] == [0] * 8, results
    gets = hub.file_gets()
    assert set(gets.values()) == {1}
    expected = mirrors.distinct(("model", MODEL, "main"), ("model", "org/second-model", "main"),
                                ("dataset", DATA, "main"))
    assert sum(gets.values()) == len(expected)  # identical files of several repos: fetched once, then linked
    latest = cache / "models--org--tiny-model" / "snapshots" / "latest"
    assert os.readlink(latest) == mirrors.sha("model", MODEL, "main")


def test_scan_cache_dir_reports_no_warnings(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev",
                        RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0")
    assert run_preloader(["run"], env).returncode == 0
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    assert info.warnings == []
    assert {r.repo_id for r in info.repos} == {MODEL, DATA}


def test_state_inside_locks_when_cache_is_the_volume_root(hub, tmp_path):
    cache = tmp_path / "cache"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    from huggingface_hub import scan_cache_dir

    assert scan_cache_dir(cache).warnings == []
    assert list((cache / ".locks" / "preloader" / "complete").glob("*/*.json"))


def test_json_logs(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOG_FORMAT="json")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.strip().splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["repos"] == 1
    assert any(e["event"] == "fetch.done" and e["repo"] == MODEL for e in events)


def test_group_writable_lock_and_state(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run_preloader(["run"], env).returncode == 0
    lock = cache.parent / "preloader" / "locks" / "models--org--tiny-model.lock"
    assert lock.stat().st_mode & 0o060 == 0o060


def test_wait_times_out_then_succeeds_after_a_preload(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    proc = run_preloader(["wait", "--timeout", "1"], env)
    assert proc.returncode == 75
    assert "timed out" in proc.stderr and "org/tiny-model" in proc.stderr
    waiter = subprocess.Popen([sys.executable, "-m", "preloader", "wait", "--timeout", "60", "--", *SERVICE],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    seen = b""
    for line in iter(waiter.stderr.readline, b""):  # it says it waits as it starts to: no sleep to order it
        seen += line
        if line.startswith(b"preloader: wait "):
            break
    assert b"pending=model:org/tiny-model" in seen and waiter.poll() is None, seen
    assert int(re.search(rb"elapsed=(\d+)s", seen)[1]) < 10, seen  # as the wait starts, not 10 s in
    hub.reset()
    assert run_preloader(["run"], env).returncode == 0
    out, err = waiter.communicate(timeout=60)
    out, err = out.decode(), (seen + err).decode()
    assert waiter.returncode == 0, err
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["models"][f"{MODEL}:main"]["layers"] == 1


def test_plan_is_json_without_network_or_writes(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}:dev", RUNPOD_HUGGINGFACE_USER="alice",
                        RUNPOD_HUGGINGFACE_TOKEN="hf_plansecret999")
    proc = run_preloader(["plan", "--", "python", "serve.py"], env)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["repos"][0].pop("weights")["known"] is False  # no record in the cache: plan asks no hub
    assert plan["repos"] == [{
        "type": "model", "repo": MODEL, "revision": "dev", "pinned": False,
        "repo_dir": str(cache / "models--org--tiny-model"),
        "latest": str(cache / "models--org--tiny-model" / "snapshots" / "latest"),
        "alias": str(cache.parent / "preloader" / "links" / "model" / MODEL / "dev"),
    }]
    assert plan["token"] == "set" and plan["user"] == "alice"
    assert plan["service"]["command"] == ["python", "serve.py"]
    assert "hf_plansecret999" not in proc.stdout + proc.stderr
    assert hub.count() == 0
    assert not cache.parent.exists()


def test_python_api(hub, mirrors, cache):
    import preloader

    results = preloader.preload(models=[MODEL], datasets=f"{DATA}:v1.0", cache_dir=cache, endpoint=hub.url)
    assert [(r.repo_id, r.commit) for r in results] == [
        (MODEL, mirrors.sha("model", MODEL, "main")), (DATA, mirrors.sha("dataset", DATA, "v1.0"))]
    assert results[0].bytes_fetched > 0 and results[0].path.is_dir()
    again = preloader.preload(models=[MODEL], cache_dir=cache, endpoint=hub.url)
    assert again[0].bytes_fetched == 0 and again[0].bytes_reused == results[0].bytes_fetched
    with pytest.raises(preloader.NotFoundError) as info:
        preloader.preload(models="org/absent", cache_dir=cache, endpoint=hub.url)
    assert info.value.exit_code == 66
    with pytest.raises(preloader.ConfigError):
        preloader.preload(models="nope", cache_dir=cache)
    assert [r.commit for r in preloader.wait(models=[MODEL], cache_dir=cache, timeout=5)] == [results[0].commit]


def test_transient_errors_are_retried_then_succeed(hub, mirrors, cache):
    from localhub import Status

    revision = "/api/models/org/tiny-model/revision/"
    hub.add_rule(revision, Status(503, times=1))
    hub.add_rule(revision, Status(429, times=1, headers={"Retry-After": "1"}))
    hub.add_rule(lambda m, p: m == "GET" and p.endswith("/config.json"), Status(502, times=1))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_RETRIES="4")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    retries = [line for line in proc.stderr.splitlines() if line.startswith("preloader: warning: retry")]
    assert len(retries) >= 2
    assert "wait=1.0s" in retries[1]  # Retry-After honoured
    assert hub.count(path_contains=revision) == 3
    # huggingface_hub's own log lines come out in our format too.
    assert all(line.startswith("preloader: ") for line in proc.stderr.splitlines()), proc.stderr
    blobs = cache / "models--org--tiny-model" / "blobs"
    assert not [p for p in blobs.iterdir() if p.name.endswith(".incomplete")]
    snapshot = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main")
    assert (snapshot / "config.json").read_bytes() == mirrors.files("model", MODEL, "main")["config.json"]


def test_deadline_ends_a_stalled_preload_with_75(hub, cache):
    from localhub import Stall

    hub.add_rule(lambda m, p: m == "GET" and "/resolve/" in p, Stall(60, times=None))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_TIMEOUT="3")
    started = time.monotonic()
    proc = run_preloader(["run", "--", *SERVICE], env)
    assert proc.returncode == 75
    assert time.monotonic() - started < 45  # well before the 60 s stall ends
    assert "deadline of 3 s passed" in proc.stderr
    assert proc.stdout == ""


def test_lock_wait_logs_and_times_out(hub, cache):
    from filelock import FileLock

    lock = FileLock(cache.parent / "preloader" / "locks" / "models--org--tiny-model.lock")
    (cache.parent / "preloader" / "locks").mkdir(parents=True)
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_LOCK_TIMEOUT="2")
    with lock:
        proc = run_preloader(["run"], env)
    assert proc.returncode == 75
    assert "waiting for the lock on model:org/tiny-model@main" in proc.stderr
    assert run_preloader(["run"], env).returncode == 0


def test_no_repos_warns_or_with_require_repos_fails(hub, cache):
    """A mistyped variable name leaves the plan empty: a loud warning, or exit 78 when asked."""
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODELS=MODEL)  # the typo: MODELS
    proc = run_preloader(["run", "--", "sh", "-c", "echo started"], env)
    assert proc.returncode == 0 and proc.stdout.strip() == "started"
    assert "warning: no repos requested: RUNPOD_HUGGINGFACE_MODEL and RUNPOD_HUGGINGFACE_DATASET are empty" in proc.stderr
    proc = run_preloader(["run", "--", "sh", "-c", "echo started"], env | {"PRELOADER_REQUIRE_REPOS": "1"})
    assert proc.returncode == 78 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "preloader: error: no repos requested: RUNPOD_HUGGINGFACE_MODEL and RUNPOD_HUGGINGFACE_DATASET are empty "
        "or unset and PRELOADER_REQUIRE_REPOS is on; check the variables' names"]
    assert run_preloader(["wait", "--require-repos"], env).returncode == 78
    assert hub.count() == 0


def test_manifest_has_one_stable_path_per_plan_in_the_state_dir(hub, cache, tmp_path):
    """Every start replaces the same file: nothing piles up in /tmp on a long-lived host."""
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    show = ["run", "--", "sh", "-c", 'echo "$PRELOADER_MANIFEST"']
    first = run_preloader(show, env)
    second = run_preloader(show, env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    path = Path(first.stdout.strip())
    assert second.stdout.strip() == str(path)
    assert path.parent == cache.parent / "preloader" / "manifests"
    assert json.loads(path.read_text())["repos"][0]["repo"] == MODEL
    assert list(path.parent.iterdir()) == [path] and list((tmp_path / "tmp").iterdir()) == []
    other = run_preloader(show, env | {"RUNPOD_HUGGINGFACE_DATASET": "org/tiny-data"})
    assert other.returncode == 0 and other.stdout.strip() != str(path)  # another plan, its own file
    plan = json.loads(run_preloader(["plan"], env).stdout)
    assert plan["service"]["manifest"] == str(path)


def test_status_without_specs_checks_the_env_repos(hub, cache):
    """A readiness probe with the service's own env: ready only once every repo it names is complete."""
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, RUNPOD_HUGGINGFACE_DATASET="org/tiny-data")
    proc = run_preloader(["status"], env)
    assert proc.returncode == 1 and proc.stdout.count("NOT READY") == 2
    assert run_preloader(["run"], env).returncode == 0
    proc = run_preloader(["status", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert [r["repo_id"] for r in json.loads(proc.stdout)["repos"]] == [MODEL, "org/tiny-data"]
    empty = run_preloader(["status"], preloader_env(hub, cache))
    assert empty.returncode == 1 and empty.stdout == ""
    assert "no repos to check" in empty.stderr
