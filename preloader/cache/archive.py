"""Snapshots that travel: one streaming tar holding each blob once, with a manifest of what goes where.

    manifest.json           first: format, and per snapshot its type, repo, commit, refs, completion record,
                            files (path -> etag, size); the blobs (etag -> size)
    blobs/<etag>            each blob once, whatever number of repos and revisions share it

Snapshot links, refs and records are in the manifest, not in the tar: an import makes them itself, so a
member can only ever be a regular file with a name we expect. `import_archive` reads the stream once:
every blob is staged under the state dir and checked against its etag while it is read, nothing in the
cache changes until the whole archive has checked out, and then each repo is published under its lock by
the same atomic steps as a download. Memory stays flat; pipes work. zstd when the name says `.zst` and the
`zstandard` package is installed (the `zstd` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Iterable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import ArchiveError, NotFoundError, TransientError, UnavailableError, os_error
from ..spec import RepoSpec, etag_problem, is_commit, repo_id_problem, repo_path_problem, revision_problem
from . import atomic, publication, records, trees
from .hashing import copy_checked
from .inventory import read_refs, scan, snapshot_blobs
from .layout import Layout
from .locks import RepoLocks

FORMAT = "preloader.export/1"
MANIFEST = "manifest.json"
MAX_MANIFEST = 64 * 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class ExportReport:
    snapshots: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0


@dataclass
class ImportReport:
    snapshots: list[str] = field(default_factory=list)
    blobs_written: int = 0
    blobs_present: int = 0  # already in the cache: read past, not written
    bytes_written: int = 0


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise UnavailableError("a .zst archive needs the zstandard package: pip install 'hf-preloader[zstd]'") from None
    return zstandard


# -- export ---------------------------------------------------------------------------------------------

def snapshots_to_export(layout: Layout, specs: Iterable[RepoSpec] | None) -> list[records.Completeness]:
    """The complete snapshots the specs name (all of them for None); NotFoundError for one that is not."""
    if specs is None:
        return [records.check(layout, RepoSpec(r.repo_type, r.repo_id, rev.commit), as_recorded=True)
                for r in scan(layout).repos for rev in r.revisions if rev.complete]
    chosen = []
    for spec in specs:
        state = records.check(layout, spec, as_recorded=True)
        if not state.complete:
            raise NotFoundError(f"{spec} is not complete in {layout.cache_dir}: {state.detail}")
        chosen.append(state)
    return chosen


def export(layout: Layout, specs: Iterable[RepoSpec] | None, out: BinaryIO, *, zstd: bool = False) -> ExportReport:
    """Write the snapshots as one tar stream to `out` (zstd-compressed with `zstd`)."""
    states = snapshots_to_export(layout, specs)
    snapshots, blobs = [], {}
    for state in states:
        spec = RepoSpec(state.spec.repo_type, state.spec.repo_id)
        files = {}
        for path, blob in sorted(snapshot_blobs(layout.snapshot_dir(spec, state.commit)).items()):
            if path in state.wanted:
                files[path] = {"etag": blob.name, "size": state.wanted[path]}
                blobs[blob.name] = (blob, state.wanted[path])
        refs = [name for name in read_refs(layout, spec).get(state.commit, [])]
        snapshot = {"type": spec.repo_type, "repo": spec.repo_id, "commit": state.commit, "refs": refs,
                    "listing": state.record.listing, "files": files}
        tree = trees.read(layout, spec, state.commit)
        if tree is not None and _tree_problem(tree, state.record.listing) is None:
            snapshot["tree"] = tree  # huggingface_hub's listing travels too: an import writes it as it was
        snapshots.append(snapshot)
    manifest = json.dumps({"format": FORMAT, "snapshots": snapshots,
                           "blobs": {etag: size for etag, (_, size) in sorted(blobs.items())}}, indent=1).encode()
    with _compressed(out, zstd) as stream, tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, len(manifest), _Bytes(manifest))
        for etag, (blob, size) in sorted(blobs.items()):
            with open(blob, "rb") as file:
                _add(tar, f"blobs/{etag}", size, file)
    return ExportReport([f"{s['type']}:{s['repo']}@{s['commit']}" for s in snapshots], len(blobs),
                        sum(size for _, size in blobs.values()))


def export_to_file(layout: Layout, specs: Iterable[RepoSpec] | None, path: Path) -> ExportReport:
    """Export into `path` atomically (a temp file renamed into place): no half archive is ever left there."""
    temp = atomic.temp_name(path.absolute())
    try:
        with open(temp, "wb") as out:
            report = export(layout, specs, out, zstd=path.name.endswith(".zst"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as error:
        if error.filename is None or str(error.filename) == str(temp):  # the archive itself
            error = OSError(error.errno, error.strerror, str(path))
            doing = "write the archive"
        else:
            doing = "read"
        problem = os_error(error, doing)
        raise type(problem)(f"{problem}; nothing was left at {path}") from None
    finally:
        with suppress(OSError):  # a read-only volume answers EROFS even for a temp file never made
            temp.unlink(missing_ok=True)
    return report


def import_file(layout: Layout, path: Path, **options) -> ImportReport:
    """`import_archive` from a file; NotFoundError (66) when it cannot be opened."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after the import
    except FileNotFoundError as error:
        raise NotFoundError(f"cannot read the archive {path}: {error.strerror}") from None
    except OSError as error:  # permission (77), a folder, an I/O error
        raise os_error(error, "read the archive") from None
    with stream:
        return import_archive(layout, stream, **options)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.offset + n
        chunk, self.offset = self.data[self.offset:end], min(end, len(self.data))
        return chunk


def _add(tar: tarfile.TarFile, name: str, size: int, file) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, file)


@contextmanager
def _compressed(out: BinaryIO, zstd: bool):
    if not zstd:
        yield out
        return
    with _zstd().ZstdCompressor(level=3).stream_writer(out, closefd=False) as writer:
        yield writer


# -- import ---------------------------------------------------------------------------------------------

def import_archive(layout: Layout, source: BinaryIO, *, locking: RepoLocks | None = None,
                   lock_timeout: float = 3600.0) -> ImportReport:
    """Read an export from `source` into the cache: check everything, then publish; ArchiveError (76) for a
    hostile or damaged archive, with nothing in the cache changed."""
    staging = layout.cache_dir / ".locks" / f"preloader-import-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        atomic.make_dirs(staging)
        manifest, present, _ = _read(layout, _decompressed(source), staging)
        return _publish(layout, manifest, present, staging, locking or RepoLocks.auto(layout), lock_timeout)
    except OSError as error:  # a full or read-only volume, one this user may not write, a broken pipe
        if error.filename is None:  # a write into a staged blob says no name
            error = OSError(error.errno, error.strerror, str(staging))
        problem = os_error(error, "write")
        raise type(problem)(f"import into {layout.cache_dir} failed: {problem}; no unchecked byte was published; "
                            "a snapshot not yet recorded stays incomplete") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _decompressed(source: BinaryIO):
    peek = getattr(source, "peek", None)
    if peek is not None and peek(4)[:4] == ZSTD_MAGIC:
        return _zstd().ZstdDecompressor().stream_reader(source, read_across_frames=True)
    return source


def _read(layout: Layout, stream, staging: Path) -> tuple[dict, set[str], set[str]]:
    """Check and stage the archive: the manifest, the blobs present already, the blobs staged (checked)."""
    from .dedup import blobs_named

    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as error:
        raise ArchiveError(f"not a preloader export (tar): {error}") from None
    with tar:
        manifest = _manifest(tar)
        blobs: dict[str, int] = manifest["blobs"]
        present = {etag for etag, size in blobs.items() if next(blobs_named(layout, etag, size), None)}
        staged: set[str] = set()
        try:
            while (member := tar.next()) is not None:  # on from the manifest (iterating starts over)
                etag = _blob_member(member, blobs, staged)
                if etag in present:
                    staged.add(etag)  # read past: the cache has it
                    continue
                _stage(tar, member, staging / etag, etag, blobs[etag])
                staged.add(etag)
        except tarfile.TarError as error:
            raise ArchiveError(f"the archive is damaged: {error}; nothing was imported") from None
    missing = sorted(set(blobs) - staged)
    if missing:
        raise ArchiveError(f"the archive ends before {len(missing)} of its blobs ({missing[0][:12]}...); "
                           "nothing was imported")
    return manifest, present, staged - present


def _manifest(tar: tarfile.TarFile) -> dict:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST:
        raise ArchiveError(f"not a preloader export: it does not begin with {MANIFEST}; nothing was imported")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except ValueError:
        raise ArchiveError(f"{MANIFEST} is not JSON; nothing was imported") from None
    problems = _manifest_problems(manifest)
    if problems:
        raise ArchiveError(f"unsafe or malformed {MANIFEST}, nothing was imported: " + "; ".join(problems[:5]))
    return manifest


def _manifest_problems(manifest: object) -> list[str]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return [f"format is not {FORMAT}"]
    blobs, snapshots = manifest.get("blobs"), manifest.get("snapshots")
    if not isinstance(blobs, dict) or not isinstance(snapshots, list):
        return ["no blobs or snapshots"]
    problems = [f"blob {e!r}: {etag_problem(e) or 'size'}" for e, s in blobs.items()
                if etag_problem(e) or not isinstance(s, int) or isinstance(s, bool) or s < 0]
    for snap in snapshots:
        if not isinstance(snap, dict):
            problems.append("a snapshot is not an object")
            continue
        where = f"{snap.get('repo')!r}@{snap.get('commit')!r}"
        if snap.get("type") not in ("model", "dataset") or repo_id_problem(str(snap.get("repo"))) \
                or not is_commit(str(snap.get("commit"))):
            problems.append(f"{where}: bad type, repo or commit")
            continue
        refs, files, listing = snap.get("refs"), snap.get("files"), snap.get("listing")
        if not isinstance(refs, list) or any(not isinstance(r, str) or revision_problem(r) for r in refs):
            problems.append(f"{where}: bad refs")
        if not isinstance(listing, dict) or not isinstance(files, dict):
            problems.append(f"{where}: no files or listing")
            continue
        for path, info in files.items():
            if repo_path_problem(path) or not isinstance(info, dict) or blobs.get(info.get("etag")) != info.get("size"):
                problems.append(f"{where} file {path!r}: unsafe path, or not among the blobs")
        problems += [f"{where} file {path!r} is also a folder of {clash!r}" for path, clash in _clashes(files)]
        if "tree" in snap:
            problem = _tree_problem(snap["tree"], listing)
            if problem is not None:
                problems.append(f"{where}: tree listing {problem}")
    return problems


def _tree_problem(tree: object, listing: dict) -> str | None:
    """What is wrong with a snapshot's tree listing (optional in an export: older ones have none): it must be
    listing entries (`trees.valid_entries`) for exactly the files of the snapshot's listing, at their sizes."""
    entries = trees.valid_entries(tree)
    if entries is None:
        return "is not a list of entries with sizes and blob ids"
    if any(repo_path_problem(path) for path in entries):
        return "names an unsafe path"
    if {path: entry["size"] for path, entry in entries.items()} != listing:
        return "does not match the snapshot's listing"
    return None


def _clashes(files: dict) -> list[tuple[str, str]]:
    """(file, a file under it) for every name that is both a file and a folder: `a` and `a/b` cannot both be
    published, and finding out half-way through the links would leave a snapshot half made."""
    names = set(files)
    found = []
    for name in sorted(names):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in names:
                found.append((parent, name))
    return found


def _blob_member(member: tarfile.TarInfo, blobs: dict[str, int], seen: set[str]) -> str:
    """The etag a member holds; ArchiveError for anything but a regular file named blobs/<a listed etag>."""
    kind = "a link" if member.issym() or member.islnk() else "a device" if member.isdev() else \
        "a directory" if member.isdir() else None
    name = member.name
    etag = name.removeprefix("blobs/")
    if kind is not None or not member.isfile():
        raise ArchiveError(f"archive member {name!r} is {kind or 'not a regular file'}; nothing was imported")
    if name != f"blobs/{etag}" or "/" in etag or etag not in blobs:
        raise ArchiveError(f"archive member {name!r} is not a blob the manifest lists (a path out of the cache?); "
                           "nothing was imported")
    if etag in seen or member.size != blobs[etag]:
        raise ArchiveError(f"archive member {name!r} repeats a blob or has the wrong size; nothing was imported")
    if sum(len(k) + len(v) for k, v in member.pax_headers.items()) > 64 * 1024:
        raise ArchiveError(f"archive member {name!r} has oversized headers; nothing was imported")
    return etag


def _stage(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, etag: str, size: int) -> None:
    """Copy one blob out of the stream, hashing as it goes; ArchiveError if its bytes are not its etag."""
    with open(target, "wb") as file:
        checked = copy_checked(tar.extractfile(member), file, etag, size)
    if not checked:
        raise ArchiveError(f"blob {etag[:12]} in the archive does not match its etag (damaged or tampered); "
                           "nothing was imported")


def _publish(layout: Layout, manifest: dict, present: set[str], staging: Path, locking: RepoLocks,
             lock_timeout: float) -> ImportReport:
    from .dedup import adopt

    report = ImportReport(blobs_present=len(present))
    for snap in manifest["snapshots"]:
        spec, commit = RepoSpec(snap["type"], snap["repo"]), snap["commit"]
        with locking.hold(spec, timeout=lock_timeout, what=f"{spec.repo_type} {spec.repo_id}"):
            atomic.make_dirs(layout.blobs_dir(spec))
            atomic.ensure_inside(layout.blobs_dir(spec) / "x", layout.cache_dir)
            for path, info in sorted(snap["files"].items()):
                etag, blob = info["etag"], layout.blob(spec, info["etag"])
                if not blob.exists() and not (etag in present and adopt(layout, spec, etag, info["size"])):
                    _link_staged(staging / etag, blob, report)
                link = layout.snapshot_dir(spec, commit) / path
                atomic.symlink(atomic.relative_target(blob, link), link, root=layout.cache_dir)
            wanted = {path: info["size"] for path, info in snap["files"].items()}
            publication.publish(layout, spec, commit, record=records.Record(commit, dict(snap["listing"]), wanted),
                                tree=snap.get("tree"), refs=snap["refs"])
        report.snapshots.append(f"{spec.repo_type}:{spec.repo_id}@{commit}")
    return report


def _link_staged(staged: Path, blob: Path, report: ImportReport) -> None:
    """Publish a checked blob: a hard link from the staging folder (same volume), renamed into place."""
    if not staged.exists():  # it was in the cache when the archive was read, and went meanwhile
        raise TransientError(f"blob {blob.name[:12]} left the cache during the import; import again")
    atomic.hard_link(staged, blob)
    if os.stat(staged).st_nlink == 2:  # the staged file and this first link: count each blob once
        report.blobs_written += 1
        report.bytes_written += blob.stat().st_size
