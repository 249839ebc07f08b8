"""A lock wait that timed out is final: one wait of PRELOADER_LOCK_TIMEOUT, exit 75, no retry of it."""

from __future__ import annotations

import hashlib

import pytest
from faultsuite import BIG, account, env_for, run  # noqa: F401 (account: the suite's autouse fixture)
from filelock import FileLock

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("which", ["blob", "repo"])
def test_a_lock_wait_that_timed_out_is_not_retried(hub, mirrors, cache, which):
    etag = hashlib.sha256(mirrors.files("model", BIG, "main")["model.safetensors"]).hexdigest()
    path = (cache / ".locks" / "models--org--big-model" / f"{etag}.lock" if which == "blob"
            else cache.parent / "preloader" / "locks" / "models--org--big-model.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path, is_singleton=False, thread_local=False):  # another process downloading it, for ever
        proc = run(["run", "--", "sh", "-c", "echo service-started"],
                   env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_LOCK_TIMEOUT="1s",
                           PRELOADER_RETRIES="5"), expect=75)
    assert proc.returncode == 75, proc.stderr
    assert [line for line in proc.stderr.splitlines() if " retry " in line] == []  # one wait, not five
    [error] = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert "timed out after 1 s waiting for the" in error and "PRELOADER_LOCK_TIMEOUT" in error
    assert "service-started" not in proc.stdout
