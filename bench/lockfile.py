"""Benchmark: what PRELOADER_LOCKFILE and PRELOADER_PICKLE=refuse cost on a cached start.

    .venv/bin/python bench/lockfile.py [--runs 21]

Starts a local olah hub over the test repos, fills a cache with a 3-repo plan by branch/tag names
(org/tiny-model:main, org/second-model:main, org/tiny-data:v1.0; `*.bin` excluded), writes its lock file, then times
`preloader run -- true` as whole processes, the forms alternating run by run so that all see the same
background load (medians):
  - by branch names (one hub lookup per repo);
  - by branch names with the lock file (no network call: the locked commits, checked on disk);
  - pinned commits (no network call) with and without PRELOADER_PICKLE=refuse.
Prints a Markdown table; docs/lockfile.md records one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from preload_start import REPOS, compile_package, timed  # noqa: E402

from localhub import build_mirrors, start_olah  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    compile_package(dict(os.environ, PYTHONPATH=str(ROOT)))
    work = Path(tempfile.mkdtemp(prefix="preloader-bench-lock-"))
    mirrors = build_mirrors(work / "hub")
    olah = start_olah(mirrors.mirrors_dir, work / "olah")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRELOADER_", "RUNPOD_"))}
        env.update(HF_ENDPOINT=olah.url, HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
                   PRELOADER_CACHE_DIR=str(work / "cache" / "hub"), PYTHONPATH=str(ROOT),
                   PRELOADER_EXCLUDE="*.bin")  # org/second-model's pickle: every form selects the same files
        names = {t: ",".join(f"{r}:{rev}" for tt, r, rev in REPOS if tt == t) for t in ("model", "dataset")}
        pins = {t: ",".join(f"{r}:{mirrors.sha(tt, r, rev)}" for tt, r, rev in REPOS if tt == t)
                for t in ("model", "dataset")}
        plan = dict(env, RUNPOD_HUGGINGFACE_MODEL=names["model"], RUNPOD_HUGGINGFACE_DATASET=names["dataset"])
        pinned = dict(env, RUNPOD_HUGGINGFACE_MODEL=pins["model"], RUNPOD_HUGGINGFACE_DATASET=pins["dataset"])
        lock = work / "preloader.lock"
        run = [sys.executable, "-m", "preloader", "run"]
        timed(run, plan)
        timed(run, pinned)
        timed([sys.executable, "-m", "preloader", "lock", "-o", str(lock)], plan)
        forms = {
            "branch names, no lock file (a lookup per repo)": plan,
            "branch names, PRELOADER_LOCKFILE (no network call)": dict(plan, PRELOADER_LOCKFILE=str(lock)),
            "pinned commits": pinned,
            "pinned commits, PRELOADER_PICKLE=refuse": dict(pinned, PRELOADER_PICKLE="refuse"),
        }
        results: dict[str, list[float]] = {name: [] for name in forms}
        for _ in range(args.runs):
            for name, form in forms.items():
                results[name].append(timed([*run, "--", "true"], form))
        print(f"| cached start, 3 repos (`preloader run -- true`, {args.runs} runs each, alternating) | median s |")
        print("|---|---:|")
        for name, seconds in results.items():
            print(f"| {name} | {statistics.median(seconds):.3f} |")
    finally:
        olah.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
