"""Keep-alive HTTP/1.1 connections for ranged GETs, reading bodies straight into the caller's buffer.

The transfer's bytes go socket → reused buffer → file with no Python object per
read: that is what lets several connections keep up with a fast mirror. Proxies
come from the usual environment variables (as huggingface_hub's own client does),
redirects are followed, and the token is never sent past the origin it was given for.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ssl
import threading
import urllib.request
from urllib.parse import unquote, urljoin, urlsplit

from ..version import __version__
from .errors import NetworkError, StatusError, UntrustedCertificate, status_error

REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 10
CLOSED_MEANWHILE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

__all__ = ["Connections", "NetworkError", "Response", "StatusError", "UntrustedCertificate"]


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()  # system store, SSL_CERT_FILE / SSL_CERT_DIR
    try:
        import certifi

        context.load_verify_locations(certifi.where())  # what huggingface_hub's client trusts too
    except (ImportError, OSError):
        pass
    return context


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL to go through for this origin (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), or None."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class Response:
    """A response whose body is read with `readinto`; `close` gives a drained connection back to the pool."""

    def __init__(self, pool: Connections, key: tuple, conn: http.client.HTTPConnection,
                 raw: http.client.HTTPResponse, url: str) -> None:
        self._pool, self._key, self._conn, self._raw = pool, key, conn, raw
        self.url = url  # after redirects
        self.status = raw.status
        self.headers = raw.headers
        self._broken = False

    @property
    def length(self) -> int | None:
        return self._raw.length  # bytes of body still to come, None when not announced

    def readinto(self, buffer) -> int:
        with self._failing():
            return self._raw.readinto(buffer)

    def read(self) -> bytes:
        """The whole body (API answers: small)."""
        with self._failing():
            return self._raw.read()

    @contextlib.contextmanager
    def _failing(self):
        try:
            yield
        except (OSError, http.client.HTTPException) as error:
            self._broken = True
            raise NetworkError(f"connection failed while reading: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        reusable = not self._broken and (self._raw.isclosed() or self._raw.length == 0) and not self._raw.will_close
        self._raw.close()
        if reusable:
            self._pool._put(self._key, self._conn)
        else:  # broken, or a body left unread: useless for the next request
            self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Connections:
    """A pool of idle keep-alive connections per origin, shared by the transfer's threads."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.user_agent = f"preloader/{__version__}"
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def get(self, url: str, headers: dict[str, str], origin: str | None = None) -> Response:
        """GET `url`, following redirects. `Authorization` goes only to the origin of `origin` (default: `url`).

        Raises the StatusError subclass a 4xx/5xx means (hub.errors.status_error: not found, refused, busy...)
        and NetworkError when the connection fails.
        """
        origin = urlsplit(origin or url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise NetworkError(f"cannot fetch a {parts.scheme!r} URL")
            if parts[:2] != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            response = self._request(parts, url, headers)
            if response.status in REDIRECTS and response.headers.get("Location"):
                location = response.headers["Location"]
                response.read()  # small body: drain it so the connection can be reused
                response.close()
                url = urljoin(url, location)
                continue
            if response.status >= 400:
                response.close()
                raise status_error(response.status, url, response.headers)
            return response
        raise NetworkError(f"more than {MAX_REDIRECTS} redirects")

    def _request(self, parts, url: str, headers: dict[str, str]) -> Response:
        scheme = parts.scheme
        proxy = _proxy_for(scheme, parts.hostname or "")
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname, port, proxy)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": self.user_agent, **headers}
        if proxy and scheme == "http":
            target = f"http://{parts.netloc}{target}"  # absolute form, to the proxy
            headers.update({"Host": parts.netloc, **self._proxy_auth(proxy)})
        conn = self._take(key)
        try:
            if conn is not None:
                try:
                    conn.request("GET", target, headers=headers)
                    return Response(self, key, conn, conn.getresponse(), url)
                except CLOSED_MEANWHILE:  # the server closed the idle connection: a fresh one
                    conn.close()
            conn = self._connect(scheme, parts.hostname, port, proxy)
            conn.request("GET", target, headers=headers)
            return Response(self, key, conn, conn.getresponse(), url)
        except ssl.SSLCertVerificationError as error:
            conn.close()
            raise UntrustedCertificate(
                f"the TLS certificate of {parts.hostname}:{port} is not trusted ({error.verify_message}); "
                "point SSL_CERT_FILE at a bundle with its CA") from None
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise NetworkError(f"cannot reach {parts.hostname}:{port}: {type(error).__name__}: {error}") from error

    def _proxy_auth(self, proxy: str) -> dict[str, str]:
        p = urlsplit(proxy)
        if p.username is None:
            return {}
        pair = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        return {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode()}

    def _connect(self, scheme: str, host: str, port: int, proxy: str | None) -> http.client.HTTPConnection:
        if proxy:
            p = urlsplit(proxy)
            address = (p.hostname, p.port or 8080)
        else:
            address = (host, port)
        if scheme == "https":
            if self._tls is None:
                self._tls = _tls_context()
            conn = http.client.HTTPSConnection(*address, timeout=self.timeout, context=self._tls)
            if proxy:
                conn.set_tunnel(host, port, headers=self._proxy_auth(proxy))
        else:
            conn = http.client.HTTPConnection(*address, timeout=self.timeout)
        return conn

    def _take(self, key: tuple) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _put(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def close(self) -> None:
        """Close the idle connections; the pool can still be used (it connects again)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
