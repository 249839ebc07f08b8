"""An example service for the compose stack: starts offline on a model the preloader put in the cache.

There is no torch in this image, so it "loads" the model the way a server begins to: config.json, then
the safetensors headers (every tensor's name, dtype and shape). Every file is opened through the
Hugging Face cache with `local_files_only=True`, under `HF_HUB_OFFLINE=1`: this works only when the
model is already complete on the volume, which is the point of the example.

    python app.py           load, print one line, then serve http://0.0.0.0:$APP_PORT until SIGTERM
    python app.py --once    load, print one line, exit 0

The model is the first item of RUNPOD_HUGGINGFACE_MODEL, the variable the preloader read.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def first_model(value: str) -> tuple[str, str]:
    """("user/name", revision) of the first comma-separated `user/name[:revision]` item."""
    item = value.split(",")[0].strip()
    repo_id, _, revision = item.partition(":")
    return repo_id, revision or "main"


def safetensors_header(path: str) -> dict:
    """The JSON header of a .safetensors file: 8 bytes of little-endian length, then the JSON."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return header


def load(repo_id: str, revision: str) -> dict:
    from huggingface_hub import hf_hub_download

    # Resolves the revision through refs/ to the snapshot in the cache; raises if config.json is missing.
    # Not snapshot_download: it refuses a snapshot that PRELOADER_INCLUDE filtered (README.md left out).
    config_path = hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=True)
    snapshot = os.path.dirname(config_path)
    with open(config_path, encoding="utf-8") as file:
        config = json.load(file)
    tensors = {}
    for name in sorted(os.listdir(snapshot)):
        if name.endswith(".safetensors"):
            path = hf_hub_download(repo_id, name, revision=revision, local_files_only=True)
            tensors.update(safetensors_header(path))
    parameters = 0
    for info in tensors.values():
        count = 1
        for dim in info["shape"]:
            count *= dim
        parameters += count
    return {
        "model": f"{repo_id}:{revision}",
        "commit": os.path.basename(snapshot),
        "model_type": config.get("model_type"),
        "layers": config.get("num_hidden_layers"),
        "tensors": len(tensors),
        "parameters": parameters,
        "snapshot": snapshot,
        "offline": os.environ.get("HF_HUB_OFFLINE") == "1",
        # Set only when the preloader started us (the entrypoint pattern); it must be the same snapshot.
        "preloader_model_path": os.environ.get("PRELOADER_MODEL_PATH"),
    }


def serve(info: dict, port: int) -> None:
    body = (json.dumps(info) + "\n").encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    stopped = threading.Event()

    def stop(signum, frame):
        print(f"app: {signal.Signals(signum).name} received, shutting down", flush=True)
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"app: serving on port {server.server_address[1]}", flush=True)
    stopped.wait()
    server.shutdown()


def main(argv: list[str]) -> int:
    spec = os.environ.get("RUNPOD_HUGGINGFACE_MODEL", "")
    if not spec.strip():
        print("app: error: RUNPOD_HUGGINGFACE_MODEL is not set", file=sys.stderr)
        return 78
    info = load(*first_model(spec))
    print("app: loaded " + json.dumps(info), flush=True)
    if "--once" not in argv:
        serve(info, int(os.environ.get("APP_PORT", "8000")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
