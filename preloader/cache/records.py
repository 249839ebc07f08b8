"""Completion records, and the one answer to "is this snapshot complete, and if not, what is missing?".

A record is written atomically, after every expected file has been checked
on disk, and lists the commit's whole file listing (path -> size) and the
files found complete. Any selection (cache/selection.py) can then be judged
against it with no network call. `check()` is what the engine, `status`,
`wait`, `plan`, `ls`, `prune` and the API ask.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import RepoSpec, is_commit
from . import atomic
from .layout import Layout
from .selection import EVERYTHING, Selection

VERSION = 1


@dataclass
class Record:
    commit: str
    listing: dict[str, int]
    complete: dict[str, int] = field(default_factory=dict)
    completed_at: float = 0.0
    # A signature check that passed (preloading/signatures.py): {"signature": sha256 of the signature file,
    # "signer": the key, certificates or identity trusted, "files": {path: sha256}, "verified_at": time}.
    verification: dict | None = None
    # The weight_map shards each `*.safetensors.index.json` names (what `weights=auto` keeps), and the
    # selections (`Selection.label()`) this record was completed for.
    indexes: dict[str, list[str]] = field(default_factory=dict)
    selections: list[dict] = field(default_factory=list)

    def completes(self, label: dict) -> None:
        """Note that `label`'s selection is complete here (once)."""
        if label not in self.selections:
            self.selections.append(label)


@dataclass(frozen=True)
class Completeness:
    """What a request means locally: its commit, the files it wants, which of them are missing, and why."""

    spec: RepoSpec
    commit: str | None
    record: Record | None
    wanted: dict[str, int]
    missing: tuple[str, ...]
    present: bool = False  # the snapshot folder exists, complete or not
    unsafe: str | None = None  # a folder of the repo leads out of the cache: nothing there is trusted

    @property
    def complete(self) -> bool:
        return self.record is not None and not self.missing and self.unsafe is None

    @property
    def size(self) -> int:
        return sum(self.wanted.values())

    @property
    def detail(self) -> str:
        """Why the snapshot is not usable, for messages; `complete at <commit>` when it is."""
        if self.unsafe is not None:
            return f"unsafe: {self.unsafe}"
        if self.commit is None:
            return "never downloaded here (no ref for this revision)"
        if self.record is None and not self.present:
            return f"commit {self.commit[:12]} is not in the cache"
        if self.record is None:
            return f"commit {self.commit[:12]} has no completion record (partial download)"
        if not self.missing:
            return f"complete at {self.commit[:12]}"
        shown = ", ".join(self.missing[:5]) + (f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else "")
        return f"commit {self.commit[:12]} is missing {len(self.missing)} file(s): {shown}"


def local_commit(layout: Layout, spec: RepoSpec) -> str | None:
    """The commit this request means without asking the hub: a pinned commit, or what refs/ says."""
    if spec.is_commit:
        return spec.revision
    try:
        commit = layout.ref_file(spec).read_text(encoding="utf-8").strip()
    except OSError:
        # `user/name:Q4_K_M` with no branch or tag of that name fetched here means `main`, that quantization.
        return local_commit(layout, spec.as_quant()) if spec.names_quant else None
    return commit if is_commit(commit) else None


_LOCAL = object()  # check()'s default: the commit refs/ or the pin names


def check(layout: Layout, spec: RepoSpec, commit: str | None | object = _LOCAL, *,
          selection: Selection = EVERYTHING, as_recorded: bool = False, trust_tree: bool = False,
          contained: bool = True) -> Completeness:
    """Is `commit` (default: what the request means locally) complete for this selection?

    Wanted are the files of the commit's listing that `selection` selects, or, with
    `as_recorded`, the files its record says were completed (what `ls` and `prune` judge by).
    A file is missing when the record does not cover it at its size, or it is absent or of
    another size on disk (links to blobs followed). `trust_tree`: without our record, huggingface_hub's
    tree listing (`trees/<commit>.json`) says what the commit holds (a cache only huggingface_hub wrote).
    A repo with a folder leading out of the cache (`Layout.guarded_folders`) is never complete; `contained`
    False skips that check, for read-only tiers we never write or delete in.
    """
    unsafe = atomic.first_escape(layout.guarded_folders(spec)) if contained else None
    if unsafe is not None:
        commit = spec.revision if spec.is_commit else None
        return Completeness(spec, commit, None, {}, (), unsafe=unsafe)
    commit = local_commit(layout, spec) if commit is _LOCAL else commit
    record = read(layout, spec, commit) if commit else None
    if record is None and commit and trust_tree:
        record = from_tree(layout, spec, commit)
    if record is None:
        return Completeness(spec, commit, None, {}, (), present=bool(commit) and
                            layout.snapshot_dir(spec, commit).is_dir())
    wanted = (dict(record.complete) if as_recorded
              else selection.apply(record.listing, indexes_of(layout, spec, commit, record, selection)))
    unrecorded = {p for p, size in wanted.items() if record.complete.get(p) != size}
    missing = unrecorded | set(missing_on_disk(layout.snapshot_dir(spec, commit), wanted))
    return Completeness(spec, commit, record, wanted, tuple(sorted(missing)), present=True)


def indexes_of(layout: Layout, spec: RepoSpec, commit: str, record: Record, selection: Selection
               ) -> dict[str, frozenset[str]]:
    """The shards each index of the listing names: from the record, else from the index file on disk (a record
    written before it kept them, or huggingface_hub's tree listing)."""
    found = {path: frozenset(shards) for path, shards in record.indexes.items()}
    for path in selection.needs_indexes(record.listing):
        if path not in found:
            shards = read_index(layout.snapshot_dir(spec, commit) / path, path, layout.cache_dir)
            if shards is not None:
                found[path] = shards
    return found


def read_index(file: Path, path: str, root: Path) -> frozenset[str] | None:
    """The repo paths of the shards an index json names, or None when it cannot be read as one or leads out of
    `root` (a planted link: never read through)."""
    try:
        if not file.resolve().is_relative_to(root.resolve()):
            return None
        return index_shards(file.read_bytes(), path)
    except (OSError, RuntimeError):  # RuntimeError: a link loop
        return None


def index_shards(data: bytes, path: str) -> frozenset[str] | None:
    """The repo paths (beside the index) of the shards its `weight_map` names, or None for a malformed one."""
    try:
        weight_map = json.loads(data)["weight_map"]
        names = set(weight_map.values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not names or not all(isinstance(n, str) for n in names):
        return None
    folder = os.path.dirname(path)
    return frozenset(f"{folder}/{n}" if folder else n for n in names)


def from_tree(layout: Layout, spec: RepoSpec, commit: str) -> Record | None:
    """A record made from huggingface_hub's tree listing of the commit: every file listed, wanted."""
    try:
        data = json.loads(layout.tree_file(spec, commit).read_text(encoding="utf-8"))
        listing = {str(path): int(info["size"]) for path, info in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Record(commit, listing, dict(listing)) if data.get("format_version") == 1 else None


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


def read(layout: Layout, spec: RepoSpec, commit: str) -> Record | None:
    """The record for `commit`, or None if there is none or it cannot be read."""
    try:
        data = json.loads(layout.record_file(spec, commit).read_text(encoding="utf-8"))
        if data.get("version") != VERSION or data.get("commit") != commit:
            return None
        verification = data.get("verification")
        return Record(commit, dict(data["listing"]), dict(data["complete"]), float(data["completed_at"]),
                      verification=verification if isinstance(verification, dict) else None,
                      indexes={str(k): list(v) for k, v in dict(data.get("indexes") or {}).items()},
                      selections=list(data.get("selections") or []))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(layout: Layout, spec: RepoSpec, record: Record, *, stamp: bool = True) -> None:
    """Write the record; `stamp`: it is completed now (False keeps its completed_at)."""
    atomic.refuse_escapes(layout.guarded_folders(spec))  # never call complete what lies outside the cache
    if stamp or not record.completed_at:
        record.completed_at = time.time()
    data = {
        "version": VERSION,
        "repo_type": spec.repo_type,
        "repo_id": spec.repo_id,
        "commit": record.commit,
        "completed_at": record.completed_at,
        "listing": record.listing,
        "complete": record.complete,
        "indexes": record.indexes,
        "selections": record.selections,
    }
    if record.verification is not None:
        data["verification"] = record.verification
    atomic.write_json(layout.record_file(spec, record.commit), data, root=layout.state_dir)


def mark_verified(layout: Layout, spec: RepoSpec, commit: str, verification: dict) -> None:
    """Add a passed signature check to the commit's record (kept when the record is rewritten for more files:
    a check names the files it covered)."""
    record = read(layout, spec, commit)
    if record is None:
        return  # nothing complete to vouch for
    record.verification = verification
    write(layout, spec, record, stamp=False)


def mark_used(layout: Layout, spec: RepoSpec, commit: str, now: float | None = None) -> None:
    """Record that a service got this snapshot: prune evicts the least recently used first.

    File access times are often disabled (noatime), so use is recorded explicitly.
    """
    atomic.write_text(layout.used_file(spec, commit), f"{time.time() if now is None else now:.3f}\n",
                      root=layout.state_dir)


def last_used(layout: Layout, spec: RepoSpec, commit: str) -> float | None:
    try:
        return float(layout.used_file(spec, commit).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def mark_started(layout: Layout, spec: RepoSpec, commit: str) -> None:
    """Note a download in progress, so prune can tell our abandoned partial snapshots from others'. The first
    write of a download: a repo with a folder leading out of the cache is refused here (73)."""
    atomic.refuse_escapes(layout.guarded_folders(spec))
    atomic.write_text(layout.partial_file(spec, commit), f"{time.time():.3f}\n", root=layout.state_dir)


def clear_started(layout: Layout, spec: RepoSpec, commit: str) -> None:
    atomic.remove(layout.partial_file(spec, commit), layout.roots)


def forget(layout: Layout, spec: RepoSpec, commit: str) -> None:
    """Drop every record we keep about a snapshot."""
    for path in (layout.record_file(spec, commit), layout.used_file(spec, commit), layout.partial_file(spec, commit)):
        atomic.remove(path, layout.roots)
