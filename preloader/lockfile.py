"""The lock file's format (docs/lockfile.md): for each repo of a plan, its commit and every selected file's
size and digest. Parsing, writing and comparing lock files; no I/O beyond reading the one file.

A digest is the hub's etag of the file, the name its blob has in the cache: the sha256 of an LFS file, the
git blob id of any other. The download checks every file against it, so a lock holds what a preload already
proves. Version 1 is stable: a reader refuses any other version rather than guess at its meaning.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import LockRefusedError, listed
from .logs import shown
from .spec import REPO_TYPES, RepoSpec, is_commit, repo_id_problem, repo_path_problem, revision_problem

VERSION = 1
MAX_BYTES = 32 * 1024 * 1024  # a lock of 100,000 files is ~15 MB; anything past this is not a lock file
DEFAULT_NAME = "preloader.lock"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOB_ID = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class LockedFile:
    path: str
    size: int
    digest: str  # sha256 (64 hex) of an LFS file, git blob id (40 hex) of any other

    @property
    def kind(self) -> str:
        """The digest's field name in the file: `sha256` or `blob_id`."""
        return "sha256" if len(self.digest) == 64 else "blob_id"


@dataclass(frozen=True)
class LockedRepo:
    repo_type: str
    repo_id: str
    revision: str  # as the plan asked for it: a branch, a tag or a commit
    commit: str
    files: tuple[LockedFile, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return self.repo_type, self.repo_id, self.revision

    @property
    def spec(self) -> RepoSpec:
        return RepoSpec(self.repo_type, self.repo_id, self.revision)

    def by_path(self) -> dict[str, LockedFile]:
        return {f.path: f for f in self.files}


@dataclass(frozen=True)
class LockFile:
    """A parsed lock file; `path` is where it was read from (for messages), empty for one made in memory."""

    repos: tuple[LockedRepo, ...]
    path: str = ""

    def __repr__(self) -> str:  # Settings shows it: the path, not thousands of digests
        return f"LockFile({self.path!r}, {len(self.repos)} repos)"

    def find(self, spec: RepoSpec) -> LockedRepo | None:
        """The entry of the revision as the plan wrote it: `user/name:Q4_K_M` read as a quantization at `main`
        is still the entry `preloader lock` wrote for `Q4_K_M`."""
        for revision in ([spec.quant] if spec.quant else []) + [spec.revision]:
            key = (spec.repo_type, spec.repo_id, revision)
            found = next((repo for repo in self.repos if repo.key == key), None)
            if found is not None:
                return found
        return None

    def entry(self, spec: RepoSpec) -> LockedRepo:
        """The entry for `spec`; LockRefusedError (79) when the lock does not hold it."""
        found = self.find(spec)
        if found is None:
            held = ", ".join(str(repo.spec) for repo in self.repos[:5]) or "nothing"
            raise LockRefusedError(f"{spec} is in the plan but not in the lock file {self.path} (it holds {held}); "
                                   "run `preloader lock` to add it, or take it out of the plan")
        return found

    def commit(self, spec: RepoSpec) -> str:
        return self.entry(spec).commit


def read(path: str | Path) -> LockFile:
    """The lock file at `path`; ValueError (its reason, one line) when it is unreadable or not a valid lock."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the start, a device never end
            raise ValueError("not a regular file: not a lock file")
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ValueError(error.strerror or str(error)) from None
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 2**20} MiB: not a lock file")
    return parse(data, str(path))


def parse(data: bytes | str, path: str = "") -> LockFile:
    """A lock file's bytes as a LockFile; ValueError naming every problem (the first few) otherwise."""
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text: not a lock file") from None
    except RecursionError:
        raise ValueError("not a lock file: JSON nested too deeply") from None
    except ValueError as error:
        where = f" at line {error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise ValueError(f"not JSON{where}: not a lock file") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object: not a lock file")
    version = document.get("version")
    if type(version) is not int:
        raise ValueError("no version number: not a preloader lock file")
    if version != VERSION:
        raise ValueError(f"version {shown(str(version), quote=False)}: this preloader reads version {VERSION}; "
                         "use the preloader that wrote it, or run `preloader lock` again")
    entries = document.get("repos")
    if not isinstance(entries, list):
        raise ValueError("`repos` is not a list")
    problems: list[str] = []
    repos = []
    seen = set()
    for index, entry in enumerate(entries, start=1):
        repo = _repo(entry, f"repos[{index}]", problems)
        if repo is None:
            continue
        if repo.key in seen:
            problems.append(f"repos[{index}]: {repo.spec} is locked twice")
        seen.add(repo.key)
        repos.append(repo)
    if problems:
        raise ValueError(listed(problems, first=3))
    return LockFile(tuple(repos), path)


def _repo(entry: object, where: str, problems: list[str]) -> LockedRepo | None:
    if not isinstance(entry, dict):
        problems.append(f"{where} is not an object")
        return None
    kind, repo_id, revision, commit, files = (entry.get(k) for k in ("type", "repo", "revision", "commit", "files"))
    before = len(problems)
    if kind not in REPO_TYPES:
        problems.append(f"{where}.type {_shown(kind)}: expected model or dataset")
    if not isinstance(repo_id, str) or repo_id_problem(repo_id):
        problems.append(f"{where}.repo {_shown(repo_id)}: expected user/name")
    if not isinstance(revision, str) or revision_problem(revision):
        problems.append(f"{where}.revision {_shown(revision)}: expected a branch, tag or commit")
    if not isinstance(commit, str) or not is_commit(commit):
        problems.append(f"{where}.commit {_shown(commit)}: expected a 40-hex commit id")
    if isinstance(revision, str) and is_commit(revision) and isinstance(commit, str) and commit != revision:
        problems.append(f"{where}.commit {_shown(commit)}: the revision is a commit, and another one")
    if not isinstance(files, dict) or not files:
        problems.append(f"{where}.files: expected an object of path: {{size, sha256 or blob_id}}")
    if len(problems) > before:
        return None
    locked = []
    for path, info in files.items():
        file = _file(path, info, f"{where}.files[{_shown(path)}]", problems)
        if file is not None:
            locked.append(file)
    if len(problems) > before:
        return None
    return LockedRepo(kind, repo_id, revision, commit, tuple(sorted(locked, key=lambda f: f.path)))


def _file(path: str, info: object, where: str, problems: list[str]) -> LockedFile | None:
    why = repo_path_problem(path)
    if why:
        problems.append(f"{where}: unsafe path ({why})")
        return None
    if not isinstance(info, dict):
        problems.append(f"{where}: expected {{size, sha256 or blob_id}}")
        return None
    size = info.get("size")
    if type(size) is not int or size < 0:
        problems.append(f"{where}.size {_shown(size)}: expected a whole number of bytes")
        return None
    digests = [(name, info[name]) for name in ("sha256", "blob_id") if name in info]
    if len(digests) != 1:
        problems.append(f"{where}: expected one of sha256 and blob_id")
        return None
    name, digest = digests[0]
    pattern = _SHA256 if name == "sha256" else _BLOB_ID
    if not isinstance(digest, str) or not pattern.fullmatch(digest):
        problems.append(f"{where}.{name} {_shown(digest)}: expected {64 if name == 'sha256' else 40} lower-case hex")
        return None
    return LockedFile(path, size, digest)


def _shown(value: object) -> str:
    return shown(value) if isinstance(value, str) else shown(json.dumps(value) if _jsonable(value) else repr(value),
                                                             quote=False)


def _jsonable(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float))


def dumps(lock: LockFile) -> str:
    """The file's text: stable (sorted files, one per line), so that a lock diffs well in review."""
    parts = []
    for repo in lock.repos:
        files = ",\n".join(f"        {json.dumps(f.path)}: {{\"size\": {f.size}, \"{f.kind}\": \"{f.digest}\"}}"
                           for f in repo.files)
        parts.append("    {\n"
                     f"      \"type\": {json.dumps(repo.repo_type)},\n"
                     f"      \"repo\": {json.dumps(repo.repo_id)},\n"
                     f"      \"revision\": {json.dumps(repo.revision)},\n"
                     f"      \"commit\": \"{repo.commit}\",\n"
                     "      \"files\": {\n" + files + "\n      }\n    }")
    return f"{{\n  \"version\": {VERSION},\n  \"repos\": [\n" + ",\n".join(parts) + "\n  ]\n}\n"


def changes(old: LockFile | None, new: LockFile) -> list[str]:
    """What `new` changes from `old`, a line per repo added, removed or moved and per file that differs;
    empty when nothing does."""
    before = {repo.key: repo for repo in (old.repos if old else ())}
    after = {repo.key: repo for repo in new.repos}
    lines = []
    for key, repo in after.items():
        was = before.get(key)
        if was is None:
            lines.append(f"added {repo.spec} at {repo.commit[:12]} ({len(repo.files)} files)")
            continue
        files = _file_changes(was, repo)
        if was.commit != repo.commit or files:
            lines.append(f"changed {repo.spec}: {was.commit[:12]} -> {repo.commit[:12]}"
                         + (f" ({len(files)} file changes)" if files else " (same files)"))
            lines.extend(f"  {line}" for line in files)
    lines.extend(f"removed {repo.spec} (was {repo.commit[:12]})" for key, repo in before.items() if key not in after)
    return lines


def _file_changes(was: LockedRepo, now: LockedRepo) -> list[str]:
    old, new = was.by_path(), now.by_path()
    lines = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a is None:
            lines.append(f"+ {path} ({b.size} bytes)")
        elif b is None:
            lines.append(f"- {path}")
        elif a != b:
            lines.append(f"~ {path} ({b.kind} {a.digest[:12]} -> {b.digest[:12]}, {a.size} -> {b.size} bytes)")
    return lines
