"""The fault-injection suite: a hostile hub, a full disk, racing neighbours, signals, and a token to leak.

Run on its own with `pytest -m faults`. Every preloader run here carries a distinctive token, and
every byte it printed or wrote (and the service's environment) is searched for it. The totals for
docs/RELIABILITY.md are printed at the end (`-s`) and written to $PRELOADER_FAULT_SUMMARY if set.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT
from faultsuite import (
    BIG,
    DATA,
    LEDGER,
    MODEL,
    SIZE,
    TOKEN,
    env_for,
    inject,
    leftovers,
    records,
    run,
    snapshot_bytes_ok,
)

pytestmark = pytest.mark.faults

# 1 ------------------------------------------------------------------------------------------------
def test_transient_errors_and_429_are_retried_then_succeed(hub, mirrors, cache):
    from localhub import Status

    revision = f"/api/models/{MODEL}/revision/"
    hub.add_rule(revision, Status(500, times=1))
    hub.add_rule(revision, Status(502, times=1))
    hub.add_rule(revision, Status(503, times=1, headers={"Retry-After": "1"}))
    # Later than the backoffs before it can add up to (at most 1 + 2 + 1 + 8 s), so the wait is seen.
    until = int(time.time()) + 14
    date = email.utils.formatdate(until, usegmt=True)
    hub.add_rule(f"/api/models/{MODEL}/tree/", Status(503, times=1))
    hub.add_rule(lambda m, p: m == "GET" and p.endswith("/config.json"), Status(429, times=1,
                                                                              headers={"Retry-After": date}))
    proc = run(["run"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_RETRIES="6"), expect=0)
    assert proc.returncode == 0, proc.stderr
    waits = [line.split("wait=")[1].split()[0] for line in proc.stderr.splitlines() if "warning: retry" in line]
    assert len(waits) >= 4
    assert "1.0s" in waits  # Retry-After in seconds
    [limited] = hub.requests(method="GET", path_contains="/config.json")[:1]
    expected = until - limited.time  # Retry-After as an HTTP date: wait until then
    assert any(abs(float(w.rstrip("s")) - expected) < 1.2 for w in waits), (waits, expected)
    assert snapshot_bytes_ok(cache, mirrors, MODEL)
    blobs = list((cache / "models--org--tiny-model" / "blobs").iterdir())
    assert len(blobs) == len({hashlib.sha256(c).hexdigest() for c in mirrors.files("model", MODEL, "main").values()})
    assert leftovers(cache.parent) == []


# 2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, action, code, words",
    [
        ("revision", ("Status", 401, {}), 77, "answered 401; the token lacks access"),
        ("revision", ("Status", 403, {}), 77, "answered 403"),
        ("revision", ("Status", 403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"}), 77, "gated"),
        ("revision", ("Status", 404, {"X-Error-Code": "RepoNotFound"}), 66, "not found"),
        ("revision", ("Status", 404, {"X-Error-Code": "RevisionNotFound"}), 66, "revision"),
        ("file", ("Status", 404, {"X-Error-Code": "EntryNotFound"}), 66, "file config.json"),
    ],
)
def test_permanent_errors_fail_fast_without_retry(hub, cache, where, action, code, words):
    from localhub import Status

    _, status, headers = action
    if where == "revision":
        hub.add_rule(f"/api/models/{MODEL}/revision/", Status(status, times=None, headers=headers))
    else:
        hub.add_rule(lambda m, p: m == "GET" and p.endswith("/config.json"), Status(status, times=None,
                                                                                    headers=headers))
    started = time.monotonic()
    proc = run(["run", "--", "true"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_RETRIES="5"),
               expect=code)
    assert proc.returncode == code, proc.stderr
    # No retry: the log and the request count below say so; the clock only catches a retry storm
    # (olah alone can take seconds to serve a repo's first files on a loaded machine).
    assert time.monotonic() - started < 15
    errors = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    assert len(errors) == 1 and f"{MODEL}@main" in errors[0] and words in errors[0]
    assert "warning: retry" not in proc.stderr
    assert hub.count(path_contains=f"/api/models/{MODEL}/revision/") == 1


def test_unknown_revision_on_the_real_hub_is_66(hub, cache):
    proc = run(["run"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}:no-such-tag"), expect=66)
    assert proc.returncode == 66 and f"{MODEL}@no-such-tag" in proc.stderr


# 3 ------------------------------------------------------------------------------------------------
def test_stall_mid_body_times_out_and_is_retried(hub, mirrors, cache):
    from localhub import StallAfter

    rule = hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"),
                        StallAfter(100_000, 60, times=1))
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_READ_TIMEOUT="2s", PRELOADER_RETRIES="5")
    proc = run(["run"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert rule.action.fired == 1 and "warning: retry" in proc.stderr
    assert snapshot_bytes_ok(cache, mirrors, BIG)


def test_stall_past_the_deadline_exits_75_without_starting_the_service(hub, cache):
    from localhub import StallAfter

    hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p, StallAfter(1000, 60, times=None))
    started = time.monotonic()
    proc = run(["run", "--", "sh", "-c", "echo service-started"],
               env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_TIMEOUT="3s"), expect=75)
    assert proc.returncode == 75 and "deadline of 3 s passed" in proc.stderr
    assert time.monotonic() - started < 10
    assert "service-started" not in proc.stdout
    assert records(cache) == [] and leftovers(cache) == []


# 4 ------------------------------------------------------------------------------------------------
def test_kill_9_then_restart_completes_and_publishes_only_at_the_end(hub, mirrors, cache):
    from localhub import Drip

    rule = hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"),
                        Drip(2_000_000))
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_PARALLEL_THRESHOLD="1MiB",
                  PRELOADER_CONNECTIONS="4")
    log = cache.parent.parent / "first-run.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    latest = cache / "models--org--big-model" / "snapshots" / "latest"
    deadline = time.monotonic() + 300
    while sum(r.body_bytes for r in hub.requests(method="GET", path_contains="big-model/resolve")) < SIZE // 3:
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
        assert records(cache) == [] and not latest.is_symlink()  # nothing published mid-download
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    LEDGER["runs"] += 1
    LEDGER["runs_survived"] += 1  # killed on purpose: what counts is that the next run completes
    assert records(cache) == [] and not latest.is_symlink()
    hub.remove_rule(rule)
    inject()  # the kill -9
    proc = run(["run"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert snapshot_bytes_ok(cache, mirrors, BIG)
    assert leftovers(cache.parent) == [] and len(records(cache)) == 1 and latest.is_symlink()


# 5 ------------------------------------------------------------------------------------------------
def test_corrupt_bytes_never_reach_a_complete_snapshot(hub, mirrors, cache):
    from localhub import WrongBytes

    hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"),
                 WrongBytes(times=None))
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_RETRIES="2")
    proc = run(["run", "--", "true"], env, expect=75)
    assert proc.returncode == 75 and "do not match the etag" in proc.stderr
    assert records(cache) == []
    status = run(["status", BIG], env, expect=1)
    assert status.returncode == 1
    data = mirrors.files("model", BIG, "main")["model.safetensors"]
    assert not (cache / "models--org--big-model" / "blobs" / hashlib.sha256(data).hexdigest()).exists()


# 6 ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0777", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_mid_download_exits_74_then_completes_with_room(hub, mirrors, small_disk):
    from localhub import Drip

    cache = small_disk / "hub"
    rule = hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"),
                        Drip(4_000_000))
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_MIN_FREE="0")
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", "sh", "-c", "echo service-started"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not hub.requests(method="GET", path_contains="big-model/resolve"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    inject()
    ballast = small_disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # another tenant fills the volume
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    out, err = proc.communicate(timeout=60)
    LEDGER["runs"] += 1
    assert proc.returncode == 74, err
    LEDGER["runs_survived"] += 1
    assert "No space left on device" in err and "service-started" not in out
    assert TOKEN not in out + err
    assert not list((small_disk / "preloader" / "complete").rglob("*.json"))
    ballast.unlink()
    hub.remove_rule(rule)
    proc = run(["run"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert snapshot_bytes_ok(cache, mirrors, BIG)


def test_disk_too_small_is_refused_before_writing(hub, small_disk):
    inject()
    cache = small_disk / "hub"
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_MIN_FREE="8MiB")
    proc = run(["run", "--", "true"], env, expect=74)
    assert proc.returncode == 74 and "not enough space on the cache volume" in proc.stderr
    assert hub.file_gets() == {}


# 7 ------------------------------------------------------------------------------------------------
def test_hub_unreachable_complete_cache_starts_partial_cache_fails(hub, mirrors, cache):
    from localhub import free_port

    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run(["run"], env, expect=0).returncode == 0
    inject(2)  # the hub goes away; then a file of the snapshot goes too
    down = dict(env, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    proc = run(["run", "--", "sh", "-c", "echo service-started"], down, expect=0)
    assert proc.returncode == 0 and "service-started" in proc.stdout and "warning: hub.unreachable" in proc.stderr
    snapshot = cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", MODEL, "main")
    (snapshot / "README.md").unlink()
    proc = run(["run", "--", "sh", "-c", "echo service-started"], down, expect=75)
    assert proc.returncode == 75 and "README.md" in proc.stderr and "service-started" not in proc.stdout


# 8 ------------------------------------------------------------------------------------------------
HOSTILE = ["../x", "/etc/preloader-x", "a/../../x", "dir\\..\\x", "nul\x00x"]


def test_hostile_names_from_the_hub_are_refused_before_any_write(hub, cache, tmp_path):
    from localhub import HostileListing

    hub.add_rule(f"/api/models/{MODEL}/tree/", HostileListing(HOSTILE))
    before = set(tmp_path.rglob("*"))
    proc = run(["run", "--", "true"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=76)
    assert proc.returncode == 76
    assert "unsafe entries, nothing was written" in proc.stderr and "'../x'" in proc.stderr
    assert hub.file_gets() == {}
    assert not Path("/etc/preloader-x").exists() and not (cache / "x").exists() and not (cache.parent / "x").exists()
    assert not (cache / "models--org--tiny-model" / "snapshots").exists()
    assert all(str(p).startswith(str(cache.parent)) for p in set(tmp_path.rglob("*")) - before)


@pytest.mark.parametrize("where, action, words", [
    ("tree", {"type": "file", "path": "w.bin", "size": "5", "oid": "0" * 40}, "malformed entry"),
    ("tree", {"type": "file", "path": ["w.bin"], "size": 5, "oid": "0" * 40}, "malformed entry"),
    ("tree", "not an entry", "malformed entry"),
    ("revision", b"<html>maintenance</html>", "is not JSON"),
    ("revision", b'{"sha": ["../../x"]}', "is not a 40-hex id"),
])
def test_malformed_hub_answers_are_refused_before_any_write(hub, cache, where, action, words):
    from localhub import HostileListing, Status

    if where == "tree":
        hub.add_rule(f"/api/models/{MODEL}/tree/", HostileListing([], entries=[action]))
    else:
        hub.add_rule(f"/api/models/{MODEL}/revision/", Status(200, times=None, body=action))
    proc = run(["run", "--", "true"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=76)
    assert proc.returncode == 76
    [error] = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert words in error and "Traceback" not in proc.stderr
    assert hub.file_gets() == {}
    assert not (cache / "models--org--tiny-model").exists()


def test_hostile_ids_from_env_are_refused_before_any_write(hub, cache):
    inject(4)
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL="../../etc/x,org/..,org/a:../../x",
                  RUNPOD_HUGGINGFACE_DATASET="/abs/path")
    proc = run(["run"], env, expect=78)
    assert proc.returncode == 78 and proc.stderr.count("item") == 4
    assert hub.count() == 0 and not cache.parent.exists()


def test_planted_symlinks_are_not_followed_out_of_the_cache(hub, mirrors, cache, tmp_path):
    inject(3)
    outside = tmp_path / "outside"
    outside.mkdir()
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    # A `latest` link planted to point outside: it is replaced, never written through.
    snapshots = cache / "models--org--tiny-model" / "snapshots"
    snapshots.mkdir(parents=True)
    os.symlink(outside, snapshots / "latest")
    assert run(["run"], env, expect=0).returncode == 0
    assert os.readlink(snapshots / "latest") == mirrors.sha("model", MODEL, "main")
    # An alias directory planted as a link out: refused with 73, nothing created outside.
    links = cache.parent / "preloader" / "links" / "model"
    links.mkdir(parents=True, exist_ok=True)
    for child in links.iterdir():
        subprocess.run(["rm", "-rf", str(child)], check=True)
    os.symlink(outside, links / "org")
    proc = run(["run"], env, expect=73)
    assert proc.returncode == 73 and "outside" in proc.stderr
    assert list(outside.iterdir()) == []
    (links / "org").unlink()
    # A lock file planted as a link to a file outside: not followed, the target untouched.
    victim = outside / "victim"
    victim.write_text("keep me")
    lock = cache.parent / "preloader" / "locks" / "models--org--second-model.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, lock)
    proc = run(["run"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/second-model"), expect=73)
    assert proc.returncode == 73 and "is a symlink" in proc.stderr
    assert victim.read_text() == "keep me" and oct(victim.stat().st_mode)[-3:] != "664"


# 9 ------------------------------------------------------------------------------------------------
def test_eight_preloaders_and_rm_and_prune_at_once(hub, mirrors, cache):
    import preloader

    preloader.preload(models=[MODEL, "org/second-model"], cache_dir=cache, endpoint=hub.url)
    hub.reset()
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{BIG}", RUNPOD_HUGGINGFACE_DATASET=DATA,
                  PRELOADER_PARALLEL_THRESHOLD="1MiB")
    alias = cache.parent / "preloader" / "links" / "model" / MODEL / "main"
    latest = cache / "models--org--tiny-model" / "snapshots" / "latest"
    names = mirrors.filenames("model", MODEL, "main")
    misses = []
    stop = threading.Event()

    def reader():  # a service reading the complete snapshot through its stable paths
        while not stop.is_set():
            for base in (alias, latest):
                for name in names:
                    try:
                        (base / name).read_bytes()
                    except OSError as error:
                        misses.append(f"{base / name}: {error}")

    inject(2)  # rm and prune racing the preloaders
    thread = threading.Thread(target=reader)
    thread.start()
    procs = [subprocess.Popen([sys.executable, "-m", "preloader", *args], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in [["run"]] * 8 + [["rm", "org/second-model", "--yes"],
                                           ["prune", "--max-size", "1", "--keep", MODEL, "--keep", BIG,
                                            "--keep-dataset", DATA]]]
    results = [(p.returncode, out + err) for p in procs for out, err in [p.communicate(timeout=180)]]
    stop.set()
    thread.join()
    LEDGER["runs"] += len(procs)
    assert all(TOKEN not in out for _, out in results)
    codes = [code for code, _ in results]
    assert codes[:8] == [0] * 8, results
    assert codes[8] in (0, 66) and codes[9] == 0  # rm and prune raced for the same repo: both end cleanly
    assert all("Traceback" not in out for _, out in results)
    LEDGER["runs_survived"] += len(procs)
    assert misses == []
    gets = hub.file_gets()
    big = [r for r in hub.requests(method="GET", path_contains="big-model/resolve")]
    assert sum(r.body_bytes for r in big if r.path.endswith(".safetensors")) == SIZE  # sent once, in ranges
    assert all(n == 1 for (repo, name), n in gets.items() if not (repo == BIG and name == "model.safetensors"))
    assert not (cache / "models--org--second-model").exists()
    assert snapshot_bytes_ok(cache, mirrors, BIG) and snapshot_bytes_ok(cache, mirrors, DATA, "main", "dataset")


# 10 -----------------------------------------------------------------------------------------------
def read_until(stream, word: bytes) -> bytes:
    """Lines of an unbuffered pipe up to the first holding `word` (or its end): an event to wait on, no sleep."""
    seen = b""
    for line in iter(stream.readline, b""):
        seen += line
        if word in line:
            break
    return seen


def test_lock_holder_killed_with_sigkill_releases_waiters(hub, mirrors, cache):
    lock = cache.parent / "preloader" / "locks" / "models--org--tiny-model.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from filelock import FileLock
lock = FileLock({str(lock)!r})
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.Popen([sys.executable, "-m", "preloader", "run"], cwd=ROOT, bufsize=0,
                              env=env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = read_until(waiter.stderr, b"lock.wait")  # the waiter says it waits as it starts to
    assert b"lock.wait" in seen and waiter.poll() is None, seen
    assert int(re.search(rb"elapsed=(\d+)s", seen)[1]) < 10, seen  # as the wait starts, not 10 s in
    inject()
    holder.kill()
    killed = time.monotonic()
    out, err = waiter.communicate(timeout=60)
    err = (seen + err).decode()
    LEDGER["runs"] += 1
    assert waiter.returncode == 0, err
    assert time.monotonic() - killed < 5
    LEDGER["runs_survived"] += 1
    assert snapshot_bytes_ok(cache, mirrors, MODEL)


def test_filesystem_without_flock_falls_back_and_stays_correct(hub, mirrors, cache, tmp_path):
    inject()
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import errno, fcntl\n"
        "def _no_flock(*args):\n"
        "    raise OSError(errno.ENOSYS, 'flock not supported on this filesystem')\n"
        "fcntl.flock = _no_flock\n"
    )
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{BIG}", PYTHONPATH=f"{shim}:{ROOT}",
                  PRELOADER_PARALLEL_THRESHOLD="1MiB")
    procs = [subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=180)]]
    LEDGER["runs"] += 3
    assert [code for code, _ in results] == [0, 0, 0], results
    LEDGER["runs_survived"] += 3
    assert snapshot_bytes_ok(cache, mirrors, MODEL) and snapshot_bytes_ok(cache, mirrors, BIG)
    from huggingface_hub import scan_cache_dir

    assert scan_cache_dir(cache).warnings == []


# 11 -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="switching UIDs needs root")
def test_a_second_uid_in_the_group_reads_snapshots_and_takes_locks(hub, mirrors):
    import tempfile

    inject()
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        volume = base / "volume"
        volume.mkdir()
        os.chown(volume, 0, 100)
        os.chmod(volume, 0o2775)  # the shared group owns the volume; new dirs inherit it
        cache = volume / "hub"
        def as_user(uid: int, *args: str) -> list[str]:
            """`preloader ARGS` as UID in group 100 with umask 002, as a container's service user runs."""
            code = ("import os, runpy, sys; os.umask(0o002); sys.argv = ['preloader', *sys.argv[1:]]; "
                    "runpy.run_module('preloader', run_name='__main__')")
            return ["setpriv", f"--reuid={uid}", "--regid=100", "--clear-groups", sys.executable, "-c", code, *args]

        env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PYTHONPATH=str(ROOT), HOME=str(base))
        first = subprocess.run(as_user(1001, "run"), env=env, capture_output=True, text=True, cwd="/")
        assert first.returncode == 0, first.stderr
        # UID 1002, same group: the service reads every file, and a preload of another revision takes the lock
        # and writes into the same repo folder.
        names = " ".join(f'"$PRELOADER_MODEL_PATH/{n}"' for n in mirrors.filenames("model", MODEL, "main"))
        second = subprocess.run(as_user(1002, "run", "--", "sh", "-c", f"cat {names}"),
                                env=env, capture_output=True, cwd="/")
        assert second.returncode == 0, second.stderr
        assert second.stdout == b"".join(mirrors.files("model", MODEL, "main")[n]
                                         for n in mirrors.filenames("model", MODEL, "main"))
        third = subprocess.run(as_user(1002, "run", "--model", f"{MODEL}:dev"), env=env, capture_output=True,
                               text=True, cwd="/")
        assert third.returncode == 0, third.stderr
        lock = volume / "preloader" / "locks" / "models--org--tiny-model.lock"
        assert lock.stat().st_mode & 0o060 == 0o060 and lock.stat().st_gid == 100
        LEDGER["runs"] += 3
        LEDGER["runs_survived"] += 3
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


# 12 -----------------------------------------------------------------------------------------------
def test_sigterm_while_preloading_cleans_up_and_exits_143(hub, cache):
    from localhub import Drip

    hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p, Drip(500_000))
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_PARALLEL_THRESHOLD="1MiB")
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", "sh", "-c", "echo service-started"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not leftovers(cache):
        assert time.monotonic() < deadline
        time.sleep(0.02)  # polling for the partial file, not ordering events
    inject()
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    LEDGER["runs"] += 1
    assert proc.returncode == 143 and time.monotonic() - sent < 2
    LEDGER["runs_survived"] += 1
    assert "service-started" not in out and TOKEN not in out + err
    assert leftovers(cache) == [] and records(cache) == []


def test_service_is_the_same_pid_gets_sigterm_and_sets_the_exit_code(hub, cache):
    env = env_for(hub, cache, DEMO_EXIT_ON_TERM="7")
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", sys.executable,
                             str(ROOT / "demo" / "service.py"), "--serve"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inject()
    seen = json.loads(proc.stdout.readline())
    assert seen["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    LEDGER["runs"] += 1
    assert proc.returncode == 7
    LEDGER["runs_survived"] += 1


def test_sigpipe_and_sigxfsz_are_not_ignored_for_the_service(hub, cache):
    proc = run(["run", "--", "sh", "-c", "grep SigIgn /proc/$$/status"], env_for(hub, cache), expect=0)
    ignored = int(proc.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))
    assert not ignored & (1 << (signal.SIGTERM - 1))


# 13 -----------------------------------------------------------------------------------------------
def test_token_never_reaches_the_service_environment_unless_exported(hub, cache):
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, HF_TOKEN=TOKEN)
    proc = run(["run", "--", "sh", "-c", "cat /proc/$$/environ"], env, expect=0)
    assert proc.returncode == 0 and "PRELOADER_MANIFEST=" in proc.stdout
    manifest = Path(proc.stdout.split("PRELOADER_MANIFEST=")[1].split("\0")[0])
    assert TOKEN not in manifest.read_text()
    exported = subprocess.run([sys.executable, "-m", "preloader", "run", "--export-token", "--", "sh", "-c",
                               "cat /proc/$$/environ"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert f"HF_TOKEN={TOKEN}" in exported.stdout.split("\0")
    assert TOKEN not in exported.stderr


def test_token_is_scrubbed_from_tracebacks_too(hub, cache):
    """The whole token pasted into the spec, with tracebacks asked for: the traceback shows, the token not."""
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}:{TOKEN}..bad", PRELOADER_DEBUG="1")
    proc = run(["run"], env, expect=78)
    assert proc.returncode == 78
    assert "Traceback" in proc.stderr and "RUNPOD_HUGGINGFACE_MODEL" in proc.stderr
    assert TOKEN not in proc.stderr


# 14 -----------------------------------------------------------------------------------------------
def test_gpu_warming_never_unpickles_and_caps_safetensors_headers(tmp_path):
    from preloader.errors import DiskError, UnavailableError
    from preloader.warm.gpu import warm_gpu
    from preloader.warm.safetensors import MAX_HEADER, read_header

    pickle_file = tmp_path / "pytorch_model.bin"
    pickle_file.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnavailableError, match="pytorch_model.bin"):
        warm_gpu([pickle_file], device="cpu")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((MAX_HEADER + 1).to_bytes(8, "little") + b"{}")
    with pytest.raises(DiskError):
        read_header(huge)
