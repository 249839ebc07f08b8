"""One file over several connections: chunks handed out to reading threads, hashed in order as they land."""

from __future__ import annotations

import contextlib
import queue
import threading

from ..cache.hashing import Hasher, HashThread
from .connections import Response
from .errors import ContentMismatch
from .rangemap import SAVE_EVERY, RangeMap
from .source import RemoteSource


class ParallelDownload:
    """Fetch the chunks `ranges` lacks into `fd` over `connections` threads; one stream if Range is ignored.

    The range map is updated as bytes land, and saved by the reading threads (see RangeMap).
    """

    def __init__(self, source: RemoteSource, fd: int, ranges: RangeMap, connections: int, etag: str) -> None:
        self.source, self.fd, self.ranges, self.connections, self.etag = source, fd, ranges, connections, etag
        self.todo: queue.Queue[int] = queue.Queue()
        self.finished: queue.Queue[tuple[int, BaseException | None]] = queue.Queue()
        self.stop = threading.Event()
        self.probe: dict[int, Response] = {}

    def run(self) -> Hasher:
        """Download what is missing; the hasher, having hashed the whole file."""
        for index in range(self.ranges.count):
            if index not in self.ranges.done:
                self.todo.put(index)
        whole = self._probe()
        if whole is not None:
            return whole
        threads = [threading.Thread(target=self._worker, name="preloader-range", daemon=True)
                   for _ in range(min(self.connections, self.todo.qsize()))]
        for thread in threads:
            thread.start()
        hasher = Hasher(self.etag, self.ranges.size)
        hashing = HashThread(hasher, self.fd)
        error: BaseException | None = None
        completed = False
        try:
            error = self._coordinate(threads, hashing)
            completed = error is None
        finally:
            self.stop.set()
            for response in self.probe.values():
                response.close()
            self.ranges.save()  # readers that have not noticed `stop` yet may be saving too: it locks
            hashing.finish(abort=not completed)
        if error is not None:
            raise error
        return hasher

    def _probe(self) -> Hasher | None:
        """Ask for the first missing chunk: a 200 means Range is ignored, and the body is the whole file."""
        if self.todo.empty():
            return None
        index = self.todo.get()
        response = self.source.get(*self.ranges.bounds(index))
        if response.status != 200:
            self.todo.put(index)
            self.probe[index] = response
            return None
        self.ranges.discard()
        hasher = Hasher(self.etag, self.ranges.size)
        with contextlib.closing(response):
            self.source.copy(response, self.fd, 0, self.ranges.size, on_data=hasher.update)
        return hasher

    def _worker(self) -> None:
        while not self.stop.is_set():
            try:
                index = self.todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._fetch_chunk(index, self.probe.pop(index, None))
                self.finished.put((index, None))
            except BaseException as error:  # noqa: BLE001 - handed to the coordinating thread
                self.finished.put((index, error))
                return

    def _fetch_chunk(self, index: int, response: Response | None) -> None:
        first, last = self.ranges.bounds(index)
        if first > last:  # all of it is on disk already
            return
        response = response or self.source.get(first, last)
        with contextlib.closing(response):
            if response.status != 206:
                raise ContentMismatch(f"{self.source.name}: expected 206, got {response.status}")
            already = self.ranges.partial.get(index, 0)

            def on_write(n: int) -> None:
                self.ranges.partial[index] = already + n
                self.ranges.save_if_due()

            self.source.copy(response, self.fd, first, last - first + 1, on_write=on_write)

    def _coordinate(self, threads: list[threading.Thread], hashing: HashThread) -> BaseException | None:
        """Move finished chunks to `done` and the hash along, until every worker has exited and reported."""
        ranges = self.ranges
        frontier = 0  # chunks before it are all on disk

        def follow() -> None:
            nonlocal frontier
            while frontier < ranges.count and frontier in ranges.done:
                frontier += 1
            hashing.follow(min(ranges.size, frontier * ranges.chunk))

        follow()
        error: BaseException | None = None
        while any(t.is_alive() for t in threads) or not self.finished.empty():
            try:
                index, failure = self.finished.get(timeout=SAVE_EVERY)
            except queue.Empty:
                index, failure = None, None
            if failure is not None:
                error = error or failure
                self.stop.set()
            elif index is not None:
                ranges.done.add(index)
                follow()
            ranges.save_if_due()
        return error
