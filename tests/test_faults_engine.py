"""The engine and the hand-off under local damage and hostile neighbours: a damaged cache heals on start,
the manifest goes nowhere another user can reach, a bad command or manifest path is a settings error, the
parent's ignored signals stay ignored, and an interrupted run leaves no temp files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT
from faultsuite import (  # noqa: F401 (account: the suite's autouse fixture)
    BIG,
    DATA,
    LEDGER,
    MODEL,
    SIZE,
    account,
    env_for,
    inject,
    leftovers,
    records,
    run,
    snapshot_bytes_ok,
)

pytestmark = pytest.mark.faults

WEIGHTS = "model.safetensors"


def snapshot(cache: Path, mirrors, repo: str = MODEL) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "snapshots" / mirrors.sha("model", repo, "main")


def resolved(hub) -> list[str]:
    """The files the hub sent, by name."""
    return sorted(r.path.rsplit("/", 1)[-1] for r in hub.requests(method="GET", path_contains="/resolve/"))


def damage(blob: Path, how: str) -> None:
    inject()
    if how == "a-folder-in-its-place":  # the snapshot's entry, not the blob
        link = next(p for p in blob.parents[1].glob("snapshots/*/" + WEIGHTS))
        link.unlink()
        (link / "stray").mkdir(parents=True)
        (link / "stray" / "x").write_text("x")
        (link / "out").symlink_to(blob.parents[3])  # a link inside is removed, not followed
    elif how == "truncated":
        os.truncate(blob, blob.stat().st_size // 2)
    elif how == "extended":
        with open(blob, "ab") as file:
            file.write(b"\0" * 7)
    else:  # the right size, other bytes; and no completion record saying it was ever checked
        data = bytearray(blob.read_bytes())
        data[100:110] = b"x" * 10
        blob.unlink()
        blob.write_bytes(bytes(data))
        for record in records(blob.parents[2]):
            record.unlink()


# 3: a damaged cache heals on start -----------------------------------------------------------------
@pytest.mark.parametrize("how", ["truncated", "extended", "wrong-bytes-no-record", "a-folder-in-its-place"])
@pytest.mark.parametrize("command", [["run", "--", "true"], ["pull", MODEL]])
def test_a_damaged_blob_is_fetched_again_and_only_it(hub, mirrors, cache, how, command):
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run(["run"], env, expect=0).returncode == 0
    damage((snapshot(cache, mirrors) / WEIGHTS).resolve(), how)
    hub.reset()
    proc = run(command, env, expect=0)
    assert proc.returncode == 0, proc.stderr
    # Only the damaged file is sent again; a folder in the link's place is removed, and the intact blob linked.
    assert resolved(hub) == ([] if how == "a-folder-in-its-place" else [WEIGHTS])
    assert snapshot_bytes_ok(cache, mirrors, MODEL)
    assert f"preloader: warning: heal repo={MODEL}" in proc.stderr and f"damaged={WEIGHTS}" in proc.stderr
    hub.reset()
    assert run(["run", "--", "true"], env, expect=0).returncode == 0  # healed: the next start fetches nothing
    assert resolved(hub) == []
    assert leftovers(cache.parent) == []


def test_a_damaged_blob_heals_through_huggingface_hub_too(hub, mirrors, cache):
    """PRELOADER_TRANSFER=hub: huggingface_hub returns a snapshot file that exists without checking it, so the
    damaged one must be gone before it is asked."""
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_TRANSFER="hub")
    assert run(["run"], env, expect=0).returncode == 0
    damage((snapshot(cache, mirrors) / WEIGHTS).resolve(), "truncated")
    hub.reset()
    proc = run(["run", "--", "true"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert resolved(hub) == [WEIGHTS]
    assert snapshot_bytes_ok(cache, mirrors, MODEL)


def test_a_damaged_blob_no_snapshot_links_yet_is_not_linked(hub, mirrors, cache):
    """A blob of the wrong size already in `blobs/` (a cut-short copy under the final name) is replaced,
    not linked into the new snapshot."""
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    data = mirrors.files("model", MODEL, "main")[WEIGHTS]
    blob = cache / "models--org--tiny-model" / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data[:1000])
    inject()
    proc = run(["run", "--", "true"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert WEIGHTS in resolved(hub)
    assert snapshot_bytes_ok(cache, mirrors, MODEL)


# 7: a command or a manifest path that cannot work is a setting to fix, before any work ----------------
@pytest.mark.parametrize("args", [["run", "--", ""], ["run", "--", "", "x"], ["wait", "--", ""]])
def test_an_empty_service_command_is_78_before_any_work(hub, cache, args):
    inject()
    proc = run(args, env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=78)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.splitlines() == ["preloader: error: the service command after -- is empty; give the program "
                                        "to run, e.g. `preloader run -- python serve.py`"]
    assert hub.count() == 0 and not cache.exists()


@pytest.mark.parametrize("command", ["run", "wait"])
@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_a_manifest_path_that_cannot_be_a_file_is_78_before_any_work(hub, cache, tmp_path, command, where):
    inject()
    (tmp_path / "a-file").write_text("x")
    manifest = tmp_path if where == "directory" else tmp_path / "a-file" / "sub" / "m.json"
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_MANIFEST=str(manifest))
    proc = run([command, "--", "sh", "-c", "echo service-started"], env, expect=78)
    assert proc.returncode == 78, proc.stderr
    expected = (f"{tmp_path} is a directory; name a file in it, e.g. {tmp_path / 'manifest.json'}"
                if where == "directory" else f"{manifest}: {tmp_path / 'a-file'} is not a directory; name a file "
                                             "in a folder")
    assert proc.stderr.splitlines() == [f"preloader: error: PRELOADER_MANIFEST (--manifest) {expected}"]
    assert "service-started" not in proc.stdout and hub.count() == 0


@pytest.fixture
def public():
    """A world-writable sticky folder as /tmp is, that an unprivileged user can reach; removed after."""
    folder = Path(tempfile.mkdtemp(prefix="preloader-test-", dir="/tmp"))
    os.chmod(folder, 0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A real read-only bind mount of an empty folder; unmounted after the test."""
    src, mount = tmp_path / "ro-src", tmp_path / "ro"
    src.mkdir()
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_manifest_path_that_cannot_be_written_is_78_not_a_bug(tmp_path, read_only_dir):
    """A folder on a read-only volume: found only when writing, after the preload, and still a setting."""
    env = {**os.environ, "PRELOADER_CACHE_DIR": str(tmp_path / "cache"),
           "PRELOADER_MANIFEST": str(read_only_dir / "m.json")}
    inject()
    proc = run(["wait", "--", "sh", "-c", "echo service-started"], env, expect=78)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"preloader: error: PRELOADER_MANIFEST (--manifest) {read_only_dir / 'm.json'} cannot be written: "
        "Read-only file system; choose a path this user may write")
    assert "service-started" not in proc.stdout


# 5: no shared predictable names ----------------------------------------------------------------------
def nobody(script: str) -> None:
    """Run a shell script as an unprivileged local user: the hostile neighbour."""
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", script], check=True, capture_output=True)


MANIFEST_READER = 'cat "$PRELOADER_MANIFEST" >/dev/null && stat -c "%a %U $PRELOADER_MANIFEST" "$PRELOADER_MANIFEST"'


@pytest.mark.parametrize("planted", ["file", "symlink", "private-dir-taken"])
def test_the_read_only_fallback_manifest_is_private_and_cannot_be_blocked(public, read_only_dir, planted):
    """A read-only state dir sends the manifest elsewhere: not to a name in /tmp that another user could
    pre-create (to block the start, or to read the repo list), but to a place of this user's, mode 0600."""
    from preloader.config import Settings
    from preloader.preloading.handoff import manifest_path

    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env |= {"PRELOADER_CACHE_DIR": str(read_only_dir / "hub"), "TMPDIR": str(public)}
    old = public / f"preloader-manifest-{manifest_path(Settings.load(env)).stem}.json"  # the name it had
    inject()
    if planted == "file":
        nobody(f"echo planted > {old} && chmod 0644 {old}")
    elif planted == "symlink":
        nobody(f"echo secret > {public}/theirs && ln -s {public}/theirs {old}")
    else:  # the per-user folder it would use, taken first by another user
        nobody(f"mkdir -m 0777 {public}/preloader-{os.getuid()}")
    proc = run(["wait", "--", "sh", "-c", MANIFEST_READER], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    mode, owner, path = proc.stdout.split()
    assert (mode, owner) == ("600", "root")
    folder, written = Path(path).parent, Path(path)
    assert '"repos": []' in written.read_text() and written != old
    if planted == "private-dir-taken":  # not their folder: a name of its own (mkstemp), 0600
        assert folder == public and list((public / f"preloader-{os.getuid()}").iterdir()) == []
        assert written.name.startswith("preloader-manifest-") and written.name != old.name
    else:
        assert folder == public / f"preloader-{os.getuid()}" and not folder.is_symlink()
        assert folder.stat().st_uid == os.getuid() and not folder.stat().st_mode & 0o077
        ours = {p.name for p in public.iterdir()} - {"theirs", old.name}
        assert ours == {folder.name}, ours  # nothing else of ours under a fixed name in the shared temp dir
    if planted == "file":
        assert old.read_text() == "planted\n"  # theirs, left alone
    elif planted == "symlink":
        assert (public / "theirs").read_text() == "secret\n"  # nothing written through their link


def test_xdg_runtime_dir_is_used_when_it_is_private(tmp_path, read_only_dir, public):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "PRELOADER_CACHE_DIR": str(read_only_dir / "hub"), "XDG_RUNTIME_DIR": str(runtime),
           "TMPDIR": str(public)}
    proc = run(["wait", "--", "sh", "-c", MANIFEST_READER], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    mode, _, path = proc.stdout.split()
    assert mode == "600" and Path(path).parent == runtime
    assert list(public.iterdir()) == []
    # One that others may enter is not used.
    os.chmod(runtime, 0o755)
    proc = run(["wait", "--", "sh", "-c", MANIFEST_READER], env, expect=0)
    assert proc.returncode == 0 and Path(proc.stdout.split()[2]).parent == public / f"preloader-{os.getuid()}"


# 12: the parent's ignored signals stay ignored --------------------------------------------------------
def sig_ignored(stdout: str) -> int:
    return int(stdout.split()[1], 16)


@pytest.mark.parametrize("command", ["run", "wait"])
def test_signals_the_parent_ignored_stay_ignored_for_the_service(tmp_path, command):
    """`nohup preloader run -- serve`: SIGHUP stays ignored for the service, as `exec` would leave it; a
    parent that ignores nothing leaves the service nothing ignored (Python's own SIGPIPE/SIGXFSZ reset)."""
    env = {**os.environ, "PRELOADER_CACHE_DIR": str(tmp_path / "hub")}
    args = [command, "--", "sh", "-c", "grep SigIgn /proc/$$/status"]

    def nohup():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)

    ignored = sig_ignored(run(args, env, expect=0, preexec_fn=nohup).stdout)
    assert ignored & (1 << (signal.SIGHUP - 1)) and ignored & (1 << (signal.SIGQUIT - 1))
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGTERM - 1))
    plain = sig_ignored(run(args, env, expect=0, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
                        .stdout)
    assert not plain & (1 << (signal.SIGHUP - 1)) and not plain & (1 << (signal.SIGQUIT - 1))
    assert not plain & (1 << (signal.SIGPIPE - 1)) and not plain & (1 << (signal.SIGXFSZ - 1))


def test_a_hangup_the_parent_ignored_does_not_stop_the_preload(hub, mirrors, cache):
    """Under nohup a SIGHUP arriving mid-download is ignored, not turned into exit 129."""
    from localhub import Drip

    rule = hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"),
                        Drip(4_000_000))
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG)
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", "sh", "-c", "echo service-started"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    deadline = time.monotonic() + 300
    while not sum(r.body_bytes for r in hub.requests(method="GET", path_contains="big-model/resolve")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    inject()
    proc.send_signal(signal.SIGHUP)
    hub.remove_rule(rule)
    out, err = proc.communicate(timeout=120)
    LEDGER["runs"] += 1
    LEDGER["runs_survived"] += proc.returncode == 0 and "Traceback" not in err
    assert proc.returncode == 0, err
    assert out.strip() == "service-started"
    assert snapshot_bytes_ok(cache, mirrors, BIG)


# 9: a dataset asked for as a model (or the reverse) is told so ----------------------------------------
@pytest.mark.parametrize("args, extra, line", [
    (["run"], {"RUNPOD_HUGGINGFACE_MODEL": DATA},
     f"{DATA} is a dataset, not a model: put it in RUNPOD_HUGGINGFACE_DATASET (or ask for hf://datasets/{DATA})"),
    (["run"], {"RUNPOD_HUGGINGFACE_DATASET": MODEL},
     f"{MODEL} is a model, not a dataset: put it in RUNPOD_HUGGINGFACE_MODEL (or ask for hf://{MODEL})"),
    (["pull", DATA], {},
     f"{DATA} is a dataset, not a model: put it in RUNPOD_HUGGINGFACE_DATASET (or ask for hf://datasets/{DATA})"),
    (["pull", "--dataset", MODEL], {},
     f"{MODEL} is a model, not a dataset: put it in RUNPOD_HUGGINGFACE_MODEL (or ask for hf://{MODEL})"),
])
def test_a_repo_of_the_other_type_is_named_as_such(hub, cache, args, extra, line):
    proc = run(args, env_for(hub, cache, **extra), expect=66)
    assert proc.returncode == 66, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"preloader: error: {line}"
    assert len(hub.requests(path_contains="/revision/")) == 2  # asked once, then once about the other type


def test_a_repo_of_neither_type_keeps_the_plain_not_found(hub, cache):
    proc = run(["run"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/no-such-repo"), expect=66)
    assert proc.returncode == 66, proc.stderr
    assert proc.stderr.splitlines()[-1] == ("preloader: error: model org/no-such-repo@main: repository or revision "
                                            "not found or not visible; check the name and revision")
    assert [r.path for r in hub.requests(path_contains="/revision/")] == [
        "/api/models/org/no-such-repo/revision/main", "/api/datasets/org/no-such-repo/revision/main"]


# 12: an interrupted run leaves no temp files ----------------------------------------------------------
def temp_files(volume: Path) -> list[str]:
    """What an interrupted run must not leave: partial blobs, our temp names, range maps, and `partial/`
    markers of snapshots that have nothing on disk."""
    found = [p for p in volume.rglob("*") if p.name.endswith(".incomplete") or ".preloader-tmp-" in p.name]
    found += list((volume / "preloader" / "transfers").rglob("*.json"))
    for marker in (volume / "preloader" / "partial").rglob("*"):
        if marker.is_file() and not (volume / "hub" / marker.parent.name / "snapshots" / marker.name).exists():
            found.append(marker)
    return sorted(str(p.relative_to(volume)) for p in found)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "deadline"])
def test_an_interrupted_run_leaves_no_temp_files(hub, mirrors, cache, how):
    from localhub import Drip

    hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith(".safetensors"),
                 Drip(2_000_000))
    extra = {"PRELOADER_TIMEOUT": "4s"} if how == "deadline" else {}
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_PARALLEL_THRESHOLD="1MiB",
                  PRELOADER_CONNECTIONS="4", **extra)
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run", "--", "sh", "-c", "echo service-started"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    transfers = cache.parent / "preloader" / "transfers"
    deadline = time.monotonic() + 300
    # Mid-download: range maps saved, bytes flowing on several connections.
    while how != "deadline" and not (list(transfers.rglob("*.json")) and sum(
            r.body_bytes for r in hub.requests(method="GET", path_contains="big-model/resolve")) > SIZE // 4):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    inject()
    if how != "deadline":
        proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=120)
    expected = {"SIGTERM": 143, "SIGINT": 130, "deadline": 75}[how]
    LEDGER["runs"] += 1
    LEDGER["runs_survived"] += proc.returncode == expected and "Traceback" not in err
    assert proc.returncode == expected, err
    assert "service-started" not in out
    assert temp_files(cache.parent) == []
    assert records(cache) == []


def test_a_bare_double_dash_is_the_no_command_mode_the_image_entrypoint_relies_on(hub, mirrors, cache):
    """`ENTRYPOINT ["tini", "--", "preloader", "run", "--"]` with no CMD: preload and exit 0 (an init container)."""
    proc = run(["run", "--"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=0)
    assert proc.returncode == 0, proc.stderr
    assert snapshot_bytes_ok(cache, mirrors, MODEL)
