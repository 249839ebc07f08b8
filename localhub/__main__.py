"""``python -m localhub {build,serve} --root DIR [--port N]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from localhub.mirrors import build_mirrors
from localhub.olah import OlahServer


def _ensure_mirrors(root: Path) -> None:
    # Building is deterministic, so an existing tree is the same one.
    if not (root / "mirrors").exists():
        build_mirrors(root)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localhub", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="create DIR/mirrors (if missing)")
    b.add_argument("--root", type=Path, required=True)
    s = sub.add_parser("serve", help="build if needed, then run olah until SIGTERM/SIGINT")
    s.add_argument("--root", type=Path, required=True)
    s.add_argument("--port", type=int, default=None)
    args = ap.parse_args(argv)

    root = args.root.resolve()
    _ensure_mirrors(root)
    if args.cmd == "build":
        return 0

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with OlahServer(root / "mirrors", root / "olah", args.port) as olah:
        print(f"localhub: serving {olah.url}", flush=True)
        while not stop.wait(0.5):
            if not olah.running:
                sys.stderr.write(f"localhub: olah died; log tail:\n{olah.log_tail()}\n")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
