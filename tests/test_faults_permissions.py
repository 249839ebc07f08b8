"""Permissions, for every command: a volume mounted read-only, a cache this user may not write or read, and a
cache dir that is a file or a dangling link. Each ends in one line naming the path and what to do, with a
documented code, never a traceback or 70 (issue #19 item 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env
from faultsuite import LEDGER, MODEL, TOKEN, account, env_for, inject, run  # noqa: F401 (account: autouse)

pytestmark = pytest.mark.faults
SITE = next(p for p in sys.path if p.endswith("site-packages"))
FORK = "org/tiny-model-fork"
NOBODY = 65534


@pytest.fixture(scope="module")
def template(olah, tmp_path_factory):
    """A volume (hub/ and preloader/) holding MODEL complete, and an export of it, made once for this file."""
    root = tmp_path_factory.mktemp("template")
    env = preloader_env(olah, root / "hub")
    for args in (["pull", MODEL], ["export", "--all", "-o", str(root / "model.tar")]):
        proc = subprocess.run([sys.executable, "-m", "preloader", *args], env=env, capture_output=True, text=True,
                              cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def volume(template):
    """A real tmpfs (root-owned, 0755) holding a copy of the template, under a folder every user can reach
    (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(base, 0o755)
    vol = base / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(vol)], check=True)
    try:
        shutil.copytree(template / "hub", vol / "hub", symlinks=True)
        shutil.copytree(template / "preloader", vol / "preloader", symlinks=True)
        shutil.copy(template / "model.tar", base / "model.tar")
        os.chmod(base / "model.tar", 0o644)
        yield vol
    finally:
        subprocess.run(["umount", str(vol)], check=True)
        shutil.rmtree(base)


def tree(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (os.readlink(p),) if p.is_symlink() else (p.lstat().st_size, p.lstat().st_mode)
            for p in sorted(root.rglob("*"))}


def commands(vol: Path) -> dict[str, list[str]]:
    return {
        "ls": ["ls"], "status": ["status"], "verify": ["verify"], "doctor": ["doctor"],
        "run": ["run", "--", "true"], "run-missing": ["run", "--model", FORK, "--", "true"],
        "rm": ["rm", MODEL, "-y"], "prune": ["prune", "--max-size", "0"], "dedup": ["dedup"],
        "export": ["export", "--all", "-o", str(vol / "out.tar")],
        "import": ["import", str(vol.parent / "model.tar")], "repair": ["verify", "--repair"],
        "wait": ["wait", "--timeout", "1h"],
    }


def as_nobody(args, env, expect) -> subprocess.CompletedProcess:
    """faultsuite.run for uid 65534 (a Python every user may run, our code first on its path), counted alike."""
    cmd = ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-m", "preloader", *args]
    env = env | {"PYTHONPATH": f"{ROOT}:{SITE}", "HOME": "/nonexistent"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    LEDGER["runs"] += 1
    if TOKEN in proc.stdout + proc.stderr:
        LEDGER["token_leaks"] += 1
        pytest.fail("token in the output")
    if "Traceback" in proc.stderr:
        LEDGER["tracebacks"] += 1
    elif proc.returncode == expect:
        LEDGER["runs_survived"] += 1
    return proc


def error_line(proc) -> str:
    """The run's one error line: the last line, and no other error or traceback before it."""
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and "this is a bug" not in proc.stderr
    assert [line for line in lines if line.startswith("preloader: error:")] == lines[-1:], proc.stderr
    return lines[-1]


# code, and words the error line must hold; None: the command succeeds (or, doctor, reports a failed check)
READ_ONLY = {
    "ls": 0, "status": 0, "verify": 0, "doctor": 1, "run": 0, "dedup": 0, "repair": 0, "wait": 0,
    "rm": (77, "preloader/locks/models--org--tiny-model.lock: the volume is mounted read-only; mount it read-write"),
    "prune": (77, "preloader/locks/models--org--tiny-model.lock: the volume is mounted read-only"),
    "export": (77, "cannot write the archive {vol}/out.tar: the volume is mounted read-only"),
    "import": (77, "import into {vol}/hub failed: cannot write {vol}/hub/.locks/"),
    "run-missing": (77, "is on a volume mounted read-only here and needs files"),
}


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_a_read_only_volume(volume, hub, name):
    """As root on a tmpfs remounted read-only: what only reads works; what must write says read-only, 77."""
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
    inject()
    before = tree(volume)
    expected = READ_ONLY[name]
    code, words = expected if isinstance(expected, tuple) else (expected, None)
    proc = run(commands(volume)[name], env_for(hub, volume / "hub", RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=code)
    assert proc.returncode == code, proc.stderr
    if words:
        line = error_line(proc)
        assert words.format(vol=volume) in line and "preloader: error:" in line
    assert tree(volume) == before


UNPRIVILEGED = {
    "ls": 0, "status": 0, "verify": 0, "doctor": 1, "dedup": 0, "repair": 0, "wait": 0,
    "rm": (77, "cannot use {vol}/preloader/locks/models--org--tiny-model.lock: permission denied for uid 65534; "
               "give this user access (chown or chmod the volume, or a shared group with umask 002) or run as its "
               "owner"),
    "prune": (77, "{vol}/preloader/locks/models--org--tiny-model.lock: permission denied for uid 65534"),
    "export": (77, "cannot write the archive {vol}/out.tar: permission denied for uid 65534"),
    "import": (77, "import into {vol}/hub failed: cannot write {vol}/hub/.locks/"),
    "run": 0,  # complete: starts, with one warning that this user may not write (its manifest goes elsewhere)
    "run-missing": (77, "the cache {vol}/hub is not writable by uid 65534 and needs files: "),
}


@pytest.mark.parametrize("name", sorted(UNPRIVILEGED))
def test_an_unprivileged_user_on_a_root_owned_cache(volume, hub, name):
    """As nobody on a root-owned 0755 cache: reads work, writes are 77 naming the path (never "read-only")."""
    inject()
    before = tree(volume)
    expected = UNPRIVILEGED[name]
    code, words = expected if isinstance(expected, tuple) else (expected, None)
    proc = as_nobody(commands(volume)[name], env_for(hub, volume / "hub", RUNPOD_HUGGINGFACE_MODEL=MODEL), code)
    assert proc.returncode == code, proc.stderr
    if words:
        line = error_line(proc)
        assert words.format(vol=volume) in line and "read-only" not in line
    if name == "run":
        assert "this user (uid 65534) may not write the cache here" in proc.stderr and "read-only" not in proc.stderr
    assert tree(volume) == before


CLOSED = {
    "ls": "cannot use {vol}/hub: permission denied for uid 65534",
    "verify": "cannot use {vol}/hub: permission denied",
    "rm": "cannot use {vol}/hub: permission denied", "prune": "cannot use {vol}/hub: permission denied",
    "dedup": "cannot use {vol}/hub: permission denied", "repair": "cannot use {vol}/hub: permission denied",
    "status": "permission denied for uid 65534", "export": "permission denied for uid 65534",
    "import": "cannot write {vol}/hub/.locks/",
}


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_a_cache_this_user_may_not_even_read(volume, hub, name):
    """As nobody on a root-owned 0700 cache: one line, 77, naming the folder; never a traceback or 70."""
    os.chmod(volume / "hub", 0o700)
    inject()
    proc = as_nobody(commands(volume)[name], env_for(hub, volume / "hub", RUNPOD_HUGGINGFACE_MODEL=MODEL), 77)
    assert proc.returncode == 77, proc.stderr
    line = error_line(proc)
    assert CLOSED[name].format(vol=volume) in line and "read-only" not in line


@pytest.mark.parametrize("kind", ["file", "dangling link"])
@pytest.mark.parametrize("name", ["ls", "status", "verify", "doctor", "run", "rm", "prune", "dedup", "export",
                                  "import", "repair", "wait"])
def test_a_cache_dir_that_is_a_file_or_a_dangling_link(volume, hub, kind, name):
    """Every command: 78 before any work, saying what the path is and what to do."""
    cache = volume / "elsewhere"
    if kind == "file":
        cache.write_text("not a folder")
        said = f"the cache dir {cache} is a file, not a folder: point PRELOADER_CACHE_DIR at a folder"
    else:
        cache.symlink_to(volume / "unmounted")
        said = (f"the cache dir {cache} is a dangling symlink (to {volume / 'unmounted'}): mount or create its "
                "target, or point PRELOADER_CACHE_DIR at a folder")
    inject()
    before = tree(volume)
    proc = run(commands(volume)[name], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL), expect=78)
    assert proc.returncode == 78, proc.stderr
    assert error_line(proc).startswith(f"preloader: error: {said}")
    assert tree(volume) == before and hub.count() == 0


@pytest.mark.parametrize("where", ["read-only volume", "root-owned 0755", "root-owned 0700"])
def test_doctor_says_why_a_cache_cannot_be_written(volume, hub, where):
    """doctor runs every check and fails `writable` with the real reason: read-only only on a read-only mount."""
    import json

    env = env_for(hub, volume / "hub")
    inject()
    if where == "read-only volume":
        subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
        proc = run(["doctor", "--json"], env, expect=1)
        reason = "the volume is mounted read-only; mount it read-write"
    else:
        if where.endswith("0700"):
            os.chmod(volume / "hub", 0o700)
        proc = as_nobody(["doctor", "--json"], env, 1)
        reason = "permission denied for uid 65534"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert len(checks) == 13 and checks["hub reachable"]["status"] == "ok"
    writable = checks["writable"]
    assert writable["status"] == "fail" and writable["detail"].startswith(f"cannot write in {volume / 'hub'}: ")
    assert reason in writable["detail"] + "; " + writable["fix"]
    if where != "read-only volume":
        assert "read-only" not in json.dumps(checks)


def test_an_archive_this_user_may_not_read(volume, hub):
    archive = volume.parent / "model.tar"
    os.chmod(archive, 0o600)
    inject()
    proc = as_nobody(["import", str(archive)], env_for(hub, volume.parent / "mine" / "hub"), 77)
    assert proc.returncode == 77
    assert error_line(proc) == (f"preloader: error: cannot read the archive {archive}: permission denied for uid "
                                "65534; give this user access (chown or chmod the volume, or a shared group with "
                                "umask 002) or run as its owner")


def test_a_signature_key_this_user_cannot_read_is_78_before_any_download(hub):
    """Found at the settings, not after the download it would end with a refusal."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        key = base / "signing.pub"
        key.write_text("-----BEGIN PUBLIC KEY-----\n")
        os.chmod(key, 0o600)  # root's alone
        env = env_for(hub, base / "vol" / "hub", RUNPOD_HUGGINGFACE_MODEL=MODEL, PRELOADER_SIGNATURE="required",
                      PRELOADER_SIGNATURE_KEY=str(key))
        proc = as_nobody(["run", "--", "true"], env, expect=78)
        assert proc.returncode == 78, proc.stderr
        assert error_line(proc) == (f"preloader: error: invalid settings: PRELOADER_SIGNATURE_KEY='{key}': "
                                    f"not readable by uid {NOBODY}")
        assert hub.count() == 0 and not (base / "vol").exists()
    finally:
        shutil.rmtree(base)
