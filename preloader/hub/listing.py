"""A commit's files as the hub lists them, and the checks that keep a hostile listing out of the cache."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ..errors import HubDataError
from ..spec import RepoSpec, etag_problem, is_commit, repo_path_problem


@dataclass(frozen=True)
class RemoteFile:
    """One file of a commit, as the hub lists it."""

    path: str
    size: int
    etag: str  # sha256 for LFS files, git blob id otherwise: also the blob's file name
    blob_id: str = ""  # the git blob id, LFS or not
    xet_hash: str | None = None  # set when the hub serves the file through Xet

    @property
    def xet(self) -> bool:
        return self.xet_hash is not None

    def tree_entry(self) -> dict:
        """The file as huggingface_hub 2.x's `trees/<commit>.json` lists it."""
        entry: dict = {"size": self.size, "blob_id": self.blob_id}
        if self.etag != self.blob_id:  # an LFS file: its etag is the sha256
            entry.update(lfs_sha256=self.etag, lfs_size=self.size)
        if self.xet_hash is not None:
            entry["xet_hash"] = self.xet_hash
        return entry


def resolve_url(endpoint: str, spec: RepoSpec, commit: str, path: str) -> str:
    """The hub's download URL of one file of a commit."""
    prefix = "" if spec.repo_type == "model" else f"{spec.repo_type}s/"
    return f"{endpoint}/{prefix}{spec.repo_id}/resolve/{commit}/{quote(path)}"


def listed_file(item: object) -> RemoteFile | None:
    """A file of a tree listing (`oid`: git blob id; `lfs.oid`: sha256), or None if it is malformed."""
    if not isinstance(item, dict) or item.get("type", "file") != "file":
        return None
    lfs, oid, xet_hash = item.get("lfs"), item.get("oid"), item.get("xetHash")
    etag = lfs.get("oid") if isinstance(lfs, dict) else oid
    path, size = item.get("path"), item.get("size")
    if not isinstance(path, str) or not isinstance(etag, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    return RemoteFile(path, size, etag.lower(), blob_id=oid.lower() if isinstance(oid, str) else "",
                      xet_hash=xet_hash.lower() if isinstance(xet_hash, str) and xet_hash else None)


def check_listing(spec: RepoSpec, commit: str, files: dict[str, RemoteFile]) -> None:
    """Refuse, before any write, a listing whose names or ids could escape the cache or break it."""
    problems = [] if is_commit(commit or "") else [f"commit {commit!r} is not a 40-hex id"]
    for path, file in files.items():
        why = repo_path_problem(path) or etag_problem(file.etag)
        if why is None and (not isinstance(file.size, int) or file.size < 0):
            why = "size is not a whole number"
        if why:
            problems.append(f"{path!r}: {why}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise HubDataError(f"{spec.repo_type} {spec.repo_id}@{spec.revision}: the hub listed unsafe entries, "
                           f"nothing was written: {shown}")
