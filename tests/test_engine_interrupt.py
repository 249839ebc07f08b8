"""An interrupted fetch: download threads that outlive the clean-up (blocked in a read, never waited for)
write nothing more, so what the clean-up removed stays removed; the `partial/` marker goes with it when
nothing of the snapshot is on disk."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from preloader.config import Settings
from preloader.errors import Interrupted
from preloader.hub.client import Hub
from preloader.hub.listing import RemoteFile
from preloader.hub.rangemap import RangeMap, Stopper
from preloader.logs import Clock
from preloader.preloading.engine import Pending, Preloader
from preloader.spec import RepoSpec

SPEC, COMMIT, ETAG = RepoSpec("model", "org/m", "main"), "a" * 40, "b" * 64
QUIET = SimpleNamespace(begin_repo=lambda *args: None, add=lambda count: None)


def test_a_fetch_thread_that_outlives_the_interrupt_writes_nothing_more(tmp_path, monkeypatch):
    settings = Settings.load({"PRELOADER_CACHE_DIR": str(tmp_path / "hub"), "HF_ENDPOINT": "http://127.0.0.1:9"})
    preloader = Preloader(settings)
    layout = settings.layout
    resume, saved = threading.Event(), threading.Event()
    threads = []

    def fetch(hub, spec, commit, files, on_bytes):
        """A reading thread saves its range map, is still running when the signal arrives, and saves
        again after the clean-up: what a thread blocked in a read does when its read returns."""
        ranges = RangeMap(layout.range_map(spec, ETAG), ETAG, 10, 4, hub._stopper)

        def reader():
            ranges.save()
            saved.set()
            resume.wait()
            ranges.partial[1] = 2
            ranges.save()

        threads.append(threading.Thread(target=reader))
        threads[0].start()
        saved.wait()
        raise Interrupted(15)

    monkeypatch.setattr(Hub, "fetch", fetch)
    pending = Pending(SPEC, COMMIT, {"w.bin": RemoteFile("w.bin", 10, ETAG)}, {"w.bin": 10}, Clock())
    with pytest.raises(Interrupted):
        preloader.fetch(pending, QUIET)
    assert not layout.range_map(SPEC, ETAG).exists()  # removed by the clean-up
    resume.set()
    threads[0].join()
    assert not layout.range_map(SPEC, ETAG).exists()  # and not written again
    assert list(layout.state_folder("transfers", SPEC).iterdir()) == []  # nor a temp name of it
    assert not layout.partial_file(SPEC, COMMIT).exists()  # nothing of the snapshot: no marker


def test_a_stopped_fetch_creates_no_partial_blob(tmp_path):
    from preloader.cache.layout import Layout
    from preloader.errors import TransientError
    from preloader.hub.transfer import Transfer

    layout = Layout.build(tmp_path / "hub")
    stopper = Stopper()
    stopper.stop()
    source = SimpleNamespace(fetched=0)
    transfer = Transfer(layout, SPEC, COMMIT, RemoteFile("w.bin", 10, ETAG), source, 1, (), stopper)
    with pytest.raises(TransientError, match="the fetch was stopped"):
        transfer.run(5)
    assert not layout.partial_blob(SPEC, ETAG).exists() and not layout.range_map(SPEC, ETAG).exists()
