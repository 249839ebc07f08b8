"""Benchmark: peak memory of `preloader export | preloader import` for a multi-GB model.

    .venv/bin/python bench/archive.py [--size 2G]

Makes a model of --size random bytes directly in a cache (one blob, its snapshot link, a completion
record), exports it to stdout and imports it from stdin into an empty cache, both under
/usr/bin/time, then verifies the copy. Prints each side's peak RSS and seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from preloader.cache import records  # noqa: E402
from preloader.cache.layout import Layout  # noqa: E402
from preloader.spec import RepoSpec  # noqa: E402
from preloader.units import parse_size  # noqa: E402


def make_model(layout: Layout, size: int) -> None:
    spec, commit, piece = RepoSpec("model", "org/huge"), "c" * 40, os.urandom(16 * 2**20)
    layout.blobs_dir(spec).mkdir(parents=True)
    temp, digest = layout.blobs_dir(spec) / "temp", hashlib.sha256()
    with open(temp, "wb") as file:
        for _ in range(size // len(piece)):
            file.write(piece)
            digest.update(piece)
    os.replace(temp, layout.blob(spec, digest.hexdigest()))
    snapshot = layout.snapshot_dir(spec, commit)
    snapshot.mkdir(parents=True)
    os.symlink(f"../../blobs/{digest.hexdigest()}", snapshot / "model.safetensors")
    listing = {"model.safetensors": size // len(piece) * len(piece)}
    records.write(layout, spec, records.Record(commit, listing, dict(listing)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="preloader-archive-"))
    try:
        source = Layout.build(work / "a" / "hub")
        make_model(source, parse_size(args.size))
        timed = ["/usr/bin/time", "-f", "%C: peak RSS %M KiB, %e s", sys.executable, "-m", "preloader"]
        env = dict(os.environ, PRELOADER_CACHE_DIR=str(source.cache_dir))
        target = dict(os.environ, PRELOADER_CACHE_DIR=str(work / "b" / "hub"))
        export = subprocess.Popen([*timed, "export", "--all", "-o", "-"], env=env, stdout=subprocess.PIPE, cwd=ROOT)
        imported = subprocess.run([*timed, "import", "-"], env=target, stdin=export.stdout, cwd=ROOT)
        export.stdout.close()
        if export.wait() or imported.returncode:
            raise SystemExit("export or import failed")
        check = subprocess.run([sys.executable, "-m", "preloader", "verify"], env=target, cwd=ROOT)
        print(f"verify of the copy: exit {check.returncode}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
