"""A RunPod-style serverless worker: the models are preloaded and loaded once per worker, at import time.

RunPod imports this module once when a worker starts and then calls `handler(job)` for every request.
What happens at import time (the preload, loading the model) is paid once per worker, and on a warm
network volume the preload downloads nothing; every handler call reuses the loaded model.

    pip install hf-preloader runpod transformers torch
    RUNPOD_HUGGINGFACE_MODEL=org/model python serverless_handler.py

Settings come from the worker's env, as RunPod sets them: RUNPOD_HUGGINGFACE_MODEL (comma-separated
`user/name[:revision]`, the first one is served), RUNPOD_HUGGINGFACE_TOKEN for private or gated repos,
and optionally HF_ENDPOINT and PRELOADER_CACHE_DIR (default: /runpod-volume/hub, on the network volume).
"""

from __future__ import annotations

import os
import time

import preloader

CACHE_DIR = os.environ.get("PRELOADER_CACHE_DIR") or "/runpod-volume/hub"
MODELS = os.environ.get("RUNPOD_HUGGINGFACE_MODEL", "").strip()
if not MODELS:
    raise RuntimeError("no model to serve: set RUNPOD_HUGGINGFACE_MODEL")

# Once per worker. preload() returns when every file is complete in the cache; a worker that starts
# while another one is downloading the same repo waits for its lock instead of downloading it again.
# It raises a preloader.PreloaderError (with an exit_code) if it cannot: the worker then fails to start,
# which is what RunPod should see, rather than a worker that fails every request.
PRELOADED = preloader.preload(
    models=MODELS,
    cache_dir=CACHE_DIR,
    token=os.environ.get("RUNPOD_HUGGINGFACE_TOKEN") or None,
    endpoint=os.environ.get("HF_ENDPOINT") or "https://huggingface.co",
)


def load_model(path):
    """Load from the snapshot directory: a local path, so transformers makes no network call."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path)
    model.eval()
    return model


SERVED = PRELOADED[0]
MODEL = load_model(SERVED.path)
LOADED_AT = time.time()


def handler(job: dict) -> dict:
    """One request: {"input": {"input_ids": [[...]]}} -> the pooled output's size and first values."""
    import torch

    input_ids = torch.tensor(job["input"]["input_ids"])
    with torch.no_grad():
        output = MODEL(input_ids=input_ids)
    pooled = output.pooler_output if getattr(output, "pooler_output", None) is not None else output[0][:, 0]
    return {
        "model": SERVED.repo_id,
        "revision": SERVED.revision,
        "commit": SERVED.commit,
        "loaded_at": LOADED_AT,  # the same on every call of this worker: the model was loaded once
        "shape": list(pooled.shape),
        "first": [round(float(v), 6) for v in pooled[0][:4]],
    }


if __name__ == "__main__":
    import runpod  # RunPod's worker SDK: calls handler() for each job of this worker

    runpod.serverless.start({"handler": handler})
