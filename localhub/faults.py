"""Fault actions for :class:`localhub.proxy.HubProxy` rules.

A rule is ``(match, action)``. For each request the proxy takes the first rule
whose ``match(method, path)`` is true and whose action is still armed (see
``times``), then calls, in order:

1. ``action.respond(ex)`` -- return True if the action answered (or dropped)
   the request itself; upstream is then never contacted.
2. ``action.request_headers(ex, headers)`` -- edit the headers sent upstream
   (e.g. drop ``Range``).
3. ``action.response_head(ex, status, headers)`` -- edit status/headers
   returned to the client (``headers`` is a list of ``(name, value)``).
4. ``action.body(ex, chunks)`` -- wrap the iterator of body chunks (cut,
   drip, corrupt...). If fewer bytes than the announced Content-Length reach
   the client, the proxy closes the connection, as a real truncation would.

``ex`` is the proxy's request handler: ``ex.method``, ``ex.path_only``,
``ex.query``, ``ex.headers``, ``ex.rec`` (its :class:`~localhub.proxy.Record`),
``ex.reply(status, headers, body)``, ``ex.wait(seconds)`` (returns early when
the proxy stops) and ``ex.close_connection``. New faults subclass
:class:`Action` and override only the hooks they need.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator


class Action:
    """Base action: fires ``times`` times (``None``: forever), then passes through."""

    def __init__(self, times: int | None = None):
        self.times = times
        self.fired = 0
        self._lock = threading.Lock()

    def arm(self) -> bool:
        """Consume one firing; False once exhausted (the rule then passes through)."""
        with self._lock:
            if self.times is not None and self.fired >= self.times:
                return False
            self.fired += 1
            return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def respond(self, ex) -> bool:
        return False

    def request_headers(self, ex, headers: dict[str, str]) -> dict[str, str]:
        return headers

    def upstream_path(self, ex, path: str) -> str:
        return path

    def response_head(self, ex, status: int, headers: list[tuple[str, str]]):
        return status, headers

    def body(self, ex, chunks: Iterator[bytes]) -> Iterator[bytes]:
        return chunks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(times={self.times}, fired={self.fired})"


class Status(Action):
    """Answer ``code`` (with extra ``headers``, e.g. Retry-After) ``times`` times."""

    def __init__(
        self, code: int, times: int | None = 1, headers: dict[str, str] | None = None, body: bytes | None = None
    ):
        super().__init__(times)
        self.code = code
        self.headers = dict(headers or {})
        self.body_bytes = body if body is not None else f'{{"error": "injected {code}"}}'.encode()

    def respond(self, ex) -> bool:
        headers = {"Content-Type": "application/json", **self.headers}
        ex.reply(self.code, headers, self.body_bytes)
        return True

    def __repr__(self) -> str:
        return f"Status({self.code}, times={self.times}, fired={self.fired})"


class Stall(Action):
    """Accept the request, send nothing for ``seconds``, then close the connection."""

    def __init__(self, seconds: float, times: int | None = 1):
        super().__init__(times)
        self.seconds = seconds

    def respond(self, ex) -> bool:
        ex.wait(self.seconds)
        ex.close_connection = True
        return True

    def __repr__(self) -> str:
        return f"Stall({self.seconds}, times={self.times}, fired={self.fired})"


REPO_INFO = re.compile(r"/api/(models|datasets)/[^/]+/[^/]+")


def is_repo_info(method: str, path: str) -> bool:
    """The repo-info endpoint (`/api/models/<user>/<name>`), which olah offline does not serve."""
    return REPO_INFO.fullmatch(path) is not None


class RepoInfoFromRevision(Action):
    """Answer `/api/<type>s/<user>/<name>` with `/api/<type>s/<user>/<name>/revision/main`, as the hub
    does for the default branch: olah in online mode asks it before serving a repo, and olah offline
    (the hub under test) answers it with 401."""

    def upstream_path(self, ex, path: str) -> str:
        split = path.split("?", 1)
        return split[0] + "/revision/main" + (f"?{split[1]}" if len(split) > 1 else "")


class IgnoreRange(Action):
    """Answer 200 with the whole file to a Range request, as olah and some proxies do."""

    ignore_range = True


class RedirectToCdn(Action):
    """Answer with a 302 to ``<base>/cdn<path>``, as the public hub sends file downloads to its CDN.

    The proxy serves ``/cdn/<path>`` as ``<path>`` from upstream. A ``base`` with another host name
    (``http://localhost:<port>``) makes the CDN another origin, which must never see the token.
    """

    def __init__(self, base: str, times: int | None = None):
        super().__init__(times)
        self.base = base

    def respond(self, ex) -> bool:
        query = f"?{ex.query}" if ex.query else ""
        ex.reply(302, {"Location": f"{self.base}/cdn{ex.path_only}{query}"}, b"")
        return True


class CutAfter(Action):
    """Send only the first ``limit`` body bytes, then close: a connection cut mid-body."""

    def __init__(self, limit: int, times: int | None = 1):
        super().__init__(times)
        self.limit = limit

    def body(self, ex, chunks: Iterator[bytes]) -> Iterator[bytes]:
        left = self.limit
        for chunk in chunks:
            if left <= 0:
                return
            yield chunk[:left]
            left -= len(chunk)

    def __repr__(self) -> str:
        return f"CutAfter({self.limit}, times={self.times}, fired={self.fired})"


class WrongBytes(Action):
    """Send bytes of the right length but wrong content (every byte inverted)."""

    def body(self, ex, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield bytes(b ^ 0xFF for b in chunk)


class Drip(Action):
    """Send the body slowly: ``rate`` bytes per second in small pieces."""

    def __init__(self, rate: int, times: int | None = None):
        super().__init__(times)
        self.rate = rate

    def body(self, ex, chunks: Iterator[bytes]) -> Iterator[bytes]:
        piece = max(1, self.rate // 20)
        for chunk in chunks:
            for i in range(0, len(chunk), piece):
                part = chunk[i:i + piece]
                yield part
                if ex.wait(len(part) / self.rate):
                    return

    def __repr__(self) -> str:
        return f"Drip({self.rate}, times={self.times}, fired={self.fired})"


class StallAfter(Action):
    """Send the first ``limit`` body bytes, then nothing for ``seconds``, then close: a stall mid-body."""

    def __init__(self, limit: int, seconds: float, times: int | None = 1):
        super().__init__(times)
        self.limit = limit
        self.seconds = seconds

    def body(self, ex, chunks: Iterator[bytes]) -> Iterator[bytes]:
        left = self.limit
        for chunk in chunks:
            if left <= 0:
                break
            yield chunk[:left]
            left -= len(chunk)
        ex.wait(self.seconds)

    def __repr__(self) -> str:
        return f"StallAfter({self.limit}, {self.seconds}, times={self.times}, fired={self.fired})"


class HostileListing(Action):
    """Add entries with hostile names, and any raw ``entries``, to a repo tree listing (``/api/.../tree/...``)."""

    def __init__(self, names: list[str], times: int | None = None, entries: list | None = None):
        super().__init__(times)
        self.names = list(names)
        self.entries = list(entries or [])

    def respond(self, ex) -> bool:
        import json
        import urllib.request

        hub = ex.server.hub
        with urllib.request.urlopen(hub.upstream_url + ex.path, timeout=30) as response:
            entries = json.loads(response.read())
        for n, name in enumerate(self.names):
            entries.append({"type": "file", "path": name, "size": 5, "oid": f"{n:040x}"})
        entries += self.entries
        ex.reply(200, {"Content-Type": "application/json"}, json.dumps(entries).encode())
        return True
