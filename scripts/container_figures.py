"""Image size and warm start-up time of the preloader image, for docker/README.md.

    .venv/bin/python scripts/container_figures.py --runs 5      (root, podman: scripts/install-system-deps.sh)

Builds the images as the container tests do (local debootstrap base, scripts/base-image.sh), starts a
local olah hub over the test mirrors, preloads org/tiny-model into a fresh volume once, then times
`podman run` of the example app to its first line ("app: loaded ...") with that warm cache, as the
median of --runs runs, next to the same container without the preloader and an empty container.
Podman runs with the project's configuration: CONTAINERS_CONF, from scripts/containers-conf.sh.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub import build_mirrors, start_olah  # noqa: E402

BASE_IMAGE = "localhost/preloader-base:bookworm"
IMAGE = "localhost/preloader-test:latest"
APP_IMAGE = "localhost/preloader-test-app:latest"
MODEL = "org/tiny-model"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def build() -> None:
    sh(str(ROOT / "scripts" / "base-image.sh"), BASE_IMAGE)
    common = ["podman", "build", "--pull=never", "--network=host", "--quiet"]
    sh(*common, "-f", str(ROOT / "docker" / "Dockerfile"), "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
       "-t", IMAGE, str(ROOT))
    sh(*common, "--build-arg", f"PRELOADER_IMAGE={IMAGE}", "-t", APP_IMAGE, str(ROOT / "compose" / "app"))


def first_line_seconds(args: list[str], prefix: str) -> float:
    """Seconds from starting `args` to its first stdout line that starts with `prefix`."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith(prefix):
            elapsed = time.perf_counter() - start
            break
    else:
        raise SystemExit(f"no {prefix!r} line from {' '.join(args)} (exit {proc.wait()})")
    proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}")
    return elapsed


def size_mb(image: str) -> float:
    return int(sh("podman", "image", "inspect", "--format", "{{.Size}}", image)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    # Every podman below (and in scripts/base-image.sh) inherits it.
    os.environ["CONTAINERS_CONF"] = sh(str(ROOT / "scripts" / "containers-conf.sh"))
    build()
    volume = f"plfigures-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        mirrors = build_mirrors(Path(tmp) / "hub")
        olah = start_olah(mirrors.mirrors_dir, Path(tmp) / "olah")
        try:
            run = ["podman", "run", "--rm", "--network=host", "-v", f"{volume}:/cache", "-e", f"HF_ENDPOINT={olah.url}"]
            sh(*run, "-e", f"RUNPOD_HUGGINGFACE_MODEL={MODEL}", IMAGE)  # warm the volume
            commit = mirrors.sha("model", MODEL, "main")
            app = ["python", "/app/app.py", "--once"]
            cases = [
                ("preloader run -- app, branch name (one hub lookup)",
                 [*run, "-e", f"RUNPOD_HUGGINGFACE_MODEL={MODEL}", APP_IMAGE, *app], "app: loaded"),
                ("preloader run -- app, pinned commit (no network)",
                 [*run, "-e", f"RUNPOD_HUGGINGFACE_MODEL={MODEL}:{commit}", APP_IMAGE, *app], "app: loaded"),
                ("baseline: the app alone (tini, HF_HUB_OFFLINE=1)",
                 [*run, "-e", f"RUNPOD_HUGGINGFACE_MODEL={MODEL}", "-e", "HF_HUB_OFFLINE=1",
                  "--entrypoint", "tini", APP_IMAGE, "--", *app], "app: loaded"),
                ("baseline: tini -- echo (container start)",
                 [*run, "--entrypoint", "tini", IMAGE, "--", "echo", "up"], "up"),
            ]
            times = {name: [] for name, _, _ in cases}
            for _ in range(runs):  # interleaved, so drift affects every case alike
                for name, args, prefix in cases:
                    times[name].append(first_line_seconds(args, prefix))
        finally:
            olah.stop()
            subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True)

    podman = sh("podman", "--version")
    print(f"{podman}, {runs} runs each, median seconds from `podman run` to the first line (warm cache)\n")
    print("| what | seconds |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    print("\n| image | size (MB) |\n|---|---|")
    base, image, app = size_mb(BASE_IMAGE), size_mb(IMAGE), size_mb(APP_IMAGE)
    print(f"| local base ({BASE_IMAGE}) | {base:.0f} |")
    print(f"| preloader image | {image:.0f} (+{image - base:.0f} over the base) |")
    print(f"| example app image | {app:.0f} |")


if __name__ == "__main__":
    main()
