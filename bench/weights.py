"""Benchmark: bytes and time to ready, `preloader run` (PRELOADER_WEIGHTS=auto) vs `hf download`, per repo shape.

    .venv/bin/python bench/weights.py [--runs 5]

Starts a local olah hub over the test repos shaped like public ones (localhub/shapes.py: each file in the
relative size the public hub shows for the repo it imitates), behind the counting proxy. For each shape,
alternating the two tools (and which goes first) over --runs runs, each into an empty cache, it records the
file bytes the hub sent (`/resolve/` bodies) and the wall time of the whole process, and prints the medians as
a Markdown table, with what the service loads (the weights of `shapes.LOADS` and the configuration and
tokenizer files beside them) and the preloader's bytes as a share of it. docs/weights.md records one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub import HubProxy, build_mirrors, parse_resolve, start_olah  # noqa: E402
from localhub.shapes import LOADS  # noqa: E402

BIN = Path(sys.executable).parent
NOT_LOADED = {"README.md", ".gitattributes"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".ot", ".onnx",
                   ".tflite", ".mlmodel", ".gguf")
SPECS = {"org/noq4-gguf": "org/noq4-gguf:Q8_0"}  # the repo whose quantization must be named


def loads(files: dict[str, bytes], repo: str) -> int:
    """Bytes the service reads: the weights it loads and every non-weight file but the card and attributes."""
    return sum(len(data) for path, data in files.items()
               if path in LOADS[repo] or (path not in NOT_LOADED and not path.endswith(WEIGHT_SUFFIXES)
                                          and "/onnx/" not in f"/{path}" and "/openvino/" not in f"/{path}"))


def sent(proxy: HubProxy, repo: str) -> int:
    return sum(r.body_bytes for r in proxy.requests("GET", "/resolve/")
               if (parsed := parse_resolve(r.path)) and parsed[0] == repo)


def once(tool: str, repo: str, proxy: HubProxy, work: Path) -> tuple[int, float]:
    cache = work / "hub"
    shutil.rmtree(work, ignore_errors=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "HF_ENDPOINT": proxy.url, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if tool == "preloader":
        cmd = [sys.executable, "-m", "preloader", "run"]
        env |= {"PRELOADER_CACHE_DIR": str(cache), "RUNPOD_HUGGINGFACE_MODEL": SPECS.get(repo, repo)}
    else:
        cmd = [str(BIN / "hf"), "download", repo, "--cache-dir", str(cache), "--quiet"]
    proxy.reset()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return sent(proxy, repo), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mirrors = build_mirrors(work / "hub-src")
        server = start_olah(mirrors.mirrors_dir, work / "olah")
        proxy = HubProxy(server.url)
        try:
            print(f"| shape ({args.runs} runs each, alternating, median) | the service loads | preloader (auto) "
                  "| share | hf download | preloader time | hf download time |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for repo in LOADS:
                measured: dict[str, list[tuple[int, float]]] = {"preloader": [], "hf": []}
                for run in range(args.runs):
                    order = ("preloader", "hf") if run % 2 == 0 else ("hf", "preloader")
                    for tool in order:
                        measured[tool].append(once(tool, repo, proxy, work / "run"))
                need = loads(mirrors.files("model", repo, "main"), repo)
                ours = statistics.median(b for b, _ in measured["preloader"])
                theirs = statistics.median(b for b, _ in measured["hf"])
                print(f"| {SPECS.get(repo, repo)} | {need:,} B | {ours:,.0f} B | {ours / need:.1%} | {theirs:,.0f} B "
                      f"| {statistics.median(t for _, t in measured['preloader']):.2f} s "
                      f"| {statistics.median(t for _, t in measured['hf']):.2f} s |", flush=True)
        finally:
            proxy.stop()
            server.stop()


if __name__ == "__main__":
    main()
