"""Talking to the hub through huggingface_hub: resolve a revision, list its files, fetch files.

Imported only when the network is needed: a cached start must not pay for
importing huggingface_hub and its HTTP stack. Every call gets an explicit
endpoint, token and cache dir; nothing relies on env vars read at import.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

from . import logs
from .errors import AuthError, DiskError, NotFoundError, PreloaderError, TransientError
from .spec import RepoSpec

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class HubUnreachable(TransientError):
    """The hub could not be reached or kept failing; `retry_after` holds a server's Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Silent(hf_tqdm):
    """huggingface_hub's bars, switched off: off a TTY they would be noise in the logs."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def translate(error: BaseException, spec: RepoSpec, token_set: bool, path: str | None = None) -> PreloaderError:
    """Turn a huggingface_hub / HTTP / OS error into ours, with the exit code and a message naming the repo."""
    where = f"{spec.repo_type} {spec.repo_id}@{spec.revision}" + (f" file {path}" if path else "")
    # huggingface_hub wraps network failures into LocalEntryNotFoundError when the file is not cached.
    cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) and error.__cause__ else error
    if isinstance(cause, GatedRepoError):
        return AuthError(f"{where}: the repo is gated; accept its terms on the hub and use a token that has access")
    if isinstance(cause, RepositoryNotFoundError):
        hint = "check the name and revision" + ("" if token_set else ", or set a token if it is private")
        return NotFoundError(f"{where}: repository or revision not found or not visible; {hint}")
    if isinstance(cause, RevisionNotFoundError):
        return NotFoundError(f"{where}: revision not found; check the branch, tag or commit")
    if isinstance(cause, EntryNotFoundError) and not isinstance(cause, LocalEntryNotFoundError):
        return NotFoundError(f"{where}: file not found on the hub")
    status = _status(cause)
    if status in (401, 403):
        hint = "the token lacks access to it" if token_set else "it needs a token"
        return AuthError(f"{where}: the hub answered {status}; {hint}")
    if status == 404:
        return NotFoundError(f"{where}: the hub answered 404")
    if status in RETRYABLE_STATUS:
        from .retry import parse_retry_after

        retry_after = parse_retry_after(cause.response.headers.get("Retry-After"))
        return HubUnreachable(f"{where}: the hub answered {status}", retry_after)
    if isinstance(cause, httpx2.TransportError):  # timeouts, refused or reset connections
        return HubUnreachable(f"{where}: cannot reach the hub ({type(cause).__name__}: {cause})")
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
        return DiskError(f"{where}: {cause.strerror} while writing the cache ({cause.filename or 'cache'})")
    if isinstance(cause, HfHubHTTPError):
        return PreloaderError(f"{where}: unexpected answer from the hub: {cause}")
    if isinstance(cause, PreloaderError):
        return cause
    if isinstance(cause, OSError):
        return DiskError(f"{where}: {cause}")
    raise error


@dataclass(frozen=True)
class Hub:
    endpoint: str
    token: str | None = None
    workers: int = 8
    progress: bool = False

    def _prepare(self) -> None:
        # huggingface_hub reads HF_HUB_OFFLINE once at import and offers no argument for it.
        # We only get here after deciding to go online, so the decision must win.
        constants.HF_HUB_OFFLINE = False
        logs.adopt("huggingface_hub")

    def resolve(self, spec: RepoSpec) -> tuple[str, dict[str, int]]:
        """The commit a revision points at now, and that commit's files with their sizes."""
        self._prepare()
        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        try:
            info = api.repo_info(spec.repo_id, repo_type=spec.repo_type, revision=spec.revision)
            commit = info.sha
            tree = api.list_repo_tree(spec.repo_id, repo_type=spec.repo_type, revision=commit, recursive=True)
            listing = {item.path: item.size for item in tree if isinstance(item, RepoFile)}
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token)) from error
        return commit, listing

    def fetch(
        self,
        spec: RepoSpec,
        commit: str,
        paths: Iterable[str],
        cache_dir: Path,
        on_done: Callable[[str], None] = lambda path: None,
    ) -> None:
        """Download `paths` of `commit` into the cache, several at once; the first failure cancels the rest."""
        self._prepare()
        paths = list(paths)
        if not paths:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(paths)), thread_name_prefix="preloader-fetch")
        try:
            futures = {pool.submit(self._fetch_one, spec, commit, path, cache_dir): path for path in paths}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # raises the first failure
                    on_done(futures[future])
        finally:
            # Do not wait for in-flight files: on failure or a signal the caller is already leaving.
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch_one(self, spec: RepoSpec, commit: str, path: str, cache_dir: Path) -> None:
        try:
            hf_hub_download(
                spec.repo_id,
                path,
                repo_type=spec.repo_type,
                revision=commit,
                cache_dir=cache_dir,
                token=self.token or False,
                endpoint=self.endpoint,
                tqdm_class=None if self.progress else _Silent,
            )
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token), path) from error
