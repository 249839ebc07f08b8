"""Progress of the whole plan: one bar on a TTY; otherwise a log line every few seconds, and one as each repo
ends, so that a download faster than the interval still leaves its line."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

from ..logs import event

logger = logging.getLogger(__name__)

LOG_EVERY = 5.0
DRAW_EVERY = 0.2


def eta(done: int, total: int, rate: float) -> str:
    if rate <= 0 or done >= total:
        return "-"
    seconds = int((total - done) / rate)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Thread-safe byte counter for the plan, with per-repo totals and a ticker thread."""

    def __init__(self, total: int, *, tty: bool, stream: TextIO | None = None, log_every: float = LOG_EVERY):
        self.total = total
        self.tty = tty
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self.done = 0
        self.repo = ""
        self.repo_done = 0
        self.repo_total = 0
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="preloader-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        elif self.repo_total:
            self._log()  # the last repo's final line

    def begin_repo(self, name: str, total: int) -> None:
        if not self.tty and self.repo_total:
            self._log()  # the previous repo's final line
        with self._lock:
            self.repo, self.repo_done, self.repo_total = name, 0, total

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            self.repo_done += n

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _tick(self) -> None:
        interval = DRAW_EVERY if self.tty else self.log_every
        while not self._stop.wait(interval):
            if self.tty:
                self._draw()
            elif self.repo_total:
                self._log()

    def _log(self) -> None:
        with self._lock:
            done, total, repo, repo_done, repo_total = (self.done, self.total, self.repo, self.repo_done,
                                                        self.repo_total)
        rate = self.rate()
        event(logger, "progress", repo=repo, bytes=repo_done, of=repo_total, plan_bytes=done, plan_of=total,
              rate=f"{rate / 1e6:.1f}MB/s", eta=eta(done, total, rate))

    def _draw(self) -> None:
        with self._lock:
            done, total = self.done, self.total
        rate = self.rate()
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\rpreloader: [{bar}] {done / 1e6:,.1f}/{total / 1e6:,.1f} MB "
                          f"{rate / 1e6:,.1f} MB/s eta {eta(done, total, rate)}   ")
        self.stream.flush()
