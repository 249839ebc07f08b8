"""Signals while preloading: turn SIGTERM/SIGINT/SIGHUP and the deadline alarm into exceptions.

Only the CLI installs these, in the main thread. The exception unwinds through
the preload, which removes its partial files on the way out; the CLI then
exits 128+N (or 75 for the deadline) without waiting for download threads.
"""

from __future__ import annotations

import signal

from ..errors import DeadlineExceeded, Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def install(deadline: float | None = None) -> None:
    """Raise Interrupted on a stop signal, DeadlineExceeded when `deadline` seconds have passed."""

    def stop(signum, frame):
        # Once is enough: a second signal during clean-up must not cut the clean-up short.
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    def alarm(signum, frame):
        raise DeadlineExceeded(deadline)

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
    if deadline:
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, deadline)


def uninstall() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s in (*STOP_SIGNALS, signal.SIGALRM):
        signal.signal(s, signal.SIG_DFL)
