"""The hub's failures as our errors: typed where the HTTP answer arrives, then named after the repo.

`status_error` is our `hf_raise_for_status`: the connection pool raises what it returns for every 4xx/5xx,
so a status and the hub's `X-Error-Code` become an error class (and exit code) at the HTTP layer.
`translate` then adds which repo and file it was about, and turns the OS and huggingface_hub errors met
on the way into ours too. Only HubUnreachable and ContentMismatch are worth another attempt.
"""

from __future__ import annotations

import errno
import sys
import time
from urllib.parse import urlsplit

from ..errors import (  # noqa: F401 (ContentMismatch: the HTTP layer's name for it too)
    OS_FAULTS,
    AuthError,
    ContentMismatch,
    HubDataError,
    NotFoundError,
    PreloaderError,
    TransientError,
    os_error,
)
from ..spec import RepoSpec

BUSY_STATUS = (408, 429)  # request timeout, too many requests; and any 5xx (a gateway's or CDN's 520-524 too)


def _busy(status: int) -> bool:
    return status in BUSY_STATUS or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # an HTTP-date: rare, and email's import is not free

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HubUnreachable(TransientError):
    """The hub could not be reached or answered "not now"; `retry_after` holds a server's Retry-After (seconds)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NetworkError(HubUnreachable):
    """The connection failed: refused, reset, cut short or timed out."""


class UntrustedCertificate(AuthError):
    """The server's TLS certificate does not verify: no retry, the user must supply its CA."""


class StatusError(PreloaderError):
    """The server answered with an error status. `status_error` gives the subclass the status means;
    `retry_after` is the server's Retry-After in seconds, `error_code` the hub's X-Error-Code."""

    def __init__(self, status: int, url: str, headers) -> None:
        super().__init__(f"{status} for {urlsplit(url).path}")  # no query: signed URLs carry credentials
        self.status = status
        self.retry_after: float | None = parse_retry_after(headers.get("Retry-After"))
        self.error_code: str | None = headers.get("X-Error-Code")  # the hub's word: RepoNotFound, GatedRepo...


class RefusedStatus(StatusError, AuthError):
    """401/403, or a gated repo (EX_NOPERM)."""


class MissingStatus(StatusError, NotFoundError):
    """404, or the hub's RepoNotFound/RevisionNotFound/EntryNotFound (EX_NOINPUT)."""


class BusyStatus(StatusError, HubUnreachable):
    """408, 429 or a 5xx: the hub (or a gateway in front of it) is not there now; worth another attempt."""


class UnexpectedStatus(StatusError, HubDataError):
    """Any other error status: an answer we do not act on (EX_PROTOCOL), not a bug of ours."""


NOT_FOUND_CODES = ("RepoNotFound", "RevisionNotFound", "EntryNotFound")


def status_error(status: int, url: str, headers) -> StatusError:
    """The typed error for an error answer, as huggingface_hub's `hf_raise_for_status` types them."""
    code = headers.get("X-Error-Code")  # the hub's word first: it answers 401 RepoNotFound to hide private repos
    if code in NOT_FOUND_CODES:
        return MissingStatus(status, url, headers)
    if code == "GatedRepo" or status in (401, 403):
        return RefusedStatus(status, url, headers)
    if status == 404:
        return MissingStatus(status, url, headers)
    if _busy(status):
        return BusyStatus(status, url, headers)
    return UnexpectedStatus(status, url, headers)


def _status(error: BaseException) -> int | None:
    if isinstance(error, StatusError):
        return error.status
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(error: BaseException) -> float | None:
    if isinstance(error, StatusError):
        return error.retry_after
    return parse_retry_after(error.response.headers.get("Retry-After"))


def _hub_error_kind(cause: BaseException) -> str | None:
    """The hub's own word for a refusal (its X-Error-Code), from our answer or a huggingface_hub error."""
    if isinstance(cause, StatusError):
        return cause.error_code
    hf = sys.modules.get("huggingface_hub.errors")  # not loaded: the error cannot be one of its
    if hf is None:
        return None
    for kind, cls in (("GatedRepo", hf.GatedRepoError), ("RepoNotFound", hf.RepositoryNotFoundError),
                      ("RevisionNotFound", hf.RevisionNotFoundError), ("EntryNotFound", hf.EntryNotFoundError)):
        if isinstance(cause, cls) and not isinstance(cause, hf.LocalEntryNotFoundError):
            return kind
    return None


def _refusal(kind: str | None, where: str, token_set: bool) -> PreloaderError | None:
    if kind == "GatedRepo":
        return AuthError(f"{where}: the repo is gated; accept its terms on the hub and use a token that has access")
    if kind == "RepoNotFound":
        hint = "check the name and revision" + ("" if token_set else ", or set a token if it is private")
        return NotFoundError(f"{where}: repository or revision not found or not visible; {hint}")
    if kind == "RevisionNotFound":
        return NotFoundError(f"{where}: revision not found; check the branch, tag or commit")
    if kind == "EntryNotFound":
        return NotFoundError(f"{where}: file not found on the hub")
    return None


def _by_status(cause: BaseException, where: str, token_set: bool) -> PreloaderError | None:
    status = _status(cause)
    if status in (401, 403):
        hint = "the token lacks access to it" if token_set else "it needs a token"
        return AuthError(f"{where}: the hub answered {status}; {hint}")
    if status == 404:
        return NotFoundError(f"{where}: the hub answered 404")
    if status is not None and _busy(status):
        return HubUnreachable(f"{where}: the hub answered {status}", _retry_after(cause))
    return None


def repo_not_found(error: BaseException) -> bool:
    """The hub said the repo itself does not exist (not a revision or a file): the case where the other repo
    type may hold it."""
    kind = _hub_error_kind(error)
    return kind == "RepoNotFound" or (kind is None and _status(error) == 404)


def wrong_type(spec: RepoSpec) -> NotFoundError:
    """A repo asked for as a model that the hub has as a dataset, or the reverse (exit 66)."""
    if spec.repo_type == "model":
        return NotFoundError(f"{spec.repo_id} is a dataset, not a model: put it in RUNPOD_HUGGINGFACE_DATASET "
                             f"(or ask for hf://datasets/{spec.repo_id})")
    return NotFoundError(f"{spec.repo_id} is a model, not a dataset: put it in RUNPOD_HUGGINGFACE_MODEL "
                         f"(or ask for hf://{spec.repo_id})")


def translate(error: BaseException, spec: RepoSpec, token_set: bool, path: str | None = None) -> PreloaderError:
    """Name the repo (and file) in a hub / HTTP / OS error, keeping its class's exit code.

    Re-raises `error` when it is none of those: a bug, shown as such.
    """
    where = f"{spec.repo_type} {spec.repo_id}@{spec.revision}" + (f" file {path}" if path else "")
    hf = sys.modules.get("huggingface_hub.errors")
    # huggingface_hub wraps network failures into LocalEntryNotFoundError when the file is not cached.
    cause = error.__cause__ if hf and isinstance(error, hf.LocalEntryNotFoundError) and error.__cause__ else error
    known = _refusal(_hub_error_kind(cause), where, token_set) or _by_status(cause, where, token_set)
    if known is not None:
        return known
    httpx2 = sys.modules.get("httpx2")  # huggingface_hub's HTTP client
    if httpx2 is not None and isinstance(cause, httpx2.TransportError):  # timeouts, refused or reset connections
        return HubUnreachable(f"{where}: cannot reach the hub ({type(cause).__name__}: {cause})")
    if isinstance(cause, NetworkError):
        return HubUnreachable(f"{where}: cannot reach the hub ({cause})")
    if isinstance(cause, OSError) and errno.errorcode.get(cause.errno or 0) in OS_FAULTS:
        return os_error(cause, f"write the cache for {where}:")
    if (hf and isinstance(cause, hf.HfHubHTTPError)) or isinstance(cause, StatusError):
        # Not a bug of ours: an answer we do not act on, said as such (76), not shown as a traceback (70).
        return HubDataError(f"{where}: unexpected answer from the hub, nothing written: {cause}")
    if isinstance(cause, PreloaderError):
        return cause
    if isinstance(cause, OSError):
        return os_error(cause, f"write the cache for {where}:")
    raise error
