"""Publication by rename, and the check that no write leads out of the cache through a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from preloader.cache import atomic
from preloader.errors import UnsafePathError


def test_a_path_inside_the_root_is_allowed(tmp_path):
    (tmp_path / "hub" / "models--a--b").mkdir(parents=True)
    path = tmp_path / "hub" / "models--a--b" / "refs" / "main"
    assert atomic.ensure_inside(path, tmp_path / "hub") == path


def test_a_root_not_made_yet_is_allowed(tmp_path):
    path = tmp_path / "hub" / "x" / "y"
    assert atomic.ensure_inside(path, tmp_path / "hub") == path


def test_a_planted_directory_link_leading_out_is_refused(tmp_path):
    (tmp_path / "hub").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "hub" / "models--a--b")
    with pytest.raises(UnsafePathError, match="outside") as caught:
        atomic.ensure_inside(tmp_path / "hub" / "models--a--b" / "refs" / "main", tmp_path / "hub")
    assert caught.value.exit_code == 73
    with pytest.raises(UnsafePathError):
        atomic.write_text(tmp_path / "hub" / "models--a--b" / "refs" / "main", "x", root=tmp_path / "hub")
    assert list((tmp_path / "outside").iterdir()) == []  # nothing was written through it


def test_a_link_inside_the_root_is_fine(tmp_path):
    (tmp_path / "hub" / "real").mkdir(parents=True)
    os.symlink("real", tmp_path / "hub" / "alias")
    atomic.write_text(tmp_path / "hub" / "alias" / "f", "x", root=tmp_path / "hub")
    assert (tmp_path / "hub" / "real" / "f").read_text() == "x"


def test_write_and_symlink_replace_atomically_and_leave_no_temp(tmp_path):
    atomic.write_text(tmp_path / "f", "old")
    atomic.write_text(tmp_path / "f", "new")
    assert (tmp_path / "f").read_text() == "new"
    assert atomic.symlink("a", tmp_path / "l") and not atomic.symlink("a", tmp_path / "l")
    assert atomic.symlink("b", tmp_path / "l") and os.readlink(tmp_path / "l") == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "l"]


def test_nearest_existing_the_one_answer_for_where_a_path_would_be_made(tmp_path):
    """Links count as there (what a mkdir meets), or with `follow` only where they lead somewhere."""
    (tmp_path / "a").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert atomic.nearest_existing(tmp_path / "a" / "b" / "c") == tmp_path / "a"
    assert atomic.nearest_existing(tmp_path / "a") == tmp_path / "a"
    assert atomic.nearest_existing(tmp_path / "dangling" / "x") == tmp_path / "dangling"
    assert atomic.nearest_existing(tmp_path / "dangling" / "x", follow=True) == tmp_path
    assert atomic.nearest_existing(Path("/no-such-root-folder/x")) == Path("/")


def test_copy_checked_writes_and_judges_in_one_pass(tmp_path):
    import hashlib
    import io

    from preloader.cache import hashing

    data = b"x" * (hashing.CHUNK + 5)
    sha256 = hashlib.sha256(data).hexdigest()
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324
    for etag in (sha256, git):
        out = io.BytesIO()
        assert hashing.copy_checked(io.BytesIO(data), out, etag, len(data))
        assert out.getvalue() == data
    assert not hashing.copy_checked(io.BytesIO(data[:-1] + b"y"), io.BytesIO(), sha256, len(data))
    (tmp_path / "f").write_bytes(data)
    assert hashing.matches(tmp_path / "f", git) and hashing.matches(tmp_path / "f", sha256)
