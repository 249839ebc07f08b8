"""A tiny service for the demo and the end-to-end tests: loads what the preloader fetched, offline.

It prints one JSON line saying what it saw, then exits (or keeps serving with --serve,
so signal tests can stop it). Run it under `preloader run -- python demo/service.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time


def main() -> int:
    seen = {
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE"),
        "hf_hub_cache": os.environ.get("HF_HUB_CACHE"),
        "model_path": os.environ.get("PRELOADER_MODEL_PATH"),
        "tokens_in_env": sorted(k for k in os.environ if "TOKEN" in k),
        "models": {},
        "datasets": {},
    }
    manifest = json.load(open(os.environ["PRELOADER_MANIFEST"])) if os.environ.get("PRELOADER_MANIFEST") else {}
    seen["manifest"] = manifest
    for repo in manifest.get("repos", []):
        key = f"{repo['repo']}:{repo['revision']}"
        if repo["type"] == "model" and os.path.exists(os.path.join(repo["path"], "config.json")):
            seen["models"][key] = load_model(repo)
        elif repo["type"] == "dataset":
            files = sorted(
                os.path.relpath(os.path.join(d, f), repo["path"]) for d, _, fs in os.walk(repo["path"]) for f in fs
            )
            seen["datasets"][key] = {"files": files}
    if "--serve" in sys.argv:  # before saying we are up: a stop may follow at once
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(int(os.environ.get("DEMO_EXIT_ON_TERM", "0"))))
    if "--pretty" in sys.argv:
        print(f"demo service: pid {seen['pid']}, HF_HUB_OFFLINE={seen['hf_hub_offline']}, cache {seen['hf_hub_cache']}")
        for key, model in seen["models"].items():
            print(f"  model   {key}: {model['class']}, {model['layers']} layer(s), {model['parameters']} parameters,"
                  f" weights sha256 {model['weights_sha256'][:12]}, loaded with from_pretrained offline")
        for key, data in seen["datasets"].items():
            print(f"  dataset {key}: {', '.join(data['files'])}")
    print(json.dumps(seen), flush=True)
    if "--serve" in sys.argv:
        while True:
            time.sleep(1)
    return int(os.environ.get("DEMO_EXIT_CODE", "0"))


def load_model(repo: dict) -> dict:
    """from_pretrained by repo id and revision, as a real service does; HF_HUB_OFFLINE=1 forbids the network."""
    from transformers import AutoConfig, AutoModel

    revision = repo["revision"]
    config = AutoConfig.from_pretrained(repo["repo"], revision=revision)
    model = AutoModel.from_pretrained(repo["repo"], revision=revision)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return {
        "class": type(model).__name__,
        "layers": getattr(config, "num_hidden_layers", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": digest.hexdigest(),
    }


if __name__ == "__main__":
    sys.exit(main())
