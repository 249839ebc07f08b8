"""Completion records: our word that a snapshot holds every file it should.

A record is written atomically, after every expected file has been checked
on disk, and lists the commit's whole file listing (path -> size) and the
files found complete. Any include/exclude selection can then be judged
against it with no network call.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic
from .layout import Layout
from .spec import RepoSpec

VERSION = 1


@dataclass
class Record:
    commit: str
    listing: dict[str, int]
    complete: dict[str, int] = field(default_factory=dict)
    completed_at: float = 0.0


def select(listing: dict[str, int], include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """The files a request wants, by huggingface_hub's pattern rules (`dir/` means `dir/*`)."""

    def matches(path: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)

    return {
        path: size
        for path, size in listing.items()
        if (not include or matches(path, include)) and not matches(path, exclude)
    }


def read(layout: Layout, spec: RepoSpec, commit: str) -> Record | None:
    """The record for `commit`, or None if there is none or it cannot be read."""
    try:
        data = json.loads(layout.record_file(spec, commit).read_text(encoding="utf-8"))
        if data.get("version") != VERSION or data.get("commit") != commit:
            return None
        return Record(commit, dict(data["listing"]), dict(data["complete"]), float(data["completed_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(layout: Layout, spec: RepoSpec, record: Record) -> None:
    record.completed_at = time.time()
    data = {
        "version": VERSION,
        "repo_type": spec.repo_type,
        "repo_id": spec.repo_id,
        "commit": record.commit,
        "completed_at": record.completed_at,
        "listing": record.listing,
        "complete": record.complete,
    }
    atomic.write_json(layout.record_file(spec, record.commit), data, root=layout.state_dir)


def missing_on_disk(snapshot: Path, wanted: dict[str, int]) -> list[str]:
    """Wanted files absent from the snapshot or of the wrong size (following links to blobs)."""
    bad = []
    for path, size in wanted.items():
        try:
            if os.stat(snapshot / path).st_size != size:
                bad.append(path)
        except OSError:
            bad.append(path)
    return bad


def is_complete(layout: Layout, spec: RepoSpec, commit: str, include=(), exclude=()) -> bool:
    """True when a record covers every wanted file and each is on disk at its size."""
    record = read(layout, spec, commit)
    if record is None:
        return False
    wanted = select(record.listing, include, exclude)
    if any(record.complete.get(path) != size for path, size in wanted.items()):
        return False
    return not missing_on_disk(layout.snapshot_dir(spec, commit), wanted)


def mark_used(layout: Layout, spec: RepoSpec, commit: str, now: float | None = None) -> None:
    """Record that a service got this snapshot: prune evicts the least recently used first.

    File access times are often disabled (noatime), so use is recorded explicitly.
    """
    atomic.write_text(layout.used_file(spec, commit), f"{time.time() if now is None else now:.3f}\n")


def last_used(layout: Layout, spec: RepoSpec, commit: str) -> float | None:
    try:
        return float(layout.used_file(spec, commit).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def mark_started(layout: Layout, spec: RepoSpec, commit: str) -> None:
    """Note a download in progress, so prune can tell our abandoned partial snapshots from others'."""
    atomic.write_text(layout.partial_file(spec, commit), f"{time.time():.3f}\n")


def clear_started(layout: Layout, spec: RepoSpec, commit: str) -> None:
    layout.partial_file(spec, commit).unlink(missing_ok=True)


def forget(layout: Layout, spec: RepoSpec, commit: str) -> None:
    """Drop every record we keep about a snapshot."""
    for path in (layout.record_file(spec, commit), layout.used_file(spec, commit), layout.partial_file(spec, commit)):
        path.unlink(missing_ok=True)
