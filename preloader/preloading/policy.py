"""The deployment's policies on what may be served, checked twice: before any download (what the hub lists,
and bytes already in the cache) and before the hand-off (the snapshots as they are). The lock file
(PRELOADER_LOCKFILE, `locking`) and the pickle policy (PRELOADER_PICKLE, `pickles`) refuse with 79; before
the hand-off the signature (PRELOADER_SIGNATURE, `signatures`) is checked first, and refuses with 65. With
none set, each check returns at once and imports nothing."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..cache.layout import Layout
from ..config import Settings
from .results import PreloadResult


def active(settings: Settings) -> bool:
    return settings.lockfile is not None or settings.pickle == "refuse"


def before_download(settings: Settings, layout: Layout, outcomes: Iterable) -> None:
    """The engine's plan (PreloadResults and pending downloads, with the hub's listing), before a byte is
    fetched: the listing against the lock; pickles by name, and by content where the blob is already here."""
    if not active(settings):
        return
    from . import locking, pickles

    for outcome in outcomes:
        if isinstance(outcome, PreloadResult):
            if settings.pickle == "refuse":
                pickles.refuse(outcome.spec, pickles.found(selected(settings, outcome)), "nothing was downloaded")
            continue
        spec, files = outcome.spec, outcome.files
        if settings.lockfile is not None:
            locking.check_listing(settings.lockfile, spec, outcome.commit, files, outcome.wanted)
        if settings.pickle == "refuse":
            here = {path: layout.blob(spec, files[path].etag) for path in outcome.wanted}
            hits = pickles.found({path: blob if blob.is_file() else None for path, blob in here.items()})
            pickles.refuse(spec, hits, "nothing was downloaded")


def before_hand_off(settings: Settings, results: Iterable[PreloadResult]) -> None:
    """Every complete snapshot, as the service would get it, before anything reads the weights: its signature
    (PRELOADER_SIGNATURE, 65); the lock's commit, files and digests; no pickle (79). With none of them set it
    returns at once, importing nothing."""
    results = list(results)
    if settings.signature != "off":
        from .signatures import check_results

        check_results(settings, results)
    if not active(settings):
        return
    from . import locking, pickles

    for result in results:
        files = selected(settings, result)
        spec = result.spec
        if settings.lockfile is not None:
            locking.check_snapshot(settings.lockfile, spec, result.commit, result.path, files)
        if settings.pickle == "refuse":
            pickles.refuse(spec, pickles.found(files), "nothing was started; the files stay in the cache")


def selected(settings: Settings, result: PreloadResult) -> dict[str, Path]:
    """The plan's files of a complete snapshot (what the engine chose): path in the repo -> the blob it links
    to, or the file itself (a dangling link too: still a file of the snapshot, and not the locked one)."""
    from ..cache.inventory import snapshot_blobs

    found = snapshot_blobs(result.path)
    return {path: found.get(path, result.path / path) for path in result.chosen}
