"""Benchmark: what PRELOADER_SIGNATURE=required costs a cached start, next to `off`, alternating.

    .venv/bin/python bench/signatures.py [--runs 15]

Starts a local olah hub over the generated repos (localhub; org/signed-model is signed with a key made for
the run), preloads it once, then times whole `preloader run -- true` processes, pinned to the commit (no
network), in turn:
  - off: PRELOADER_SIGNATURE=off;
  - required, verified record: the completion record holds the check (the case of every start after the first);
  - required, first check: the claim is taken out of the record before each run, so the signature is checked
    again (model_signing imported, the signature's crypto, the small files hashed, the claim written).
Prints a Markdown table of medians; docs/signatures.md records one run of it.
"""

from __future__ import annotations

import argparse
import json
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

from localhub import build_mirrors, signed, start_olah  # noqa: E402

REPO = signed.SIGNED


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def drop_claim(record: Path) -> None:
    data = json.loads(record.read_text())
    data.pop("verification", None)
    record.write_text(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "preloader")], check=True)
    work = Path(tempfile.mkdtemp(prefix="preloader-bench-sig-"))
    mirrors = build_mirrors(work / "hub")
    olah = start_olah(mirrors.mirrors_dir, work / "olah")
    try:
        keys = signed.keys(mirrors.root)
        commit = mirrors.sha("model", REPO, "main")
        cache = work / "volume" / "hub"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRELOADER_", "RUNPOD_"))}
        env.update(HF_ENDPOINT=olah.url, HF_HOME=str(work / "hf-home"), PRELOADER_CACHE_DIR=str(cache),
                   RUNPOD_HUGGINGFACE_MODEL=f"{REPO}:{commit}", PRELOADER_SIGNATURE_KEY=str(keys.public))
        run = [sys.executable, "-m", "preloader", "run", "--", "true"]
        timed(run, dict(env, PRELOADER_SIGNATURE="required"))  # download, check, record
        record = cache.parent / "preloader" / "complete" / f"models--{REPO.replace('/', '--')}" / f"{commit}.json"
        cases = {
            "off": dict(env, PRELOADER_SIGNATURE="off"),
            "required, verified record (every later start)": dict(env, PRELOADER_SIGNATURE="required"),
            "required, first check (no record of it)": dict(env, PRELOADER_SIGNATURE="required"),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, case_env in cases.items():
                if name.startswith("required, first"):
                    drop_claim(record)
                times[name].append(timed(run, case_env))
    finally:
        olah.stop()
        shutil.rmtree(work, ignore_errors=True)
    off = statistics.median(times["off"])
    print(f"| cached start, pinned, `preloader run -- true` ({args.runs} runs each, alternating) | median s | "
          "vs off |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| PRELOADER_SIGNATURE={name} | {median:.3f} | {median - off:+.3f} |")


if __name__ == "__main__":
    main()
