"""The engine and the hand-off under local damage and hostile neighbours: a damaged cache heals on start,
the manifest goes nowhere another user can reach, a bad command or manifest path is a settings error, the
parent's ignored signals stay ignored, and an interrupted run leaves no temp files.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from faultsuite import (  # noqa: F401 (account: the suite's autouse fixture)
    BIG, DATA, LEDGER, MODEL, SIZE, account, env_for, inject, leftovers, records, run, snapshot_bytes_ok,
)

pytestmark = pytest.mark.faults

WEIGHTS = "model.safetensors"


def snapshot(cache: Path, mirrors, repo: str = MODEL) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "snapshots" / mirrors.sha("model", repo, "main")


def resolved(hub) -> list[str]:
    """The files the hub sent, by name."""
    return sorted(r.path.rsplit("/", 1)[-1] for r in hub.requests(method="GET", path_contains="/resolve/"))


def damage(blob: Path, how: str) -> None:
    inject()
    if how == "truncated":
        os.truncate(blob, blob.stat().st_size // 2)
    elif how == "extended":
        with open(blob, "ab") as file:
            file.write(b"\0" * 7)
    else:  # the right size, other bytes; and no completion record saying it was ever checked
        data = bytearray(blob.read_bytes())
        data[100:110] = b"x" * 10
        blob.unlink()
        blob.write_bytes(bytes(data))
        for record in records(blob.parents[2]):
            record.unlink()


# 3: a damaged cache heals on start -----------------------------------------------------------------
@pytest.mark.parametrize("how", ["truncated", "extended", "wrong-bytes-no-record"])
@pytest.mark.parametrize("command", [["run", "--", "true"], ["pull", MODEL]])
def test_a_damaged_blob_is_fetched_again_and_only_it(hub, mirrors, cache, how, command):
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    assert run(["run"], env, expect=0).returncode == 0
    damage((snapshot(cache, mirrors) / WEIGHTS).resolve(), how)
    hub.reset()
    proc = run(command, env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert resolved(hub) == [WEIGHTS]  # only the damaged file is sent again
    assert snapshot_bytes_ok(cache, mirrors, MODEL)
    assert f"preloader: warning: heal repo={MODEL}" in proc.stderr and f"damaged={WEIGHTS}" in proc.stderr
    hub.reset()
    assert run(["run", "--", "true"], env, expect=0).returncode == 0  # healed: the next start fetches nothing
    assert resolved(hub) == []
    assert leftovers(cache.parent) == []


def test_a_damaged_blob_no_snapshot_links_yet_is_not_linked(hub, mirrors, cache):
    """A blob of the wrong size already in `blobs/` (a cut-short copy under the final name) is replaced,
    not linked into the new snapshot."""
    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    data = mirrors.files("model", MODEL, "main")[WEIGHTS]
    blob = cache / "models--org--tiny-model" / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data[:1000])
    inject()
    proc = run(["run", "--", "true"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert WEIGHTS in resolved(hub)
    assert snapshot_bytes_ok(cache, mirrors, MODEL)
