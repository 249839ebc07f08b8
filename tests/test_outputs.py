"""Outputs that end early or fill up, JSON to the last line, and an exit-code table that tells the truth."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env

from preloader.errors import exit_codes

BIG = "org/big-model"


def preloader(args, env, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preloader", *args], env=env, stdout=stdout, stderr=subprocess.PIPE,
                          cwd=ROOT)


def lines(stderr: bytes) -> list[str]:
    return stderr.decode().strip().splitlines()


def tree(root: Path) -> dict[str, tuple]:
    """Every path under `root` with what it is: a file's size and mtime, a link's target."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(root))] = (os.readlink(path),) if path.is_symlink() else (info.st_size,
                                                                                              info.st_mtime_ns)
    return found


@contextmanager
def tmpfs(where: Path, size: str, *options: str):
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join((f"size={size}", "mode=0755", *options)), "tmpfs",
                    str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture(scope="module")
def volume(olah, tmp_path_factory):
    """A cache holding the 12 MiB model (far more than a pipe buffer), filled once for this file."""
    cache = tmp_path_factory.mktemp("outputs") / "hub"
    proc = preloader(["pull", BIG], preloader_env(olah, cache))
    assert proc.returncode == 0, proc.stderr
    return cache


@pytest.fixture
def env(volume, hub):
    return preloader_env(hub, volume)


# Item 6: a closed pipe, a full disk --------------------------------------------------------------------

def test_export_into_a_pipe_that_closes_early_is_one_line_141_and_the_cache_is_untouched(volume, env):
    before = tree(volume.parent)
    export = subprocess.Popen([sys.executable, "-m", "preloader", "export", "--all", "-o", "-"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-c", "1000"], stdin=export.stdout, stdout=subprocess.PIPE)
    export.stdout.close()  # head holds the only read end: when it exits, the pipe is closed
    got, _ = head.communicate()
    _, stderr = export.communicate()
    assert len(got) == 1000 and got[:512].rstrip(b"\0").startswith(b"manifest.json")
    assert (export.returncode, lines(stderr)) == (141, [
        "preloader: error: the reader of the archive on stdout went away before its end; what it got is incomplete "
        "(nothing in the cache changed)"])
    assert tree(volume.parent) == before


def test_export_onto_a_full_disk_is_74_and_leaves_no_half_archive(volume, env, tmp_path):
    before = tree(volume.parent)
    with tmpfs(tmp_path / "small", "1m") as small:
        target = small / "models.tar"
        proc = preloader(["export", "--all", "-o", str(target)], env)
        assert (proc.returncode, lines(proc.stderr)) == (74, [
            f"preloader: error: cannot write the archive {target}: No space left on device; free space "
            f"(`preloader prune --max-size ...`) or use a bigger volume; nothing was left at {target}"])
        assert os.listdir(small) == []
        with open(target, "wb") as stdout:  # `-o -` with stdout sent to the full volume
            proc = preloader(["export", "--all", "-o", "-"], env, stdout=stdout)
        assert proc.returncode == 74
        assert lines(proc.stderr) == ["preloader: error: cannot write the archive on stdout: No space left on device; "
                                      "free space (`preloader prune --max-size ...`) or use a bigger volume"]
    assert tree(volume.parent) == before


def test_import_onto_a_full_volume_is_74_and_publishes_nothing(volume, env, tmp_path):
    archive = tmp_path / "big.tar"
    assert preloader(["export", "--all", "-o", str(archive)], env).returncode == 0
    with tmpfs(tmp_path / "small", "4m") as small:
        proc = preloader(["import", str(archive)], env | {"PRELOADER_CACHE_DIR": str(small / "hub")})
        assert proc.returncode == 74
        [line] = lines(proc.stderr)
        assert line.startswith(f"preloader: error: import into {small / 'hub'} failed: cannot write {small}/hub/.locks/"
                               "preloader-import-")
        assert line.endswith(": No space left on device; free space (`preloader prune --max-size ...`) or use a "
                             "bigger volume; no unchecked byte was published; a snapshot not yet recorded stays "
                             "incomplete")
        assert [p for p in small.rglob("*") if p.is_file()] == []  # no blob, link, record or staged file


@pytest.mark.parametrize("args", [["ls", "--json"], ["ls"], ["plan"], ["status", BIG, "--json"], ["--help"]])
def test_a_closed_stdout_ends_quietly_with_141(volume, env, args):
    """`preloader ls --json | head -1` once head has gone: no traceback, no "Exception ignored" from Python."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write is EPIPE, whatever the timing
    try:
        proc = subprocess.run([sys.executable, "-m", "preloader", *args], env=env | {"RUNPOD_HUGGINGFACE_MODEL": BIG},
                              cwd=ROOT, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr.decode()) == (141, "")


# Item 10: JSON to the last line -----------------------------------------------------------------------

BUG = ("import sys; import preloader.cache as c; c.list_cache = lambda *a: 1 / 0; "
       "from preloader.cli import main; sys.argv[0] = 'preloader'; main()")


@pytest.mark.parametrize("how, args, extra, code", [
    ("env", ["ls"], {"PRELOADER_RETRIES": "lots"}, 78),  # the format is known, another setting fails
    ("flag", ["plan", "--retries", "0"], {}, 78),
    ("flag", ["ls", "--no-such-flag"], {}, 2),  # click's usage error
    ("env", ["rm"], {}, 2),
    ("env", ["status"], {}, 1),  # nothing to check
    ("env", ["import", "/nonexistent.tar"], {}, 66),
    ("env", ["run", "--model", "org/absent-model", "--", "true"], {}, 66),  # resolve logs, then the error
    ("env", ["ls"], {"PRELOADER_DEBUG": "1", "PRELOADER_RETRIES": "lots"}, 78),  # the traceback inside the JSON
    ("env", None, {}, 70),  # a bug
])
def test_json_log_format_holds_to_the_last_line(env, how, args, extra, code):
    env = env | extra
    if how == "env":
        env["PRELOADER_LOG_FORMAT"] = "json"
    else:
        args = [*args[:1], "--log-format", "json", *args[1:]]
    if args is None:
        proc = subprocess.run([sys.executable, "-c", BUG, "ls"], env=env, capture_output=True, cwd=ROOT)
    else:
        proc = preloader(args, env)
    assert proc.returncode == code, proc.stderr
    records = [json.loads(line) for line in lines(proc.stderr)]
    assert records and all(r["level"] in ("debug", "info", "warning", "error") for r in records)
    assert records[-1]["level"] == "error" and records[-1]["exit_code"] == code
    assert "preloader: error" not in records[-1]["message"]
    if extra.get("PRELOADER_DEBUG") or code == 70:
        assert "Traceback" in records[-1]["traceback"]


# Item 9: every exit code the table lists comes from a real failure -------------------------------------

def empty_archive(tmp_path) -> Path:
    path = tmp_path / "empty.tar"
    manifest = json.dumps({"format": "preloader.export/1", "snapshots": [], "blobs": {}}).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return path


def terminated(env) -> subprocess.CompletedProcess:
    """SIGTERM once the preloader has its handler installed (read from /proc, not guessed from time)."""
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "wait", "--model", "org/never", "--timeout", "1h"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    caught = 0
    while not caught >> (signal.SIGTERM - 1) & 1 and proc.poll() is None:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        time.sleep(0.01)  # polling a condition, not ordering events by time
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def trigger(code: str, env: dict, tmp_path: Path, hub) -> list[subprocess.CompletedProcess]:
    fresh = env | {"PRELOADER_CACHE_DIR": str(tmp_path / "vol" / "hub")}
    if code == "0":
        return [preloader(["plan"], fresh)]
    if code == "1":
        return [preloader(["status", "org/never"], fresh)]
    if code == "2":
        return [preloader(["ls", "--no-such-flag"], fresh)]
    if code == "78":
        return [preloader(["plan"], fresh | {"RUNPOD_HUGGINGFACE_MODEL": "nope"})]
    if code == "66":
        return [preloader(["import", str(tmp_path / "absent.tar")], fresh)]
    if code == "77":  # a read-only volume (EROFS): permission, not a bug
        archive = empty_archive(tmp_path)
        with tmpfs(tmp_path / "vol", "1m", "ro"):
            return [preloader(["import", str(archive)], fresh)]
    if code == "75":
        return [preloader(["wait", "--model", "org/never", "--timeout", "1s"], fresh)]
    if code == "74":
        with tmpfs(tmp_path / "full", "4k"):  # smaller than a tar's first 10 KiB record
            return [preloader(["export", "--all", "-o", str(tmp_path / "full" / "x.tar")], fresh)]
    if code == "73":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (tmp_path / "vol" / "hub").mkdir(parents=True)
        (tmp_path / "vol" / "hub" / "models--org--tiny-model").symlink_to(elsewhere)
        return [preloader(["run", "--model", "org/tiny-model", "--", "true"], fresh)]
    if code == "76":
        path = tmp_path / "not-an-export.tar"
        with tarfile.open(path, "w") as tar:
            tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
        return [preloader(["import", str(path)], fresh)]
    if code == "79":  # a repo of the plan that the lock file does not hold: refused before any download
        lock = tmp_path / "preloader.lock"
        lock.write_text('{"version": 1, "repos": []}')
        return [preloader(["run", "--model", "org/tiny-model", "--", "true"], fresh | {"PRELOADER_LOCKFILE": str(lock)})]
    if code == "69":  # no such GPU here, whatever the machine (cuda:999)
        return [preloader(["warm", "--warm", "gpu:999", BIG], env)]
    if code == "70":
        return [subprocess.run([sys.executable, "-c", BUG, "ls"], env=fresh, capture_output=True, cwd=ROOT)]
    if code == "126/127":
        return [preloader(["run", "--", str(ROOT / "README.md")], fresh), preloader(["run", "--", "/nonexistent"],
                                                                                      fresh)]
    if code == "141":
        read, write = os.pipe()
        os.close(read)
        try:
            return [subprocess.run([sys.executable, "-m", "preloader", "plan"], env=fresh, cwd=ROOT, stdout=write,
                                   stderr=subprocess.PIPE)]
        finally:
            os.close(write)
    if code == "128+N":
        return [terminated(fresh)]
    if code == "65":  # a signature required of a repo that has none (localhub/signed.py); any key file will do
        return [preloader(["run", "--model", "org/unsigned-model", "--signature", "required", "--signature-key",
                           str(ROOT / "README.md"), "--", "true"], fresh)]
    raise AssertionError(f"exit code {code} is in the table but nothing here triggers it: add a trigger")


@pytest.mark.parametrize("code", [code for code, _ in exit_codes()])
def test_every_exit_code_in_the_table_is_what_a_real_failure_returns(code, env, tmp_path, hub):
    expected = {"126/127": [126, 127], "128+N": [128 + signal.SIGTERM]}.get(code, [int(code)] if code.isdigit()
                                                                            else None)
    procs = trigger(code, env, tmp_path, hub)
    assert [p.returncode for p in procs] == expected, [p.stderr for p in procs]
    for proc in procs:
        assert b"Traceback" not in proc.stderr or code == "70"
        if code not in ("0", "1", "141"):
            assert lines(proc.stderr)[-1].startswith(("preloader: error: ", "Error: ", "Usage:"))
