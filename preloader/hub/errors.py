"""Turning hub, HTTP and OS failures into our errors, with the exit code and the repo they are about."""

from __future__ import annotations

import errno
import sys

from ..errors import OS_FAULTS, AuthError, HubDataError, NotFoundError, PreloaderError, TransientError, os_error
from ..preloading.retry import parse_retry_after
from ..spec import RepoSpec
from .connections import NetworkError, StatusError

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class HubUnreachable(TransientError):
    """The hub could not be reached or kept failing; `retry_after` holds a server's Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _status(error: BaseException) -> int | None:
    if isinstance(error, StatusError):
        return error.status
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(error: BaseException) -> str | None:
    if isinstance(error, StatusError):
        return error.retry_after
    return error.response.headers.get("Retry-After")


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
    if status in RETRYABLE_STATUS:
        return HubUnreachable(f"{where}: the hub answered {status}", parse_retry_after(_retry_after(cause)))
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
    """Turn a hub / HTTP / OS error into ours, with the exit code and a message naming the repo.

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
        if (_status(cause) or 0) >= 500:  # a gateway's or CDN's own 5xx (520-524...): the hub is not there now
            return HubUnreachable(f"{where}: the hub answered {_status(cause)}",
                                  parse_retry_after(_retry_after(cause)))
        # Not a bug of ours: an answer we do not act on, said as such (76), not shown as a traceback (70).
        return HubDataError(f"{where}: unexpected answer from the hub, nothing written: {cause}")
    if isinstance(cause, PreloaderError):
        return cause
    if isinstance(cause, OSError):
        return os_error(cause, f"write the cache for {where}:")
    raise error
