"""Tampered bytes at the hub: the proxy serves another repo's listing and bytes under a signed repo's name (as a
compromised hub or mirror would, its listing agreeing with the bytes, so every etag check passes). Only the
signature can tell: the start refuses with 65, the service never runs, nothing is deleted, no claim is written."""

from __future__ import annotations

import json

import faultsuite
import pytest
from conftest import preloader_env

from localhub import signed
from localhub.signed import SIGNED, TAMPERED

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("command", ["run", "pull"])
def test_other_bytes_served_under_a_signed_name_are_refused(hub, mirrors, cache, tmp_path, command):
    keys = signed.keys(mirrors.root)
    hub.add_rule(*signed.swap_repo(SIGNED, TAMPERED))
    marker = tmp_path / "started"
    env = faultsuite.env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SIGNED, PRELOADER_SIGNATURE="required",
                             PRELOADER_SIGNATURE_KEY=keys.public)
    args = ["run", "--", "sh", "-c", f"echo started > {marker}"] if command == "run" else ["pull", SIGNED]
    proc = faultsuite.run(args, env, expect=65)
    assert proc.returncode == 65, proc.stderr[-3000:]
    served = mirrors.sha("model", TAMPERED, "main")  # the commit the hostile hub named
    errors = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    assert errors == [f"preloader: error: signature refused for model {SIGNED}@{served[:12]}: model.safetensors: "
                      "digest differs from model.sig's; the service was not started and nothing was deleted"]
    assert not marker.exists()
    assert any(r.fault for r in hub.requests())  # the bytes came through the fault
    snapshot = cache / "models--org--signed-model" / "snapshots" / served
    assert (snapshot / "model.safetensors").read_bytes() == mirrors.files("model", TAMPERED, "main")[
        "model.safetensors"]  # kept, as evidence
    record = json.loads((cache.parent / "preloader" / "complete" / "models--org--signed-model" /
                         f"{served}.json").read_text())
    assert "verification" not in record


def test_the_same_hub_without_the_fault_starts(hub, mirrors, cache, tmp_path):
    """The control: the same settings against the honest hub start the service."""
    keys = signed.keys(mirrors.root)
    marker = tmp_path / "started"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SIGNED, PRELOADER_SIGNATURE="required",
                        PRELOADER_SIGNATURE_KEY=keys.public)
    proc = faultsuite.run(["run", "--", "sh", "-c", f"echo started > {marker}"], env, expect=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text() == "started\n"
