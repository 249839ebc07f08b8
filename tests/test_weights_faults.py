"""Faults around `weights=auto`: the index read that decides the shards, and a named quantization with the hub
down (issue 21)."""

from __future__ import annotations

import pytest
from faultsuite import env_for, run
from test_weights import EXPECTED, SHARDED, sent

pytestmark = pytest.mark.faults
LLAMA = "org/llama-gguf"


def test_a_failing_index_read_is_retried_then_only_the_named_shards_come(hub, mirrors, cache):
    from localhub import Status

    hub.add_rule(lambda m, p: m == "GET" and p.endswith("/model.safetensors.index.json"), Status(503, times=1))
    proc = run(["run"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SHARDED), expect=0)
    assert proc.returncode == 0, proc.stderr
    assert set(sent(hub, SHARDED)) == EXPECTED[SHARDED]  # consolidated.safetensors never asked for


def test_an_index_the_hub_cannot_find_stops_before_any_weight(hub, mirrors, cache):
    from localhub import Status

    hub.add_rule(lambda m, p: m == "GET" and p.endswith("/model.safetensors.index.json"), Status(404))
    proc = run(["run"], env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SHARDED), expect=66)
    assert proc.returncode == 66
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "preloader: error: model org/sharded-consolidated@main file model.safetensors.index.json:")
    assert not [p for p in sent(hub, SHARDED) if p.endswith(".safetensors")]
    assert not (cache / "models--org--sharded-consolidated" / "snapshots").exists()


def test_a_named_quantization_starts_from_the_cache_when_the_hub_is_down(hub, mirrors, cache):
    from localhub import Status

    env = env_for(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{LLAMA}:Q8_0")
    assert run(["run"], env, expect=0).returncode == 0
    hub.add_rule("/api/", Status(503))
    proc = run(["run"], env, expect=0)
    assert proc.returncode == 0, proc.stderr
    assert "hub.unreachable" in proc.stderr and f"using={mirrors.sha('model', LLAMA, 'main')}" in proc.stderr
