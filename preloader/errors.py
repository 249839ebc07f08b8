"""Errors the library raises; each carries the exit code the CLI turns it into.

The codes follow sysexits.h, as tini and dumb-init users expect from an entrypoint.
"""

from __future__ import annotations


class PreloaderError(Exception):
    """Base class: a failure the user can act on, with the process exit code for it."""

    exit_code = 70
    summary = "a bug in preloader (traceback shown)"

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(PreloaderError):
    """An env var, spec or setting is invalid (EX_CONFIG)."""

    exit_code = 78
    summary = "invalid env var, spec or setting"


class NotFoundError(PreloaderError):
    """A repo, revision or file does not exist, or is not visible with this token (EX_NOINPUT)."""

    exit_code = 66
    summary = "repo, revision or file not found (or private without a token)"


class AuthError(PreloaderError):
    """401/403, a gated repo or a missing token (EX_NOPERM)."""

    exit_code = 77
    summary = ("auth: 401/403, gated repo, untrusted TLS certificate; permission denied on a file or folder, "
               "a read-only volume")


class TransientError(PreloaderError):
    """The hub kept failing, a deadline passed or a lock wait timed out (EX_TEMPFAIL)."""

    exit_code = 75
    summary = "hub unreachable after retries, deadline passed, lock wait timed out, offline and not cached"


class DiskError(PreloaderError):
    """Disk full or another I/O error on the cache volume (EX_IOERR)."""

    exit_code = 74
    summary = "disk full or I/O error"


class UnsafePathError(PreloaderError):
    """A path we would write through leads out of the cache, or is a planted symlink (EX_CANTCREAT)."""

    exit_code = 73
    summary = "a path we would write or delete through is a planted symlink or leads out of the cache"


class HubDataError(PreloaderError):
    """The hub sent something we refuse to act on: hostile file names, malformed ids (EX_PROTOCOL)."""

    exit_code = 76
    summary = ("the hub or an archive sent something unsafe (hostile names, malformed ids, wrong bytes); "
               "nothing written")


class ArchiveError(HubDataError):
    """An archive to import is hostile or damaged: links, devices, paths out, bytes not matching (EX_PROTOCOL)."""


class UnavailableError(PreloaderError):
    """A requested resource is absent, e.g. a GPU (EX_UNAVAILABLE)."""

    exit_code = 69
    summary = "a requested resource is absent (a GPU, torch, locked memory)"


class ServiceError(PreloaderError):
    """The service command cannot be executed: 127 when not found, 126 when not executable."""

    exit_code = 126
    summary = "the service cannot be executed (126) / is not found (127)"


def exit_codes() -> list[tuple[str, str]]:
    """(code, meaning) for every exit code preloader itself uses, from the error classes: `--help` and the
    docs/exit-codes.md show this list."""
    found: dict[int, str] = {}
    pending = [PreloaderError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "summary" in cls.__dict__:
            found[cls.exit_code] = cls.summary
    rows = [("0", "success"), ("1", "a check found a problem: status not ready, verify found damage, doctor failed"),
            ("2", "bad command-line usage")]
    order = (78, 66, 77, 75, 74, 73, 76, 65, 79, 69, 70, 126)  # settings, the hub, the disk, refusals, bugs, service
    rows += [("126/127" if code == ServiceError.exit_code else str(code), found[code])
             for code in sorted(found, key=lambda code: order.index(code) if code in order else len(order))]
    return rows + [("128+N", "killed by signal N before the hand-off (143 for SIGTERM)")]


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


def listed(problems: list[str], first: int = 5) -> str:
    """Problems joined into one line: the first few, and how many more there are (a list of thousands of bad
    items must not make a line of megabytes)."""
    shown = "; ".join(problems[:first])
    return shown + (f"; ... and {len(problems) - first} more" if len(problems) > first else "")


class PermissionDeniedError(AuthError):
    """This user may not read or write a path, or its volume is mounted read-only (EACCES, EPERM, EROFS).

    The same code as a refused token (EX_NOPERM): in both cases nothing is wrong with the data, and what fixes
    it is a grant (chown, chmod, a read-write mount, a token with access)."""


OS_FAULTS = ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EIO")  # never a bug, named file or not


def os_error(error: OSError, doing: str = "use") -> PreloaderError:
    """The PreloaderError for an OSError met while `doing` (a verb: "write", "read", "lock") its path: one line
    naming the path and what to do. Read-only is said only when the volume is (EROFS); a full volume or an I/O
    error is 74; a path that is a file where a folder should be, or a dangling link, says so."""
    import errno
    import os

    path = error.filename if error.filename is not None else "a file (the system did not say which)"
    if error.filename2 is not None:
        path = f"{path} -> {error.filename2}"
    reason = error.strerror or str(error)
    if error.errno == errno.EROFS:
        return PermissionDeniedError(f"cannot {doing} {path}: the volume is mounted read-only; mount it read-write, "
                                     "or name it in PRELOADER_READ_CACHES to only read it")
    if error.errno in (errno.EACCES, errno.EPERM):
        uid = os.geteuid() if hasattr(os, "geteuid") else "?"
        return PermissionDeniedError(f"cannot {doing} {path}: permission denied for uid {uid}; give this user access "
                                     "(chown or chmod the volume, or a shared group with umask 002) or run as its "
                                     "owner")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskError(f"cannot {doing} {path}: {reason}; free space (`preloader prune --max-size ...`) or use a "
                         "bigger volume")
    if error.errno == errno.ENOTDIR:
        return DiskError(f"cannot {doing} {path}: a file stands where a folder should be ({reason}); move it away or "
                         "point the setting at a folder")
    if error.errno == errno.ENOENT:
        if error.filename is not None and os.path.islink(error.filename):
            return DiskError(f"cannot {doing} {path}: it is a dangling symlink (to {os.readlink(error.filename)}); "
                             "mount or create its target, or remove the link")
        return DiskError(f"cannot {doing} {path}: {reason}; check that its folder exists and is mounted")
    if error.errno == errno.EIO:
        return DiskError(f"cannot {doing} {path}: {reason}; the volume may be failing: check dmesg, then "
                         "`preloader verify --repair`")
    return DiskError(f"cannot {doing} {path}: {reason}")


class OutputClosedError(PreloaderError):
    """The reader of our output went away before the end (`| head -c 1000`): not a bug, 128 + SIGPIPE."""

    exit_code = 141
    summary = "the reader of the output (a pipe) closed before the end: 128 + SIGPIPE, as a shell reports it"


class LockTimeoutError(TransientError):
    """A lock wait timed out (PRELOADER_LOCK_TIMEOUT): final, never retried, since another wait would only
    multiply the timeout the user set; the process holding the lock is still at work (EX_TEMPFAIL)."""


class NotCachedError(TransientError):
    """Offline (PRELOADER_OFFLINE, HF_HUB_OFFLINE) and the request is not complete in the cache (EX_TEMPFAIL:
    going online, or a preload elsewhere, fixes it)."""


class PartialRemovalError(DiskError):
    """A removal that failed part-way (a file this user may not delete, a read-only or failing folder): what is
    left is named, and nothing of it is counted as removed or freed."""

    def __init__(self, path, failures: list[tuple[str, OSError]]) -> None:
        self.path, self.failures = path, failures
        first, error = failures[0]
        more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
        super().__init__(f"could not remove {path} completely: {first}: {error.strerror or error}{more}; "
                         "what is left stays, and is not counted as removed: fix the permissions or the "
                         "volume, then run it again")


class ContentMismatch(TransientError):
    """The bytes received are not the ones asked for (wrong hash, too many, not the range asked), or another
    writer took the partial file away or shrank it: what was written is dropped and the file is fetched again
    (retried, as a hub error is)."""


class SignatureError(PreloaderError):
    """A model's signature refused it (PRELOADER_SIGNATURE): no signature where one is required, a signature
    that does not verify with the trusted key, certificate or identity, or a selected file it does not list
    or whose digest differs. Nothing in the cache is deleted: the bytes may be evidence (EX_DATAERR)."""

    exit_code = 65
    summary = "a model's signature refused it (missing, untrusted, or not matching the files): not started"


class PolicyRefusedError(PreloaderError):
    """The plan breaks a policy the deployment set: the lock file (PRELOADER_LOCKFILE) or the pickle policy
    (PRELOADER_PICKLE=refuse). Nothing was started and nothing in the cache deleted. Not the code of a
    signature refusal, which has its own."""

    exit_code = 79
    summary = ("lock refused: files, digests or repos not as the lock file says (PRELOADER_LOCKFILE), or pickle "
               "weights with PRELOADER_PICKLE=refuse; nothing started, nothing deleted")


class LockRefusedError(PolicyRefusedError):
    """A snapshot is not what the lock file pins: another commit, a file of another digest, a file missing or
    not locked, a repo the lock does not hold."""


class PickleRefusedError(PolicyRefusedError):
    """PRELOADER_PICKLE=refuse and the plan selects pickle-format weights."""
