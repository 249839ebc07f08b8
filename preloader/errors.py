"""Errors the library raises; each carries the exit code the CLI turns it into.

The codes follow sysexits.h, as tini and dumb-init users expect from an entrypoint.
"""

from __future__ import annotations


class PreloaderError(Exception):
    """Base class: a failure the user can act on, with the process exit code for it."""

    exit_code = 70

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(PreloaderError):
    """An env var, spec or setting is invalid (EX_CONFIG)."""

    exit_code = 78


class NotFoundError(PreloaderError):
    """A repo, revision or file does not exist, or is not visible with this token (EX_NOINPUT)."""

    exit_code = 66


class AuthError(PreloaderError):
    """401/403, a gated repo or a missing token (EX_NOPERM)."""

    exit_code = 77


class TransientError(PreloaderError):
    """The hub kept failing, a deadline passed or a lock wait timed out (EX_TEMPFAIL)."""

    exit_code = 75


class DiskError(PreloaderError):
    """Disk full or another I/O error on the cache volume (EX_IOERR)."""

    exit_code = 74


class UnsafePathError(PreloaderError):
    """A path we would write through leads out of the cache, or is a planted symlink (EX_CANTCREAT)."""

    exit_code = 73


class HubDataError(PreloaderError):
    """The hub sent something we refuse to act on: hostile file names, malformed ids (EX_PROTOCOL)."""

    exit_code = 76


class UnavailableError(PreloaderError):
    """A requested resource is absent, e.g. a GPU (EX_UNAVAILABLE)."""

    exit_code = 69


class ServiceError(PreloaderError):
    """The service command cannot be executed: 127 when not found, 126 when not executable."""

    exit_code = 126


class Aborted(BaseException):
    """The run was cut short from outside: a signal, or the overall deadline.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in a
    retry loop or a library swallows it.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(Aborted):
    """A signal arrived while preloading: exit 128 + N, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}", 128 + signum)
        self.signum = signum


class DeadlineExceeded(Aborted):
    """The overall deadline (PRELOADER_TIMEOUT) passed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"deadline of {seconds:g} s passed before the preload finished; "
            "raise PRELOADER_TIMEOUT or check the hub",
            TransientError.exit_code,
        )
