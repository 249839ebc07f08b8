"""Where a file's bytes come from: ranged GETs of its hub URL, then of the CDN URL the hub redirected to."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .connections import Connections, Response
from .errors import ContentMismatch, NetworkError, StatusError

EXPIRED = {401, 403, 404, 410}  # from a redirect target: its signature expired, ask the hub again


class RemoteSource:
    """GETs (whole or ranges) of one file, and copying their bodies into a file; counts the bytes received.

    After the first request, chunks go straight to the URL the hub redirected to (its CDN), as
    hf_transfer does, instead of through the hub's resolve endpoint per chunk. The token goes
    only to the hub's origin. Thread-safe.
    """

    def __init__(self, url: str, token: str | None, pool: Connections, *, name: str, read_size: int,
                 on_bytes: Callable[[int], None] = lambda n: None) -> None:
        self.url, self.pool, self.name, self.read_size, self.on_bytes = url, pool, name, read_size, on_bytes
        # identity: the hash is over the file's bytes, not a compressed transfer of them
        self.headers = {"Accept-Encoding": "identity"} | ({"Authorization": f"Bearer {token}"} if token else {})
        self.direct: str | None = None  # where the hub redirected the file's URL to, once known
        self.fetched = 0
        self._count_lock = threading.Lock()

    def get(self, start: int | None = None, end: int | None = None) -> Response:
        """The whole file, or bytes `start`..`end` (inclusive) if the server honours Range."""
        headers = dict(self.headers)
        if start is not None:
            headers["Range"] = f"bytes={start}-{end}"
        direct = self.direct
        if direct is not None:
            try:  # the token goes only to the hub's origin, as on the first request's redirect
                return self.pool.get(direct, headers, origin=self.url)
            except StatusError as error:
                if error.status not in EXPIRED:
                    raise
                self.direct = None
        response = self.pool.get(self.url, headers)
        if response.url != self.url:
            self.direct = response.url
        return response

    def copy(self, response: Response, fd: int, offset: int, length: int,
             on_data: Callable[[memoryview], None] | None = None,
             on_write: Callable[[int], None] | None = None) -> int:
        """Write `length` bytes of a body at `offset` through one reused buffer; raise on a short or long body.

        `on_data` sees each piece written (to hash it); `on_write` the bytes written so far.
        """
        buffer = bytearray(min(self.read_size, max(length, 1)))
        view = memoryview(buffer)
        written = 0
        while written < length:
            n = response.readinto(view[:min(len(buffer), length - written)])
            if not n:
                raise NetworkError(f"{self.name}: body cut short at {written} of {length} bytes")
            data = view[:n]
            done = 0
            while done < n:  # pwrite on a regular file writes it all or raises; this is for the odd one
                done += os.pwrite(fd, data[done:], offset + written + done)
            if on_data is not None:
                on_data(data)
            written += n
            if on_write is not None:
                on_write(written)
            with self._count_lock:
                self.fetched += n
            self.on_bytes(n)
        if response.length:  # announced more than was asked for
            raise ContentMismatch(f"{self.name}: server sent more than the {length} bytes asked for")
        return written
