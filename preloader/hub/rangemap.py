"""Which chunks of a partial blob are on disk: saved beside the state, so a restart fetches only the rest."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

from ..cache import atomic

SAVE_EVERY = 0.05  # seconds between saves: a kill -9 loses at most this much progress


class Stopper:
    """Stops a fetch's writes to our state for good: once `stop()` returns, no range map is saved or created
    by a download thread still running (it may be blocked in a read, and is not waited for), so what the
    clean-up of an interrupted run removes stays removed, and no temp name is left half-written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stopped = False

    @contextlib.contextmanager
    def writing(self):
        """Hold off `stop()` while writing; yields False (write nothing) once stopped."""
        with self._lock:
            yield not self.stopped

    def stop(self) -> None:
        with self._lock:  # waits for a write in progress to finish
            self.stopped = True


class RangeMap:
    """Whole chunks (`done`) and bytes into others (`partial`) of one blob being downloaded.

    Bytes are pwritten before they are counted here, so the map never claims more than is on
    disk. Saved atomically but not fsynced: it has to outlive the process, and the page cache
    does; after a power cut the hash check before publication catches a map ahead of the data.
    """

    def __init__(self, path: Path, etag: str, size: int, chunk: int, stopper: Stopper | None = None,
                 roots: tuple[Path, ...] = ()) -> None:
        self.path, self.etag, self.size, self.chunk = path, etag, size, chunk
        # Where the map must really lie (Layout.roots): written and deleted only there, never through a link out.
        self.roots = roots
        self.root = atomic.root_of(path, roots) if roots else None
        self.stopper = stopper or Stopper()
        self.count = max(1, -(-size // chunk))
        self.done: set[int] = set()
        self.partial: dict[int, int] = {}
        self._save_lock = threading.Lock()
        self._saved_at = 0.0

    def bounds(self, index: int) -> tuple[int, int]:
        """The first byte still missing of chunk `index` and its last byte."""
        return index * self.chunk + self.partial.get(index, 0), min(self.size, (index + 1) * self.chunk) - 1

    def load(self, partial_file: Path) -> bool:
        """Take what an earlier run of this same blob left; False (and empty) when there is nothing usable."""
        try:
            state = json.loads(self.path.read_text())
            if (state["etag"], state["size"], state["chunk"]) != (self.etag, self.size, self.chunk) \
                    or partial_file.stat().st_size != self.size:
                return False
            self.done = set(state["done"])
            self.partial = {int(k): int(v) for k, v in state["partial"].items()}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return False
        # A chunk can be saved whole in `partial` before the coordinating thread moved it to `done`:
        # asking for its remaining zero bytes would be `Range: bytes=N-(N-1)`, a 416.
        self.done |= {i for i, n in self.partial.items() if n >= min(self.chunk, self.size - i * self.chunk)}
        return bool(self.done or self.partial)

    def save(self) -> None:
        with self._save_lock:
            self._write()

    def save_if_due(self) -> None:
        """Save if SAVE_EVERY has passed, from whichever thread gets here first.

        The reading threads call it: on a busy machine they are the ones the scheduler runs, while a
        thread that wakes up only to save can wait 100 ms and more for a core, and a kill -9 loses that.
        """
        if time.monotonic() - self._saved_at < SAVE_EVERY or not self._save_lock.acquire(blocking=False):
            return
        try:
            self._write()
        finally:
            self._save_lock.release()

    def _write(self) -> None:
        with self.stopper.writing() as allowed:
            if allowed:
                atomic.write_json(self.path, durable=False, root=self.root, data={
                    "etag": self.etag, "size": self.size, "chunk": self.chunk, "done": sorted(self.done),
                    "partial": {str(k): v for k, v in dict(self.partial).items() if v and k not in self.done},
                })
        self._saved_at = time.monotonic()

    def discard(self) -> None:
        if self.roots:
            atomic.remove(self.path, self.roots)
        else:
            self.path.unlink(missing_ok=True)
