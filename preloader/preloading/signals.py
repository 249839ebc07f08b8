"""Signals while preloading: turn SIGTERM/SIGINT/SIGHUP and the deadline alarm into exceptions; and the
dispositions the service gets at the hand-off.

Only the CLI installs these, in the main thread. The exception unwinds through
the preload, which removes its partial files on the way out; the CLI then
exits 128+N (or 75 for the deadline) without waiting for download threads.

A signal the parent set to ignored (`nohup` ignores SIGHUP, a shell's `&` SIGINT and SIGQUIT) stays
ignored, for the preload and for the service, as `exec` would leave it: the dispositions are recorded
before any handler of ours is installed. SIGPIPE and SIGXFSZ are the exception: Python itself ignores
them at start-up, whatever the parent did, so the service gets them at their defaults.
"""

from __future__ import annotations

import signal

from ..errors import DeadlineExceeded, Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# What the service gets back at its default, unless the parent had ignored it.
EXEC_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGTERM", "SIGINT", "SIGHUP",
                                                         "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))
PYTHON_IGNORES = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))

_inherited: dict[int, object] = {}  # signal -> its disposition before we installed anything


def remember() -> None:
    """Record the dispositions this process started with, once, before any handler of ours."""
    for signum in EXEC_SIGNALS:
        if signum not in _inherited:
            _inherited[signum] = signal.getsignal(signum)


def ignored_by_parent() -> set[int]:
    """The signals the parent left ignored (Python's own SIGPIPE/SIGXFSZ not counted)."""
    remember()
    return {s for s, how in _inherited.items() if how == signal.SIG_IGN and s not in PYTHON_IGNORES}


def install(deadline: float | None = None) -> None:
    """Raise Interrupted on a stop signal, DeadlineExceeded when `deadline` seconds have passed."""
    remember()
    ignored = ignored_by_parent()

    def stop(signum, frame):
        # Once is enough: a second signal during clean-up must not cut the clean-up short.
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    def alarm(signum, frame):
        raise DeadlineExceeded(deadline)

    for s in STOP_SIGNALS:
        if s not in ignored:
            signal.signal(s, stop)
    if deadline:
        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, deadline)


def uninstall() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    ignored = ignored_by_parent()
    for s in (*STOP_SIGNALS, signal.SIGALRM):
        signal.signal(s, signal.SIG_IGN if s in ignored else signal.SIG_DFL)


def for_exec() -> None:
    """The dispositions `exec` should pass on: the parent's ignored ones ignored, every other at its default
    (handlers do not survive exec, but an ignored signal does)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    ignored = ignored_by_parent()
    for signum in EXEC_SIGNALS:
        signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
