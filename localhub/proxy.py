"""A counting, fault-injecting HTTP/1.1 reverse proxy (stdlib only)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from localhub.faults import Action
from localhub.records import Record, RequestLog

CHUNK = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1) are per connection, never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
}
Matcher = Callable[[str, str], bool]


@dataclass
class Rule:
    match: Matcher
    action: Action


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked replies
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        if hasattr(self.request, "do_handshake"):  # https: a client that fails it just goes away
            self.request.do_handshake()
        super().setup()
        self.server.hub._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.hub._track(self.connection, False)
            self._drop_upstream()

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- helpers usable by fault actions ----------------------------------------
    def reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self._start_reply(status, list(headers.items()) + [("Content-Length", str(len(body)))])
        if self.method != "HEAD":
            self._write(body)

    def _start_reply(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.rec.status = status
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def _write(self, data: bytes, chunked: bool = False) -> None:
        # Count first: once the client has the bytes, they must be in the record.
        self.rec.body_bytes += len(data)
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        except BaseException:
            self.rec.body_bytes -= len(data)
            raise

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds`; True if the proxy is stopping (the caller should give up)."""
        return self.server.hub._stopping.wait(seconds)

    # -- the proxy -------------------------------------------------------------
    def _proxy(self) -> None:
        hub = self.server.hub
        self.method = self.command
        if self.path.startswith(("http://", "https://")):  # sent to us as a forward proxy (HTTP_PROXY)
            self.path = urlsplit(self.path)._replace(scheme="", netloc="").geturl()
        split = urlsplit(self.path)
        self.path_only, self.query = split.path, split.query
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.rec = Record(self.method, self.path_only, self.query, time.time(), headers)
        hub._record(self.rec)
        if self.path_only.startswith("/cdn/"):  # RedirectToCdn's target: the same file from upstream
            self.path = self.path[len("/cdn"):]
        try:
            body = self._read_request_body()
            action = hub._pick(self.method, self.path_only)
            if action is not None:
                self.rec.fault = repr(action)
            if action is None or not action.respond(self):
                self._forward(body, action or Action())
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # client went away mid-reply
        finally:
            self.rec.duration = time.time() - self.rec.time

    def _read_request_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(data)
        return None

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _send_upstream(self, body: bytes | None, headers: dict[str, str]):
        """Send on the kept-alive upstream connection; retry once if it was stale."""
        hub = self.server.hub
        for _ in range(2):
            reused = self._upstream is not None
            if not reused:
                self._upstream = http.client.HTTPConnection(
                    hub.upstream_host, hub.upstream_port, timeout=hub.upstream_timeout
                )
            try:
                self._upstream.request(self.method, self.path, body=body, headers=headers)
                return self._upstream.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_upstream()
                if not reused:
                    raise
        raise AssertionError("unreachable")

    def _forward(self, body: bytes | None, action: Action) -> None:
        hub = self.server.hub
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers = action.request_headers(self, headers)
        self.path = action.upstream_path(self, self.path)
        try:
            resp = self._send_upstream(body, headers)
        except OSError as e:  # upstream down or timed out
            self._drop_upstream()
            self.reply(502, {"Content-Type": "text/plain"}, f"localhub proxy: upstream {e!r}\n".encode())
            return
        resp = self._maybe_slice(resp, action)
        out = []
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP:
                continue
            if k.lower() == "location":
                # olah builds redirects from the Host header with http://: behind https that is us again
                for base in (hub.upstream_url, f"http://127.0.0.1:{hub.port}"):
                    if v.startswith(base):
                        v = hub.url + v[len(base) :]
                        break
            out.append((k, v))
        status, out = action.response_head(self, resp.status, out)
        length = next((int(v) for k, v in out if k.lower() == "content-length"), None)
        no_body = self.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        chunked = not no_body and length is None and self.request_version == "HTTP/1.1"
        if chunked:
            out.append(("Transfer-Encoding", "chunked"))
        elif not no_body and length is None:
            self.close_connection = True  # HTTP/1.0 client: end of body = close
        self._start_reply(status, out)
        complete = False
        try:
            if not no_body:
                for chunk in action.body(self, self._chunks(resp)):
                    if chunk:
                        self._write(chunk, chunked)
            # An action that stops early (a cut) leaves upstream bytes unread.
            cut = not no_body and not resp.isclosed() and resp.read1(1) != b""
            complete = not cut and (length is None or no_body or self.rec.body_bytes == length)
            if complete and chunked:
                self.wfile.write(b"0\r\n\r\n")
            if complete:
                resp.read()  # let http.client see the end, so the connection is reusable
        except (http.client.HTTPException, OSError):
            pass  # upstream broke off or the client left: close, as a real cut would
        finally:
            if not complete:
                self.close_connection = True  # truncated: the client must see EOF
            if not complete or resp.will_close or not resp.isclosed():
                self._drop_upstream()

    def _maybe_slice(self, resp, action: Action):
        """Honour a single `Range: bytes=a-b` the way the hub's CDN does, since olah answers 200 to it."""
        wanted = self.headers.get("Range", "")
        hub = self.server.hub
        if (self.method != "GET" or resp.status != 200 or not wanted.startswith("bytes=") or "," in wanted
                or not hub.honour_range or getattr(action, "ignore_range", False)):
            return resp
        data = resp.read()
        first, _, last = wanted[len("bytes="):].partition("-")
        size = len(data)
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        return _Sliced(resp, data, start, end)

    @staticmethod
    def _chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
        while chunk := resp.read1(CHUNK):
            yield chunk


class _Sliced:
    """A 206 (or 416) answer cut from a whole upstream body, shaped like http.client's response."""

    def __init__(self, upstream, data: bytes, start: int, end: int):
        import io

        size = len(data)
        ok = 0 <= start <= end < size
        self.status = 206 if ok else 416
        body = data[start:end + 1] if ok else b""
        skip = {"content-length", "content-range", "transfer-encoding"}
        self._headers = [(k, v) for k, v in upstream.getheaders() if k.lower() not in skip]
        self._headers.append(("Content-Range", f"bytes {start}-{end}/{size}" if ok else f"bytes */{size}"))
        self._headers.append(("Content-Length", str(len(body))))
        self._body = io.BytesIO(body)
        self.will_close = upstream.will_close

    def getheaders(self):
        return list(self._headers)

    def read1(self, n: int = -1) -> bytes:
        return self._body.read1(n)

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def isclosed(self) -> bool:
        return self._body.tell() == len(self._body.getbuffer())


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never block stop() on idle keep-alive clients
    block_on_close = False
    hub: HubProxy


class HubProxy(RequestLog):
    """Reverse proxy for ``upstream`` on a free loopback port; counts all requests."""

    def __init__(self, upstream: str, port: int = 0, upstream_timeout: float = 60.0, tls=None):
        """``tls``: an ``ssl.SSLContext`` with a server certificate, to serve https."""
        u = urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"need an http:// upstream, got {upstream!r}")
        self.upstream_host, self.upstream_port = u.hostname, u.port or 80
        self.upstream_url = f"http://{u.netloc}"
        self.upstream_timeout = upstream_timeout
        self.honour_range = True  # as the public hub's CDN does; olah itself ignores Range
        super().__init__()
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.hub = self
        self.port = self._server.server_address[1]
        if tls is not None:  # the handshake happens in the request's thread (_Handler.setup)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"HubProxy:{self.port}", kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- rules -------------------------------------------------------------------
    def add_rule(self, match: Matcher | str, action: Action) -> Rule:
        """Add a fault rule; ``match`` is ``f(method, path)`` or a path substring."""
        if isinstance(match, str):
            needle = match
            match = lambda method, path: needle in path  # noqa: E731
        rule = Rule(match, action)
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            self.rules.remove(rule)

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def _pick(self, method: str, path: str) -> Action | None:
        with self._lock:
            rules = list(self.rules)
        for rule in rules:
            if rule.match(method, path) and rule.action.arm():
                return rule.action
        return None

    # -- lifecycle ---------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def stop(self) -> None:
        """Stop listening and cut every open client connection; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self) -> HubProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
