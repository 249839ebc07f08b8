"""The proxy's request log: what clients asked and what they got."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class Record:
    """One request as the client saw it, listed as soon as it arrives.

    ``status`` is set before the status line is sent and ``body_bytes`` grows
    before each write, so a client that got an answer always finds it counted.
    ``status`` None: no answer (yet); ``duration`` None: still in progress.
    ``request_headers`` keys are lower-case.
    """

    method: str
    path: str
    query: str
    time: float
    request_headers: dict = field(repr=False)
    status: int | None = None
    body_bytes: int = 0
    duration: float | None = None
    fault: str | None = None


def parse_resolve(path: str) -> tuple[str, str, str] | None:
    """``(repo_id, revision, filename)`` of a ``.../resolve/<rev>/<file>`` path."""
    parts = [unquote(p) for p in path.split("/")[1:]]
    if parts and parts[0] in ("datasets", "spaces"):
        parts = parts[1:]
    if "resolve" not in parts:
        return None
    i = parts.index("resolve")
    if i == 0 or len(parts) < i + 3:
        return None
    return "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :])


class RequestLog:
    """Thread-safe list of :class:`Record` with the queries tests need."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._log_lock = threading.Lock()

    def _record(self, rec: Record) -> None:
        with self._log_lock:
            self.records.append(rec)

    def requests(self, method: str | None = None, path_contains: str | None = None) -> list[Record]:
        with self._log_lock:
            recs = list(self.records)
        return [
            r
            for r in recs
            if (method is None or r.method == method) and (path_contains is None or path_contains in r.path)
        ]

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        return len(self.requests(method, path_contains))

    def body_bytes(self, method: str | None = None, path_contains: str | None = None) -> int:
        """Body bytes sent to clients (chunk framing and headers excluded)."""
        return sum(r.body_bytes for r in self.requests(method, path_contains))

    def file_gets(self, status: int | None = None) -> Counter:
        """GETs of ``resolve`` URLs keyed by ``(repo_id, filename)``, any revision."""
        counts: Counter = Counter()
        for r in self.requests("GET", "/resolve/"):
            parsed = parse_resolve(r.path)
            if parsed and (status is None or r.status == status):
                counts[(parsed[0], parsed[2])] += 1
        return counts

    def reset(self) -> None:
        """Forget the records (rules stay)."""
        with self._log_lock:
            self.records.clear()
