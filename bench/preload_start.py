"""Benchmark: cold preload and cached start of a 3-repo plan, next to `hf download`, in one run.

    .venv/bin/python bench/preload_start.py [--runs 7]
    .venv/bin/python bench/preload_start.py --against /tmp/before --runs 40   # another checkout, alternately
    .venv/bin/python bench/preload_start.py --against . --env PRELOADER_METRICS_ADDR=127.0.0.1:0  # a setting's cost

Starts a local olah hub over generated repos (two models, one dataset), then
times, as whole processes (medians of --runs):
  - preloader cold: `preloader run` into an empty cache;
  - hf download cold: `hf download` of each repo into an empty cache (3 processes, as a script does);
  - preloader cached, pinned: every repo pinned to its commit and complete: `preloader run -- true`;
  - preloader cached, branches: same, by branch/tag name (one lookup per repo);
  - hf download cached: `hf download` of each repo again into the filled cache;
  - baseline: `python -c pass` and `true`, to show what is interpreter start-up.
Prints a Markdown table; docs/development.md (Benchmarks) records one run of it. The package is
byte-compiled first, as an install would leave it. To measure another checkout of the package: PYTHONPATH=<its root>.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub import build_mirrors, start_olah  # noqa: E402

BIN = Path(sys.executable).parent
REPOS = [
    ("model", "org/tiny-model", "main"),
    ("model", "org/second-model", "main"),
    ("dataset", "org/tiny-data", "v1.0"),
]


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def hf_download_all(cache: Path, env: dict) -> float:
    total = 0.0
    for repo_type, repo_id, revision in REPOS:
        total += timed([str(BIN / "hf"), "download", repo_id, "--repo-type", repo_type, "--revision", revision,
                        "--cache-dir", str(cache), "--quiet"], env)
    return total


def compile_package(env: dict | None = None) -> None:
    """Byte-compile the preloader the runs import, as `pip install` does: with PYTHONDONTWRITEBYTECODE set
    (as on some machines), every run would compile every module from source, and measure that instead."""
    where = subprocess.run([sys.executable, "-c", "import os, preloader; print(os.path.dirname(preloader.__file__))"],
                           capture_output=True, text=True, check=True, cwd="/", env=env).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], check=True)
    print(f"measuring the preloader in {where} (byte-compiled)", file=sys.stderr)


def against(other: Path, runs: int, env: dict, work: Path, mirrors, ours: dict[str, str] | None = None) -> None:
    """This package and the one at `other` (a checkout's root), alternately, on one cached repo: pinned, then
    by branch name. Alternating lets both see the same background load. `ours`: settings for this checkout's
    runs only (with `other` this very checkout: what a setting costs)."""
    ours = ours or {}
    other_env = dict(env, PYTHONPATH=str(other))
    compile_package(other_env)
    commit = mirrors.sha("model", "org/tiny-model", "main")
    cache = work / "against" / "hub"
    base = dict(env, PRELOADER_CACHE_DIR=str(cache), RUNPOD_HUGGINGFACE_MODEL="org/tiny-model")
    timed([sys.executable, "-m", "preloader", "run"], base)
    mine_label = " ".join(["this checkout", *(f"{k}={v}" for k, v in ours.items())])
    print(f"| cached start, one repo ({runs} runs each, alternating, median) | {mine_label} | {other} |")
    print("|---|---:|---:|")
    for label, spec in (("pinned commit", f"org/tiny-model:{commit}"), ("by branch name", "org/tiny-model")):
        mine, theirs = [], []
        for _ in range(runs):
            mine.append(timed([sys.executable, "-m", "preloader", "run", "--", "true"],
                              dict(base, RUNPOD_HUGGINGFACE_MODEL=spec, **ours)))
            theirs.append(timed([sys.executable, "-m", "preloader", "run", "--", "true"],
                                dict(base, RUNPOD_HUGGINGFACE_MODEL=spec, PYTHONPATH=str(other))))
        print(f"| {label} | {statistics.median(mine):.3f} | {statistics.median(theirs):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="instead: alternate with the package of another checkout (its root), one cached repo")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="with --against: a setting for this checkout's runs only (repeatable)")
    args = parser.parse_args()
    ours = dict(item.split("=", 1) for item in args.env)
    compile_package()
    work = Path(tempfile.mkdtemp(prefix="preloader-bench-"))
    mirrors = build_mirrors(work / "hub")
    olah = start_olah(mirrors.mirrors_dir, work / "olah")
    if args.against:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRELOADER_", "RUNPOD_"))}
        env.update(HF_ENDPOINT=olah.url, HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
        try:
            against(args.against.resolve(), args.runs, env, work, mirrors, ours)
        finally:
            olah.stop()
            shutil.rmtree(work, ignore_errors=True)
        return
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRELOADER_", "RUNPOD_"))}
        env.update(HF_ENDPOINT=olah.url, HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
        by_name = {t: ",".join(f"{r}:{rev}" for tt, r, rev in REPOS if tt == t) for t in ("model", "dataset")}
        pinned = {t: ",".join(f"{r}:{mirrors.sha(tt, r, rev)}" for tt, r, rev in REPOS if tt == t)
                  for t in ("model", "dataset")}
        preloader = [str(BIN / "preloader"), "run"]
        results: dict[str, list[float]] = {}

        def record(name: str, seconds: float) -> None:
            results.setdefault(name, []).append(seconds)

        for run in range(args.runs):
            cache = work / f"cache-{run}" / "hub"
            plan = dict(env, PRELOADER_CACHE_DIR=str(cache), RUNPOD_HUGGINGFACE_MODEL=by_name["model"],
                        RUNPOD_HUGGINGFACE_DATASET=by_name["dataset"])
            record("preloader run, cold (empty cache)", timed(preloader, plan))
            hf_cache = work / f"hf-cache-{run}"
            record("hf download x3, cold (empty cache)", hf_download_all(hf_cache, env))
            pinned_plan = dict(plan, RUNPOD_HUGGINGFACE_MODEL=pinned["model"],
                               RUNPOD_HUGGINGFACE_DATASET=pinned["dataset"])
            timed(preloader, pinned_plan)  # records the pinned commits' refs-free requests as complete
            record("preloader run -- true, cached, pinned commits", timed([*preloader, "--", "true"], pinned_plan))
            record("preloader run -- true, cached, branch/tag names", timed([*preloader, "--", "true"], plan))
            record("hf download x3, cached", hf_download_all(hf_cache, env))
            record("baseline: python -c pass", timed([sys.executable, "-c", "pass"], env))
            record("baseline: true", timed(["true"], env))
            shutil.rmtree(cache.parent)
            shutil.rmtree(hf_cache)
    finally:
        olah.stop()
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"| what ({args.runs} runs, median) | seconds |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} |")
    cached = medians["preloader run -- true, cached, pinned commits"]
    hf_cached = medians["hf download x3, cached"]
    print(f"\ncached pinned start: {cached:.3f} s before exec (goal < 0.3 s); "
          f"hf download x3 cached / preloader cached = {hf_cached / cached:.1f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
