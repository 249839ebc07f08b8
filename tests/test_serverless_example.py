"""examples/serverless_handler.py, imported as RunPod imports it, against the local hub."""

from __future__ import annotations

import importlib.util
import uuid
from collections import Counter

import pytest
from conftest import ROOT

EXAMPLE = ROOT / "examples" / "serverless_handler.py"
JOB = {"id": "job-1", "input": {"input_ids": [[2, 7, 1, 8, 3]]}}


def import_worker():
    """Import the example under a new name, as a new worker process would import it."""
    spec = importlib.util.spec_from_file_location(f"serverless_handler_{uuid.uuid4().hex[:8]}", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def worker_env(monkeypatch, hub, cache):
    monkeypatch.setenv("RUNPOD_HUGGINGFACE_MODEL", "org/tiny-model:dev, org/second-model")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("PRELOADER_CACHE_DIR", str(cache))


def test_worker_preloads_at_import_and_handler_calls_reuse_the_model(worker_env, hub, mirrors, cache):
    worker = import_worker()

    # Import time: every requested model is in the cache, each file fetched once.
    dev = mirrors.sha("model", "org/tiny-model", "dev")
    assert [(r.repo_id, r.commit) for r in worker.PRELOADED] == [
        ("org/tiny-model", dev),
        ("org/second-model", mirrors.sha("model", "org/second-model", "main")),
    ]
    assert worker.SERVED.path == cache / "models--org--tiny-model" / "snapshots" / dev
    fetched = hub.file_gets()
    assert fetched[("org/tiny-model", "model.safetensors")] == 1
    assert fetched[("org/second-model", "model.safetensors")] == 1
    assert max(fetched.values()) == 1

    # Handler calls: the model loaded at import (dev has 2 layers), no hub request at all.
    assert worker.MODEL.config.num_hidden_layers == 2
    requests = hub.count()
    first, second = worker.handler(JOB), worker.handler(JOB)
    assert first == second
    assert first["commit"] == dev and first["shape"] == [1, worker.MODEL.config.hidden_size]
    assert first["loaded_at"] == worker.LOADED_AT
    assert hub.count() == requests

    # A second worker on the warm volume downloads nothing and serves the same weights.
    hub.reset()
    again = import_worker()
    assert hub.file_gets() == Counter()
    assert [r.bytes_fetched for r in again.PRELOADED] == [0, 0]
    assert again.handler(JOB)["first"] == first["first"]


def test_worker_without_models_fails_at_import(monkeypatch, hub, cache):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("PRELOADER_CACHE_DIR", str(cache))
    with pytest.raises(RuntimeError, match="set RUNPOD_HUGGINGFACE_MODEL"):
        import_worker()
    assert hub.count() == 0


def test_worker_with_a_bad_spec_fails_at_import_with_exit_code_78(monkeypatch, hub, cache):
    import preloader

    monkeypatch.setenv("RUNPOD_HUGGINGFACE_MODEL", "org/tiny-model, bad")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("PRELOADER_CACHE_DIR", str(cache))
    with pytest.raises(preloader.PreloaderError) as error:
        import_worker()
    assert error.value.exit_code == 78
    assert hub.count() == 0
