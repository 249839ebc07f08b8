"""Where things live: the hub cache layout, and our own state beside it. Every path we read or write.

```
<cache>/models--org--name/blobs/<etag>                huggingface_hub's
<cache>/models--org--name/blobs/<etag>.incomplete     a blob being downloaded (huggingface_hub's name)
<cache>/models--org--name/snapshots/<commit>/<file>   huggingface_hub's (links to blobs)
<cache>/models--org--name/refs/<revision>             huggingface_hub's format, we write it too
<cache>/models--org--name/snapshots/latest            -> <commit>, ours (PRELOADER_LATEST=snapshots, default)
<cache>/models--org--name/latest                      -> snapshots/<commit>, ours (PRELOADER_LATEST=repo)
<cache>/models--org--name/trees/<commit>.json         the commit's file listing, huggingface_hub 2.x's format
<cache>/blobs/<2 hex>/<xet hash>                      huggingface_hub 2.x's shared blob store (see store.py)
<cache>/.locks/models--org--name/<etag>.lock          a blob's lock (huggingface_hub's, we take it too)
<state>/complete/models--org--name/<commit>.json      completion record, ours
<state>/locks/models--org--name.lock                  repo lock, ours (.lease when PRELOADER_LOCK is a lease)
<state>/used/models--org--name/<commit>               when a service last got this snapshot, ours
<state>/partial/models--org--name/<commit>            a download started and not yet complete, ours
<state>/transfers/models--org--name/<etag>.json       which ranges of a partial blob are on disk, ours
<state>/manifests/<plan key>.json                     the manifest handed to a service, ours
<link-root>/model/org/name/<revision>                 -> the snapshot, ours
<datasets cache>/...                                  `datasets`' prepared copies (--prepare-datasets)
```
Path arithmetic: nothing here touches the disk, except `Layout.build` resolving where the state dir and
the link root really are (see `check_outside_hub`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from ..errors import ConfigError
from ..spec import RepoSpec

LATEST = "latest"
LatestPlace = Literal["snapshots", "repo", "off"]
LATEST_PLACES: tuple[LatestPlace, ...] = get_args(LatestPlace)
PARTIAL_SUFFIX = ".incomplete"
STATE_KINDS = ("complete", "used", "partial", "transfers")  # our per-repo folders under the state dir


def repo_folder_name(repo_type: str, repo_id: str) -> str:
    """huggingface_hub's folder name: `models--org--name`."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def parse_folder_name(name: str) -> tuple[str, str] | None:
    """(repo_type, repo_id) of a cache folder name, or None if it is not one."""
    prefix, sep, rest = name.partition("--")
    if not sep or prefix not in ("models", "datasets", "spaces") or not rest:
        return None
    return prefix[:-1], rest.replace("--", "/")


HUB = "hub"  # huggingface_hub's rule: HF_HUB_CACHE defaults to $HF_HOME/hub


def hf_home_of(cache_dir: Path) -> Path | None:
    """HF_HOME of a hub cache: the parent of a cache dir named `hub` (huggingface_hub's own rule), else None.
    The one place that rule is written: the state dir, the datasets cache and the service's HF_HOME follow it."""
    return cache_dir.parent if cache_dir.name == HUB else None


def default_state_dir(cache_dir: Path) -> Path:
    """Our own files live outside the hub tree so `hf cache` tools see only theirs.

    Beside a cache named `hub` (the HF_HOME layout) that is `HF_HOME/preloader`.
    Otherwise the volume root may be the cache itself, and the only place in it
    that huggingface_hub's scanner skips is `.locks/`.
    """
    home = hf_home_of(cache_dir)
    return home / "preloader" if home is not None else cache_dir / ".locks" / "preloader"


def check_outside_hub(cache: Path, path: Path, what: str) -> None:
    """Our own folders must not lie in the hub tree: `hf cache ls`/`scan_cache_dir` report every folder there
    that is not a repo as corrupted. `<cache>/.locks/` is the one place its scanner skips (the default state
    dir when the cache is not named `hub`). Compared as given and as resolved, so a symlink cannot hide it."""
    for mine, hub in ((path, cache), (Path(os.path.realpath(path)), Path(os.path.realpath(cache)))):
        if (mine == hub or hub in mine.parents) and hub / ".locks" not in mine.parents:
            raise ConfigError(
                f"{what} {path} lies inside the hub cache {cache}, where `hf cache` reports it as a corrupted "
                f"repo; put it outside the cache or under {cache / '.locks'}/"
            )


def absolute(path: str | Path) -> Path:
    """An absolute path without resolving symlinks: a volume may be mounted through one."""
    return Path(os.path.abspath(os.path.expanduser(path)))


@dataclass(frozen=True)
class Layout:
    cache_dir: Path
    state_dir: Path
    link_root: Path | None = None
    latest: LatestPlace = "snapshots"
    datasets_cache: Path | None = None  # `datasets`' own prepared copies (HF_DATASETS_CACHE)

    @classmethod
    def build(cls, cache_dir: str | Path, state_dir: str | Path | None = None, link_root: str | Path | None = None,
              latest: LatestPlace = "snapshots", datasets_cache: str | Path | None = None) -> Layout:
        """The one way to a Layout: absolute paths; the state dir, link root and datasets cache defaulting
        as documented."""
        cache = absolute(cache_dir)
        state = absolute(state_dir) if state_dir else default_state_dir(cache)
        if state_dir:
            check_outside_hub(cache, state, "the state dir (PRELOADER_STATE_DIR, --state-dir, state_dir=)")
        if link_root:
            check_outside_hub(cache, absolute(link_root),
                              "the link root (PRELOADER_LINK_ROOT, --link-root, link_root=)")
        home = hf_home_of(cache)
        datasets = absolute(datasets_cache) if datasets_cache else (home or state) / "datasets"
        return cls(cache, state, absolute(link_root) if link_root else state / "links", latest, datasets)

    @property
    def roots(self) -> tuple[Path, ...]:
        """Where anything we write or delete must really lie: the cache, the state dir, the link root."""
        return tuple(root for root in (self.cache_dir, self.state_dir, self.link_root) if root is not None)

    def nested_roots(self) -> list[tuple[Path, Path]]:
        """(root, the root holding it) where one lies inside another (the default state dir is
        `<cache>/.locks/preloader`, the default link root `<state>/links`), and `<cache>/.locks`: a link planted
        on the way there would move our state, or huggingface_hub's locks, out of the cache."""
        pairs = [(self.cache_dir / ".locks", self.cache_dir)]
        return pairs + [(inner, outer) for inner in self.roots for outer in self.roots if outer in inner.parents]

    def guarded_folders(self, spec: RepoSpec) -> list[tuple[Path, Path]]:
        """(folder, root) for every folder of one repo we read through, write in or delete in: each must
        really lie inside its root, or the repo is reported unsafe and nothing is done through it."""
        repo = self.repo_dir(spec)
        hub_folders = (repo, *(repo / name for name in ("blobs", "snapshots", "refs", "trees")),
                       self.blob_lock(spec, "x").parent)
        folders = self.nested_roots() + [(folder, self.cache_dir) for folder in hub_folders]
        folders += [(self.state_folder(kind, spec), self.state_dir) for kind in STATE_KINDS]
        folders.append((self.state_dir / "locks", self.state_dir))
        alias = self.alias_dir(spec)
        return folders + ([(alias, self.link_root)] if alias is not None and self.link_root is not None else [])

    @property
    def hf_home(self) -> Path | None:
        """HF_HOME for consumers: the parent of a cache dir named `hub` (huggingface_hub's own rule)."""
        return hf_home_of(self.cache_dir)

    # -- huggingface_hub's tree -------------------------------------------------------------------
    def repo_dir(self, spec: RepoSpec) -> Path:
        return self.cache_dir / repo_folder_name(spec.repo_type, spec.repo_id)

    def snapshots_dir(self, spec: RepoSpec) -> Path:
        return self.repo_dir(spec) / "snapshots"

    def snapshot_dir(self, spec: RepoSpec, commit: str) -> Path:
        return self.snapshots_dir(spec) / commit

    def refs_dir(self, spec: RepoSpec) -> Path:
        return self.repo_dir(spec) / "refs"

    def ref_file(self, spec: RepoSpec, revision: str | None = None) -> Path:
        return self.refs_dir(spec) / (revision or spec.revision)

    def blobs_dir(self, spec: RepoSpec) -> Path:
        return self.repo_dir(spec) / "blobs"

    def blob(self, spec: RepoSpec, etag: str) -> Path:
        return self.blobs_dir(spec) / etag

    def partial_blob(self, spec: RepoSpec, etag: str) -> Path:
        return self.blobs_dir(spec) / (etag + PARTIAL_SUFFIX)

    def blob_lock(self, spec: RepoSpec, etag: str) -> Path:
        return self.cache_dir / ".locks" / repo_folder_name(spec.repo_type, spec.repo_id) / f"{etag}.lock"

    def latest_link(self, spec: RepoSpec) -> Path | None:
        """Where `latest` lives with this layout's placement; None when it is off."""
        return self.latest_links(spec).get(self.latest)

    def latest_links(self, spec: RepoSpec) -> dict[str, Path]:
        """Every placement `latest` can have: one left by an earlier setting is found and tidied too."""
        return {"snapshots": self.snapshots_dir(spec) / LATEST, "repo": self.repo_dir(spec) / LATEST}

    def latest_target(self, spec: RepoSpec, commit: str) -> str:
        """What the `latest` link holds: relative, so the volume can be mounted anywhere."""
        return commit if self.latest == "snapshots" else f"snapshots/{commit}"

    def tree_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.repo_dir(spec) / "trees" / f"{commit}.json"

    # -- ours -------------------------------------------------------------------------------------
    def alias_link(self, spec: RepoSpec) -> Path | None:
        if self.link_root is None:
            return None
        return self.link_root / spec.repo_type / spec.repo_id / spec.revision

    def alias_dir(self, spec: RepoSpec) -> Path | None:
        """The folder of one repo's alias links."""
        return None if self.link_root is None else self.link_root / spec.repo_type / spec.repo_id

    def state_folder(self, kind: str, spec: RepoSpec) -> Path:
        """`<state>/<kind>/<repo folder>`, kind one of STATE_KINDS."""
        return self.state_dir / kind / repo_folder_name(spec.repo_type, spec.repo_id)

    def record_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.state_folder("complete", spec) / f"{commit}.json"

    def used_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.state_folder("used", spec) / commit

    def partial_file(self, spec: RepoSpec, commit: str) -> Path:
        return self.state_folder("partial", spec) / commit

    def range_map(self, spec: RepoSpec, etag: str) -> Path:
        return self.state_folder("transfers", spec) / f"{etag}.json"

    def lock_file(self, spec: RepoSpec, *, lease: bool = False) -> Path:
        """The repo lock: a flock file, or (`lease`) the marker of a lease."""
        name = repo_folder_name(spec.repo_type, spec.repo_id)
        return self.state_dir / "locks" / (name + (".lease" if lease else ".lock"))

    def manifest_file(self, key: str) -> Path:
        return self.state_dir / "manifests" / f"{key}.json"
