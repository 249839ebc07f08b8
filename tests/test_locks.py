import errno
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from preloader.cache import locks
from preloader.errors import TransientError
from preloader.preloading.deadline import Deadline


def test_still_waiting_lines_then_acquire(tmp_path, caplog):
    path = tmp_path / "locks" / "x.lock"
    holding = threading.Event()
    release = threading.Event()

    def holder():
        with locks.hold(path, timeout=5, what="x"):
            holding.set()
            release.wait(5)

    class ReleaseAfterTwoWaits(logging.Handler):
        """The holder lets go once the waiter has said twice that it is still waiting (no clock race)."""

        seen = 0

        def emit(self, record: logging.LogRecord) -> None:
            if record.msg == "lock.wait":
                self.seen += 1
                if self.seen == 2:
                    release.set()

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    caplog.set_level("INFO", logger="preloader")
    handler = ReleaseAfterTwoWaits()
    logging.getLogger("preloader").addHandler(handler)
    try:
        with locks.hold(path, timeout=5, what="x", log_interval=0.2):
            assert release.is_set()  # acquired only after the holder let go
    finally:
        logging.getLogger("preloader").removeHandler(handler)
    thread.join()
    waits = [r for r in caplog.records if r.msg == "lock.wait"]
    assert 2 <= len(waits) <= 3  # a line every 0.2 s while waiting, then the lock
    assert path.stat().st_mode & 0o060 == 0o060


def test_timeout_and_deadline(tmp_path):
    path = tmp_path / "x.lock"
    with locks.hold(path, timeout=5, what="x"):
        started = time.monotonic()
        with pytest.raises(TransientError, match="waiting for the lock on x"):
            with locks.hold(path, timeout=5, what="x", deadline=Deadline(0.3).left, log_interval=0.1):
                pass
        assert time.monotonic() - started < 2


NO_FLOCK = """
import errno, fcntl, logging, os, signal, sys
logging.basicConfig()
def no_flock(fd, op):
    raise {error}
fcntl.flock = no_flock
from pathlib import Path
from preloader.cache import locks
with locks.hold(Path(sys.argv[1]), timeout=5, what="x"):
    print("held", sorted(os.listdir(Path(sys.argv[1]).parent)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("error", ["OSError(errno.ENOSYS, 'Function not implemented')",
                                   "NotImplementedError('use SoftFileLock instead')"])
def test_a_filesystem_without_flock_gets_a_lease_that_outlives_no_dead_holder(tmp_path, monkeypatch, error):
    """Where flock is missing (ENOSYS, or NotImplementedError from other filelock versions) the lock is the
    lease, whose marker a dead holder leaves is taken over, not filelock's silent soft lock that would be kept
    until someone deletes it by hand."""
    path = tmp_path / "locks" / "x.lock"
    proc = subprocess.run([sys.executable, "-c", NO_FLOCK.format(error=error), str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert proc.stdout == "held ['x.lease', 'x.lock']\n"  # the lease marker, beside the flock file
    assert "using a lease lock there" in proc.stderr

    def no_flock(fd, op):
        raise eval(error)  # noqa: S307 - one of the two literals above

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back to SoftFileLock" from filelock
        with locks.hold(path, timeout=5, what="x"):  # the killed holder's marker is taken over
            assert (tmp_path / "locks" / "x.lease").exists()
    assert not (tmp_path / "locks" / "x.lease").exists()


def test_the_private_parts_of_filelock_used_are_those_of_the_pinned_series():
    """cache/locks.py overrides filelock internals; pyproject pins the series they were read from. A version
    inside the pin that lacks them, or a pin widened past them, fails here."""
    import inspect
    import tomllib

    from conftest import ROOT
    from filelock import SoftFileLease, __version__
    from filelock._filesystem._exchange import exchange_names, exchange_supported
    from packaging.specifiers import SpecifierSet

    pin = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
               if d.startswith("filelock"))
    assert SpecifierSet(pin.removeprefix("filelock")) == SpecifierSet(">=4.3.1,<4.4")
    assert __version__ in SpecifierSet(pin.removeprefix("filelock"))
    assert list(inspect.signature(SoftFileLease._take_over).parameters) == ["self", "marker", "breaker_pid"]
    assert callable(exchange_names) and callable(exchange_supported)
    assert SoftFileLease(ROOT / "x.lease")._lock_path == str(ROOT / "x.lease")


def _a_successor_takes_the_lease_before_the_break(monkeypatch, lock):
    """Between the breaker's look at the stale marker and its rename, the stale holder's successor replaces the
    marker with its own (a live one): the rename moves the live marker aside."""
    real_rename = os.rename
    replaced = []

    def rename(source, target, *args, **kwargs):
        if str(source) == str(lock) and not replaced:
            lock.unlink()
            lock.write_text("live")
            os.utime(lock, (1, 1))  # unlike the stale marker's, even on a reused inode
            replaced.append(True)
        return real_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)


@pytest.mark.parametrize("refusal", ["no hard links", "a third contender"])
def test_breaking_a_stale_lease_never_deletes_a_live_marker_it_cannot_link_back(tmp_path, monkeypatch, refusal):
    lock = tmp_path / "x.lease"
    lock.write_text("stale")
    stale = os.lstat(lock)
    _a_successor_takes_the_lease_before_the_break(monkeypatch, lock)

    def link(source, target, *args, **kwargs):
        if refusal == "a third contender":
            Path(target).write_text("third")
            raise FileExistsError(errno.EEXIST, "File exists", str(target))
        raise OSError(errno.EPERM, "Operation not permitted", str(target))

    monkeypatch.setattr(os, "link", link)
    locks._break_by_rename(str(lock), stale)
    markers = {p.name: p.read_text() for p in tmp_path.iterdir() if p.name.startswith("x.lease")}
    if refusal == "no hard links":
        assert markers == {"x.lease": "live"}  # renamed back where its holder expects it
    else:
        assert sorted(markers.values()) == ["live", "third"]  # the live one kept aside, not deleted
        assert markers["x.lease"] == "third"
