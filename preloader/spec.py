"""Parsing `user/name[:revision]` lists, as RunPod's env vars carry them.

Pure functions: no I/O. Every bad entry is reported, not just the first, so a
user fixes a long list in one go.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from .errors import ConfigError, listed
from .logs import shown

REPO_TYPES = ("model", "dataset")
DEFAULT_REVISION = "main"

# The hub's own limit on a repo name (huggingface_hub.utils.validate_repo_id).
MAX_NAME_LENGTH = 96
# git refuses longer ref names on most filesystems; the hub follows git.
MAX_REVISION_LENGTH = 255

_PART = re.compile(r"[A-Za-z0-9._-]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_ANY_CASE_COMMIT = re.compile(r"[0-9a-fA-F]{40}")
# What `git check-ref-format` refuses inside a ref name.
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# GGUF quantization types as llama.cpp and the uploaders that follow it name them (Q4_K_M, IQ2_XS, UD-Q4_K_XL).
QUANT = (r"(?:UD-)?(?:I?Q[1-8]_(?:[0-9](?:_[0-9]_[0-9])?|K(?:_[A-Z]{1,2})?|[A-Z]{1,3})|TQ[12]_0"
         r"|B?F16|F32|MXFP4(?:_MOE)?)")
_QUANT_NAME = re.compile(QUANT, re.IGNORECASE)


@dataclass(frozen=True)
class RepoSpec:
    """One requested repo: type, `user/name` and revision (branch, tag or commit)."""

    repo_type: str
    repo_id: str
    revision: str = DEFAULT_REVISION
    # A GGUF quantization named in place of a revision (`user/name:Q4_K_M`); "" once the hub said the revision
    # is a branch or tag of that name.
    quant: str | None = None

    @property
    def is_commit(self) -> bool:
        return is_commit(self.revision)

    @property
    def names_quant(self) -> bool:
        """The revision could be a GGUF quantization type: the hub says whether a branch or tag of that name
        exists (it wins), else it names the quantization at `main`."""
        return (self.quant is None and self.repo_type == "model" and not self.is_commit
                and is_quant_name(self.revision))

    def as_quant(self) -> RepoSpec:
        """The reading of `user/name:Q4_K_M` with no branch or tag of that name: `main`, that quantization."""
        return RepoSpec(self.repo_type, self.repo_id, DEFAULT_REVISION, self.revision)

    def __str__(self) -> str:
        quant = f" ({self.quant})" if self.quant else ""
        return f"{self.repo_type}:{self.repo_id}@{self.revision}{quant}"


def is_quant_name(name: str) -> bool:
    """True when `name` reads as a GGUF quantization type (case-insensitive): Q4_K_M, Q8_0, IQ2_XS, BF16, ..."""
    return _QUANT_NAME.fullmatch(name) is not None


def is_commit(revision: str) -> bool:
    """True for a full 40-hex commit id, which never moves and needs no lookup."""
    return _COMMIT.fullmatch(revision) is not None


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not a valid `user/name`, or None when it is."""
    if "/" not in repo_id:
        return 'no "/" between user and name'
    if repo_id.count("/") > 1:
        return 'more than one "/"'
    for what, part in zip(("user", "name"), repo_id.split("/"), strict=True):
        if not part:
            return f"empty {what}"
        if not _PART.fullmatch(part):
            return f"{what} has characters other than letters, digits, '-', '_' and '.'"
        if ".." in part or "--" in part:
            return f"{what} contains '..' or '--'"
        if part[0] in "-." or part[-1] in "-.":
            return f"{what} starts or ends with '-' or '.'"
        if len(part) > MAX_NAME_LENGTH:
            return f"{what} is longer than {MAX_NAME_LENGTH} characters"
    return None


def normal_revision(revision: str) -> str:
    """A commit id in upper or mixed case is the same commit: lower case, as git and the hub write it."""
    return revision.lower() if _ANY_CASE_COMMIT.fullmatch(revision) else revision


def revision_problem(revision: str) -> str | None:
    """Why `revision` is not a valid branch, tag or commit name, or None when it is."""
    if not revision:
        return "empty revision"
    if len(revision) > MAX_REVISION_LENGTH:
        return f"revision is longer than {MAX_REVISION_LENGTH} characters"
    if _BAD_REF_CHARS.search(revision):
        return "revision has a space, control character or one of ~^:?*[\\"
    if ".." in revision or "//" in revision or "@{" in revision or revision == "@":
        return "revision contains '..', '//' or '@{'"
    if revision[0] in "-/" or revision[-1] in "/.":
        return "revision starts with '-' or '/', or ends with '/' or '.'"
    if any(part.startswith(".") or part.endswith(".lock") for part in revision.split("/")):
        return "a part of the revision starts with '.' or ends with '.lock'"
    return None


_TYPE_PREFIXES = (("models/", "model"), ("datasets/", "dataset"), ("spaces/", "space"))


def _split(item: str, repo_type: str) -> tuple[str, str, str | None]:
    """(repo type, `user/name`, revision or None) of one item in any form we accept:

    `user/name[:revision]`; `hf://[models/|datasets/]user/name[@revision]` (huggingface_hub's URIs);
    `https://<host>/[datasets/]user/name[:revision]` (a hub page, the form RunPod's model reference uses).
    """
    if item.startswith("hf://"):
        rest, mark = item[len("hf://"):], "@"
    elif item.startswith(("https://", "http://")):
        parts = urlsplit(item)
        if not parts.netloc or parts.query or parts.fragment:
            raise ValueError("a URL needs a host and a path user/name[:revision], no query or fragment")
        rest, mark = parts.path.strip("/"), ":"
    else:
        return (repo_type, *_revision_split(item, ":"))
    kind = repo_type if item.startswith("hf://") else "model"
    for prefix, name in _TYPE_PREFIXES:
        if rest.startswith(prefix):
            kind, rest = name, rest[len(prefix):]
    return (kind, *_revision_split(rest, mark))


def _revision_split(text: str, mark: str) -> tuple[str, str | None]:
    repo_id, sep, revision = text.partition(mark)
    return repo_id, (revision if sep else None)


def parse_item(item: str, repo_type: str, *, typed: bool = False) -> tuple[RepoSpec | None, str | None]:
    """Parse one item (see `_split` for the forms); return the spec or the reason it is bad.

    `typed`: a form that names its type (`hf://datasets/...`, `https://<host>/datasets/...`) is that type,
    `repo_type` being only the default: how SPEC arguments read when `--dataset` is not given."""
    spec, _, problem = _parse(item, repo_type, typed)
    return spec, problem


def _parse(item: str, repo_type: str, typed: bool = False) -> tuple[RepoSpec | None, bool, str | None]:
    """The spec, whether it named a revision, or the reason it is bad."""
    item = item.strip()
    if not item:
        return None, False, "empty item"
    try:
        kind, repo_id, revision = _split(item, repo_type)
    except ValueError as error:
        return None, False, str(error)
    if typed and kind in REPO_TYPES:
        repo_type = kind
    if kind != repo_type:
        what = "spaces are not preloaded" if kind == "space" else f"names a {kind}, not a {repo_type}"
        return None, False, what
    named = revision is not None
    revision = normal_revision(revision) if named else DEFAULT_REVISION
    problem = repo_id_problem(repo_id) or revision_problem(revision)
    if problem:
        return None, False, problem
    return RepoSpec(repo_type, repo_id, revision), named, None


def parse_items(items: list[str], repo_type: str, source: str, *, typed: bool = False
                ) -> tuple[list[RepoSpec], list[str]]:
    """Parse items one by one; return the good specs and one message per bad item.

    `source` names where the items came from (an env var or a flag) for the messages.
    """
    specs: list[RepoSpec] = []
    problems: list[str] = []
    for position, item in enumerate(items, start=1):
        spec, problem = parse_item(item, repo_type, typed=typed)
        if problem:
            problems.append(f"{source} item {position} {shown(item.strip())}: {problem}")
        else:
            specs.append(spec)
    return specs, problems


def parse_given(value: object, repo_type: str, source: str) -> tuple[list[RepoSpec], list[str]]:
    """Parse what the Python API was given for a list of repos: a list (any iterable) of strings in the forms
    the env vars take, or of RepoSpecs (checked as strictly as strings); one message per bad item."""
    if isinstance(value, str):
        return parse_list(value, repo_type, source)
    if isinstance(value, RepoSpec):
        value = [value]
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        return [], [f"{source}={shown(repr(value), quote=False)}: expected a string of comma-separated "
                    "user/name[:revision] or a list of them"]
    specs: list[RepoSpec] = []
    problems: list[str] = []
    for position, item in enumerate(value, start=1):
        if isinstance(item, RepoSpec):
            if isinstance(item.revision, str) and item.revision != normal_revision(item.revision):
                item = replace(item, revision=normal_revision(item.revision))
            problem = spec_problem(item, repo_type)
            item_text = shown(str(item))
        elif isinstance(item, str):
            spec, problem = parse_item(item, repo_type)
            item_text = shown(item.strip())
        else:
            problem, item_text = "expected a string like user/name[:revision]", shown(repr(item), quote=False)
        if problem:
            problems.append(f"{source} item {position} {item_text}: {problem}")
        else:
            specs.append(item if isinstance(item, RepoSpec) else spec)
    return specs, problems


def spec_problem(spec: RepoSpec, repo_type: str) -> str | None:
    """Why a RepoSpec built in code is not one that parsing `repo_type` items could have given, or None."""
    if spec.repo_type != repo_type:
        kind = spec.repo_type if spec.repo_type in REPO_TYPES else shown(str(spec.repo_type))
        return f"names a {kind}, not a {repo_type}"
    if not isinstance(spec.repo_id, str) or not isinstance(spec.revision, str):
        return "repo_id and revision must be strings"
    return repo_id_problem(spec.repo_id) or revision_problem(spec.revision)


def parse_list(text: str, repo_type: str, source: str) -> tuple[list[RepoSpec], list[str]]:
    """Parse a comma-separated list, as in RUNPOD_HUGGINGFACE_MODEL; blank text is no repos."""
    if not text.strip():
        return [], []
    return parse_items(text.split(","), repo_type, source)


def dedupe(specs: list[RepoSpec]) -> tuple[RepoSpec, ...]:
    """Drop repeated specs, keeping the first of each in order."""
    return tuple(dict.fromkeys(specs))


def parse_specs(items: list[str], repo_type: str, source: str = "argument", *, typed: bool = False
                ) -> tuple[RepoSpec, ...]:
    """Parse specs given one per argument (CLI commands); raise ConfigError listing every bad one (the first
    few, and how many more). `typed`: see `parse_item`."""
    specs, problems = parse_items(items, repo_type, source, typed=typed)
    if problems:
        raise ConfigError("invalid repo spec: " + listed(problems) + "; expected user/name[:revision]")
    return dedupe(specs)


_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\\]")
_HEX_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def repo_path_problem(path: str) -> str | None:
    """Why a file path from a hub listing is unsafe to create under a snapshot, or None."""
    if not path or len(path) > 4096:
        return "empty or too long"
    if _UNSAFE_PATH.search(path):
        return "control character, NUL or backslash"
    if path.startswith("/"):
        return "absolute path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "'.', '..' or empty path component"
    return None


def etag_problem(etag: str) -> str | None:
    """Why an etag cannot name a blob file (we accept git blob ids and sha256 only), or None."""
    return None if _HEX_ETAG.fullmatch(etag or "") else "etag is not a 40- or 64-hex id"


def parse_removals(items: list[str], repo_type: str, revision: str | None = None, *, typed: bool | None = None
                   ) -> tuple[tuple[RepoSpec, ...], tuple[RepoSpec, ...]]:
    """What `rm` is asked to remove: (whole repos, single revisions).

    `user/name` names the whole repo; `user/name:revision`, or any item when `revision` is
    given, only that revision. ConfigError listing every bad item. `typed` (default: when `repo_type` is the
    default, model): an `hf://datasets/...` item is a dataset, as among any SPEC arguments.
    """
    typed = repo_type == "model" if typed is None else typed
    parse_specs(items, repo_type, typed=typed)  # every bad item in one error
    if revision is not None and revision_problem(revision):
        raise ConfigError(f"invalid --revision {shown(revision)}: {revision_problem(revision)}")
    revision = None if revision is None else normal_revision(revision)
    whole: list[RepoSpec] = []
    single: list[RepoSpec] = []
    for item in items:
        spec, named, _ = _parse(item, repo_type, typed)
        if revision is not None:
            single.append(RepoSpec(spec.repo_type, spec.repo_id, revision))
        else:
            (single if named else whole).append(spec)
    return dedupe(whole), dedupe(single)
