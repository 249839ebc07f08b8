"""What a person at a terminal sees: the progress bar on a real pty, and how much --log-level lets through."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from conftest import ROOT, preloader_env, run_preloader

MODEL = "org/big-model"


def test_a_tty_gets_one_redrawn_bar_and_no_progress_lines(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:  # read until the child closes its end: EIO on Linux once no process holds the pty open
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")
    text = seen.decode()
    bars = [part for part in text.replace("\r\n", "\n").split("\r") if part.startswith("preloader: [")]
    assert bars, text
    last = re.match(r"preloader: \[(#*)(-*)\] ([\d,.]+)/([\d,.]+) MB ", bars[-1])
    assert last and last[1] == "#" * 30 and last[3] == last[4], bars[-1]  # the bar ends full: done = total
    assert "progress repo=" not in text  # the key=value progress lines are for logs, not a terminal


def test_off_a_tty_there_is_no_bar(hub, cache):
    proc = run_preloader(["run"], preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "preloader: [" not in proc.stderr


def test_log_level_lets_through_only_what_is_at_least_that_severe(hub, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=MODEL)
    info = run_preloader(["run"], env)
    assert info.returncode == 0 and "preloader: done repos=1" in info.stderr
    quiet = run_preloader(["run", "--log-level", "warning"], env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    # A warning (no repo requested) shows at warning and not at error; the error line always shows.
    bare = preloader_env(hub, cache)
    warned = run_preloader(["run"], {**bare, "PRELOADER_LOG_LEVEL": "warning"})
    assert warned.returncode == 0 and "warning:" in warned.stderr
    silent = run_preloader(["run"], {**bare, "PRELOADER_LOG_LEVEL": "error"})
    assert silent.returncode == 0 and silent.stderr == "", silent.stderr
    failed = run_preloader(["run", "--log-level", "error"], {**bare, "RUNPOD_HUGGINGFACE_MODEL": "org/no-such"})
    assert failed.returncode == 66 and failed.stderr.count("preloader: error:") == 1, failed.stderr
