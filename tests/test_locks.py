import logging
import threading
import time

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
