"""Many nodes, one volume: two bindfs mounts of one directory behave like NFS without a lock manager
(a flock on one mount does not exclude the other; an O_EXCL create does). Real processes, real mounts.

And many nodes, each with its own disk, behind a pull-through mirror: olah in online mode.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env

BIG, MODEL = "org/big-model", "org/tiny-model"
ON_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
needs_fuse = pytest.mark.skipif((os.geteuid() != 0 or not shutil.which("bindfs")) and not ON_CI,
                                reason="bindfs mounts need root and bindfs (make test installs it)")


@pytest.fixture
def mounts(tmp_path):
    """Two bindfs mounts, A and B, of one directory: two nodes sharing a volume."""
    shared = tmp_path / "volume"
    shared.mkdir()
    made = []
    for name in ("a", "b"):
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["bindfs", "--no-allow-other", str(shared), str(point)], check=True, timeout=30)
        made.append(point)
    premise(*made)
    yield shared, made[0], made[1]
    for point in made:
        subprocess.run(["fusermount", "-u", str(point)], check=False, timeout=30)
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True, timeout=30)


def premise(a: Path, b: Path) -> None:
    """The fixture's self-check: these mounts behave like NFS without a lock manager (flock does not cross
    them, O_EXCL does), or the tests below prove nothing."""
    (a / "lock").touch()
    with open(a / "lock") as held, open(b / "lock") as other:
        fcntl.flock(held, fcntl.LOCK_EX)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds: the mounts do not see each other's flock
    os.close(os.open(a / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    try:
        os.close(os.open(b / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass
    else:
        pytest.fail("O_EXCL does not cross the two bindfs mounts: they are no stand-in for a shared volume")
    for name in ("lock", "claim"):
        (a / name).unlink()


def start(args, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "preloader", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def node_env(hub, mount: Path, **extra) -> dict:
    return preloader_env(hub, mount / "hub", PRELOADER_RETRIES="5", **extra)


def blob_bytes_ok(cache: Path, mirrors, repo: str) -> bool:
    commit = mirrors.sha("model", repo, "main")
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    return all((snapshot / name).read_bytes() == data for name, data in mirrors.files("model", repo, "main").items())


def leftovers(volume: Path) -> list[str]:
    return [str(p) for p in volume.rglob("*") if p.name.endswith(".incomplete") or ".preloader-tmp-" in p.name]


def weight_bytes(hub) -> int:
    return sum(r.body_bytes for r in hub.requests(method="GET") if "/resolve/" in r.path)


def eight_nodes(hub, mounts, **extra) -> list[subprocess.CompletedProcess]:
    from localhub import Drip

    _, a, b = mounts
    hub.add_rule(lambda m, p: m == "GET" and "/resolve/" in p and p.endswith("model.safetensors"), Drip(8_000_000))
    procs = [start(["run"], node_env(hub, mount, RUNPOD_HUGGINGFACE_MODEL=f"{BIG},{MODEL}", **extra))
             for mount in (a, b, a, b, a, b, a, b)]
    outputs = [p.communicate(timeout=300) for p in procs]  # drained, so a full pipe never blocks a node
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]


@needs_fuse
def test_eight_nodes_with_a_lease_download_once(hub, mirrors, mounts):
    volume, a, b = mounts
    done = eight_nodes(hub, mounts, PRELOADER_LOCK="lease")
    assert [p.returncode for p in done] == [0] * 8, [p.stderr[-600:] for p in done if p.returncode]
    size = sum(mirrors.distinct(("model", BIG, "main"), ("model", MODEL, "main")).values())
    assert weight_bytes(hub) == size  # the origin sent each file once: 1.0x
    assert blob_bytes_ok(a / "hub", mirrors, BIG) and blob_bytes_ok(b / "hub", mirrors, MODEL)
    assert leftovers(volume) == []
    assert sum(p.stderr.count("fetch.start") for p in done) == 2  # each repo downloaded by one node


@needs_fuse
def test_eight_nodes_with_flock_forced_all_succeed_with_correct_bytes(hub, mirrors, mounts, record_property):
    volume, a, b = mounts
    done = eight_nodes(hub, mounts, PRELOADER_LOCK="flock")
    assert [p.returncode for p in done] == [0] * 8, [p.stderr[-600:] for p in done if p.returncode]
    assert not any("preloader: error:" in p.stderr or "Traceback" in p.stderr for p in done)
    assert blob_bytes_ok(a / "hub", mirrors, BIG) and blob_bytes_ok(b / "hub", mirrors, BIG)
    assert blob_bytes_ok(a / "hub", mirrors, MODEL)
    assert leftovers(volume) == []
    size = sum(len(d) for repo in (BIG, MODEL) for d in mirrors.files("model", repo, "main").values())
    ratio = round(weight_bytes(hub) / size, 2)
    record_property("origin_bytes_ratio_flock", ratio)  # measured, reported (docs/FLEET.md)
    print(f"flock forced across mounts: origin sent {ratio}x the repo")


def wait_for(proc: subprocess.Popen, text: str, timeout: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline and proc.poll() is None, lines
        lines.append(proc.stderr.readline())
    return lines


@needs_fuse
def test_kill_9_of_the_lease_holder_lets_a_waiter_on_the_other_mount_take_over(hub, mirrors, mounts):
    from localhub import Stall

    volume, a, b = mounts
    hub.add_rule(lambda m, p: m == "GET" and p.endswith("big-model/resolve/" + mirrors.sha("model", BIG, "main")
                                                        + "/model.safetensors"), Stall(60, times=1))
    env = dict(PRELOADER_LOCK="lease", PRELOADER_LEASE_STALE="3s", RUNPOD_HUGGINGFACE_MODEL=BIG)
    holder = start(["run"], node_env(hub, a, **env))
    wait_for(holder, "fetch.start", 60)
    waiter = start(["run"], node_env(hub, b, **env, PRELOADER_LOCK_TIMEOUT="2m"))
    time.sleep(4)  # longer than the stale time: a live holder's heartbeat keeps its lease
    assert waiter.poll() is None
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert "fetch.start" in err  # the waiter took over and downloaded
    assert blob_bytes_ok(b / "hub", mirrors, BIG)
    assert leftovers(volume) == []


@needs_fuse
def test_a_live_lease_is_never_taken(hub, mirrors, mounts):
    from localhub import Drip

    _, a, b = mounts
    hub.add_rule(lambda m, p: m == "GET" and p.endswith("model.safetensors"), Drip(1_500_000))  # ~8 s
    env = dict(PRELOADER_LOCK="lease", PRELOADER_LEASE_STALE="2s", RUNPOD_HUGGINGFACE_MODEL=BIG)
    holder = start(["run"], node_env(hub, a, **env))
    wait_for(holder, "fetch.start", 60)
    waiter = start(["run"], node_env(hub, b, **env))
    holder_out, holder_err = holder.communicate(timeout=120)
    waiter_out, waiter_err = waiter.communicate(timeout=120)
    assert holder.returncode == waiter.returncode == 0, holder_err + waiter_err
    assert "fetch.start" not in waiter_err  # it waited the whole time and found the work done
    assert "lock.acquired" in waiter_err and "fetched=0" in waiter_err


@needs_fuse
def test_read_only_readers_on_another_mount_start_without_writing(hub, mirrors, mounts, tmp_path):
    volume, a, _ = mounts
    assert subprocess.run([sys.executable, "-m", "preloader", "run"], cwd=ROOT, capture_output=True,
                          env=node_env(hub, a, RUNPOD_HUGGINGFACE_MODEL=MODEL)).returncode == 0
    reader = tmp_path / "reader"
    reader.mkdir()
    subprocess.run(["bindfs", "-r", "--no-allow-other", str(volume), str(reader)], check=True, timeout=30)
    try:
        before = sorted((str(p), p.lstat().st_mtime_ns) for p in volume.rglob("*"))
        env = node_env(hub, reader, RUNPOD_HUGGINGFACE_MODEL=MODEL)
        proc = subprocess.run([sys.executable, "-m", "preloader", "wait", "--", "sh", "-c",
                               'cat "$PRELOADER_MODEL_PATH/config.json" >/dev/null && echo started'],
                              cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "started", proc.stderr
        assert sorted((str(p), p.lstat().st_mtime_ns) for p in volume.rglob("*")) == before
    finally:
        subprocess.run(["fusermount", "-u", str(reader)], check=False)


def test_a_pull_through_mirror_fetches_each_file_once_for_many_nodes(hub, mirrors, tmp_path):
    """olah online in front of the hub (behind our counting proxy); 4 nodes, each its own cache."""
    from localhub import HubProxy, RepoInfoFromRevision, is_repo_info, start_mirror

    hub.add_rule(is_repo_info, RepoInfoFromRevision())
    mirror = start_mirror(hub.url, tmp_path / "mirror")
    front = HubProxy(mirror.url)  # what the nodes see of the mirror: does it honour Range?
    front.honour_range = False
    try:
        hub.reset()
        procs = [start(["run"], preloader_env(front, tmp_path / f"node{n}" / "hub", RUNPOD_HUGGINGFACE_MODEL=BIG,
                                              PRELOADER_PARALLEL_THRESHOLD="1MiB", PRELOADER_CONNECTIONS="4"))
                 for n in range(4)]
        done = [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]
        assert [p.returncode for p in done] == [0] * 4, [p.stderr[-600:] for p in done]
        for n in range(4):
            assert blob_bytes_ok(tmp_path / f"node{n}" / "hub", mirrors, BIG)
        size = sum(len(d) for d in mirrors.files("model", BIG, "main").values())
        assert weight_bytes(hub) == size  # the upstream sent the repo once for the 4 nodes
        ranged = [r for r in front.requests(method="GET") if r.path.endswith("model.safetensors")]
        assert ranged and all(r.request_headers.get("range") for r in ranged)
        assert {r.status for r in ranged} == {206}  # the mirror honours Range: several connections per file
    finally:
        front.stop()
        mirror.stop()
