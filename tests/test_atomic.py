"""Publication by rename, and the check that no write leads out of the cache through a planted link."""

from __future__ import annotations

import os

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
