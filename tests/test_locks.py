import threading
import time

import pytest

from preloader import locks
from preloader.engine import Deadline
from preloader.errors import TransientError


def test_still_waiting_lines_then_acquire(tmp_path, caplog):
    path = tmp_path / "locks" / "x.lock"
    holding = threading.Event()
    release = threading.Event()

    def holder():
        with locks.hold(path, timeout=5, what="x"):
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    threading.Timer(0.7, release.set).start()
    caplog.set_level("INFO", logger="preloader")
    with locks.hold(path, timeout=5, what="x", log_interval=0.2):
        pass
    thread.join()
    waits = [r for r in caplog.records if r.msg == "lock.wait"]
    assert 2 <= len(waits) <= 5
    assert path.stat().st_mode & 0o060 == 0o060


def test_timeout_and_deadline(tmp_path):
    path = tmp_path / "x.lock"
    with locks.hold(path, timeout=5, what="x"):
        started = time.monotonic()
        with pytest.raises(TransientError, match="waiting for the lock on x"):
            with locks.hold(path, timeout=5, what="x", deadline=Deadline(0.3).left, log_interval=0.1):
                pass
        assert time.monotonic() - started < 2
