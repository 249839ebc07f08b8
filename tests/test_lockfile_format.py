"""The lock file's format (preloader/lockfile.py): what is refused and how it is said, round trips, and what
`preloader lock` prints as a change."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preloader.errors import LockRefusedError
from preloader.lockfile import LockedFile, LockedRepo, LockFile, changes, dumps, parse
from preloader.spec import RepoSpec

COMMIT, OTHER = "a" * 40, "b" * 40
SHA = "c" * 64


def entry(**overrides) -> dict:
    base = {"type": "model", "repo": "org/m", "revision": "main", "commit": COMMIT,
            "files": {"config.json": {"size": 2, "blob_id": "d" * 40}, "model.safetensors": {"size": 9, "sha256": SHA}}}
    return {**base, **overrides}


def doc(*entries) -> str:
    return json.dumps({"version": 1, "repos": list(entries)})


@pytest.mark.parametrize("text, message", [
    ("", "not JSON at line 1: not a lock file"),
    ("null", "not a JSON object: not a lock file"),
    ('{"repos": []}', "no version number: not a preloader lock file"),
    ('{"version": true, "repos": []}', "no version number: not a preloader lock file"),
    ('{"version": "1", "repos": []}', "no version number: not a preloader lock file"),
    ('{"version": 1}', "`repos` is not a list"),
    ("[" * 100_000, "not a lock file: JSON nested too deeply"),
    (doc(entry(type="space")), "repos[1].type 'space': expected model or dataset"),
    (doc(entry(repo="../etc")), "repos[1].repo '../etc': expected user/name"),
    (doc(entry(commit="main")), "repos[1].commit 'main': expected a 40-hex commit id"),
    (doc(entry(commit=1)), "repos[1].commit 1: expected a 40-hex commit id"),
    (doc(entry(files={})), "repos[1].files: expected an object of path: {size, sha256 or blob_id}"),
    (doc(entry(files={"/etc/passwd": {"size": 1, "blob_id": COMMIT}})),
     "repos[1].files['/etc/passwd']: unsafe path (absolute path)"),
    (doc(entry(files={"a\\b": {"size": 1, "blob_id": COMMIT}})),
     "repos[1].files['a\\\\b']: unsafe path (control character, NUL or backslash)"),
    (doc(entry(files={"a": {"size": -1, "blob_id": COMMIT}})), "repos[1].files['a'].size -1: expected a whole number "
                                                               "of bytes"),
    (doc(entry(files={"a": {"size": 1}})), "repos[1].files['a']: expected one of sha256 and blob_id"),
    (doc(entry(files={"a": {"size": 1, "sha256": SHA, "blob_id": COMMIT}})),
     "repos[1].files['a']: expected one of sha256 and blob_id"),
    (doc(entry(files={"a": {"size": 1, "sha256": COMMIT}})),
     "repos[1].files['a'].sha256 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa': expected 64 lower-case hex"),
    (doc(entry(), entry()), "repos[2]: model:org/m@main is locked twice"),
    (doc(entry(revision=OTHER)), f"repos[1].commit '{COMMIT}': the revision is a commit, and another one"),
])
def test_refused_with_the_reason(text, message):
    with pytest.raises(ValueError) as raised:
        parse(text)
    assert str(raised.value) == message


def test_many_problems_make_one_short_line():
    bad = doc(*[entry(repo=f"bad{n}") for n in range(1000)])
    with pytest.raises(ValueError) as raised:
        parse(bad)
    assert str(raised.value).endswith("; ... and 997 more") and "\n" not in str(raised.value)


def test_unknown_keys_are_ignored_and_round_trips_are_exact():
    lock = parse(json.dumps({"version": 1, "comment": "pinned for prod", "repos": [entry(extra=1)]}))
    assert dumps(parse(dumps(lock))) == dumps(lock)
    [repo] = lock.repos
    assert repo.commit == COMMIT and [f.kind for f in repo.files] == ["blob_id", "sha256"]


def test_a_repo_the_lock_does_not_hold_is_refused_by_name():
    lock = parse(doc(entry()), "/etc/p.lock")
    assert lock.commit(RepoSpec("model", "org/m", "main")) == COMMIT
    with pytest.raises(LockRefusedError) as raised:
        lock.commit(RepoSpec("model", "org/m", "dev"))
    assert str(raised.value) == ("model:org/m@dev is in the plan but not in the lock file /etc/p.lock (it holds "
                                 "model:org/m@main); run `preloader lock` to add it, or take it out of the plan")
    assert raised.value.exit_code == 79


def test_changes():
    old = parse(doc(entry(), entry(repo="org/gone")))
    files = {"config.json": {"size": 3, "blob_id": "e" * 40}, "new.txt": {"size": 1, "blob_id": "f" * 40}}
    new = parse(doc(entry(commit=OTHER, files=files), entry(repo="org/new")))
    assert changes(old, new) == [
        f"changed model:org/m@main: {COMMIT[:12]} -> {OTHER[:12]} (3 file changes)",
        f"  ~ config.json (blob_id {'d' * 12} -> {'e' * 12}, 2 -> 3 bytes)",
        "  - model.safetensors",
        "  + new.txt (1 bytes)",
        f"added model:org/new@main at {COMMIT[:12]} (2 files)",
        f"removed model:org/gone@main (was {COMMIT[:12]})",
    ]
    assert changes(new, new) == []


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4),
                              max_leaves=30).map(lambda value: json.dumps({"version": 1, "repos": value}))))
def test_any_input_is_a_lock_or_one_line_value_error(data):
    try:
        lock = parse(data)
    except ValueError as error:
        assert "\n" not in str(error) and len(str(error)) < 2000
        return
    assert isinstance(lock, LockFile)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_./ -]{0,20}[a-z]", fullmatch=True),
                          st.integers(0, 2**40), st.sampled_from(["1" * 40, "2" * 64])), min_size=1, max_size=8,
                unique_by=lambda item: item[0]))
def test_what_dumps_writes_parses_back_the_same(items):
    files = tuple(sorted((LockedFile(path, size, digest) for path, size, digest in items), key=lambda f: f.path))
    if any(part in ("", ".", "..") for f in files for part in f.path.split("/")):
        return
    lock = LockFile((LockedRepo("dataset", "org/d", "v1.0", COMMIT, files),))
    assert parse(dumps(lock)) == lock


def test_a_fifo_or_a_folder_is_refused_without_blocking(tmp_path):
    from preloader.lockfile import read

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="^not a regular file: not a lock file$"):
        read(tmp_path / "fifo")
    with pytest.raises(ValueError, match="^not a regular file: not a lock file$"):
        read(tmp_path)
