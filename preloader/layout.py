"""Where things live: the hub cache layout, and our own state beside it.

```
<cache>/models--org--name/blobs/<etag>                huggingface_hub's
<cache>/models--org--name/snapshots/<commit>/<file>   huggingface_hub's (links to blobs)
<cache>/models--org--name/refs/<revision>             huggingface_hub's format, we write it too
<cache>/models--org--name/snapshots/latest            -> <commit>, ours
<state>/complete/models--org--name/<commit>.json      completion record, ours
<state>/locks/models--org--name.lock                  repo lock, ours
<state>/used/models--org--name/<commit>               when a service last got this snapshot, ours
<state>/partial/models--org--name/<commit>            a download started and not yet complete, ours
<link-root>/model/org/name/<revision>                 -> the snapshot, ours
```
Pure path arithmetic: nothing here touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .spec import RepoSpec

LATEST = "latest"


def repo_folder_name(repo_type: str, repo_id: str) -> str:
    """huggingface_hub's folder name: `models--org--name`."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def parse_folder_name(name: str) -> tuple[str, str] | None:
    """(repo_type, repo_id) of a cache folder name, or None if it is not one."""
    prefix, sep, rest = name.partition("--")
    if not sep or prefix not in ("models", "datasets", "spaces") or not rest:
        return None
    return prefix[:-1], rest.replace("--", "/")


@dataclass(frozen=True)
class Layout:
    cache_dir: Path
    state_dir: Path
    link_root: Path | None = None

    def repo_dir(self, spec: RepoSpec) -> Path:
        return self.cache_dir / repo_folder_name(spec.repo_type, spec.repo_id)

    def snapshot_dir(self, spec: RepoSpec, commit: str) -> Path:
        return self.repo_dir(spec) / "snapshots" / commit

    def ref_file(self, spec: RepoSpec, revision: str | None = None) -> Path:
        return self.repo_dir(spec) / "refs" / (revision or spec.revision)

    def blobs_dir(self, spec: RepoSpec) -> Path:
        return self.repo_dir(spec) / "blobs"

    def latest_link(self, spec: RepoSpec) -> Path:
        return self.repo_dir(spec) / "snapshots" / LATEST

    def alias_link(self, spec: RepoSpec) -> Path | None:
        if self.link_root is None:
            return None
        return self.link_root / spec.repo_type / spec.repo_id / spec.revision

    def record_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.state_dir / "complete" / repo_folder_name(spec.repo_type, spec.repo_id) / f"{commit}.json"

    def used_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.state_dir / "used" / repo_folder_name(spec.repo_type, spec.repo_id) / commit

    def partial_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.state_dir / "partial" / repo_folder_name(spec.repo_type, spec.repo_id) / commit

    def lock_file(self, spec: RepoSpec) -> Path:
        return self.state_dir / "locks" / (repo_folder_name(spec.repo_type, spec.repo_id) + ".lock")
