"""The overall deadline (PRELOADER_TIMEOUT), as seconds left."""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """Seconds left until an optional overall deadline."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.end = None if not seconds else clock() + seconds

    def left(self) -> float | None:
        return None if self.end is None else self.end - self.clock()
