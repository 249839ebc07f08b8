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
from .connections import NetworkError, StatusError
from .errors import AuthError, DiskError, HubDataError, NotFoundError, PreloaderError, TransientError
from .spec import RepoSpec, etag_problem, is_commit, repo_path_problem
from .transfer import RemoteFile, Transfer, make_pool

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class HubUnreachable(TransientError):
    """The hub could not be reached or kept failing; `retry_after` holds a server's Retry-After."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Silent(hf_tqdm):
    """huggingface_hub's bars, switched off: our plan-wide progress replaces them."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _status(error: BaseException) -> int | None:
    if isinstance(error, StatusError):
        return error.status
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(error: BaseException) -> str | None:
    if isinstance(error, StatusError):
        return error.retry_after
    return error.response.headers.get("Retry-After")


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

        retry_after = parse_retry_after(_retry_after(cause))
        return HubUnreachable(f"{where}: the hub answered {status}", retry_after)
    if isinstance(cause, httpx2.TransportError):  # timeouts, refused or reset connections
        return HubUnreachable(f"{where}: cannot reach the hub ({type(cause).__name__}: {cause})")
    if isinstance(cause, NetworkError):
        return HubUnreachable(f"{where}: cannot reach the hub ({cause})")
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
        return DiskError(f"{where}: {cause.strerror} while writing the cache ({cause.filename or 'cache'})")
    if isinstance(cause, HfHubHTTPError):
        return PreloaderError(f"{where}: unexpected answer from the hub: {cause}")
    if isinstance(cause, PreloaderError):
        return cause
    if isinstance(cause, OSError):
        return DiskError(f"{where}: {cause}")
    raise error


def check_listing(spec: RepoSpec, commit: str, files: dict[str, RemoteFile]) -> None:
    """Refuse, before any write, a listing whose names or ids could escape the cache or break it."""
    problems = [] if is_commit(commit or "") else [f"commit {commit!r} is not a 40-hex id"]
    for path, file in files.items():
        why = repo_path_problem(path) or etag_problem(file.etag)
        if why is None and (not isinstance(file.size, int) or file.size < 0):
            why = "size is not a whole number"
        if why:
            problems.append(f"{path!r}: {why}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise HubDataError(f"{spec.repo_type} {spec.repo_id}@{spec.revision}: the hub listed unsafe entries, "
                           f"nothing was written: {shown}")


def xet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("hf_xet") is not None


@dataclass(frozen=True)
class Hub:
    endpoint: str
    token: str | None = None
    workers: int = 8
    transfer: str = "auto"  # auto | hub | parallel
    connections: int = 8
    parallel_threshold: int = 64 * 1024**2
    state_dir: Path | None = None
    lock_timeout: float = 3600.0
    read_timeout: float = 30.0

    def _prepare(self) -> None:
        # huggingface_hub reads HF_HUB_OFFLINE once at import and offers no argument for it.
        # We only get here after deciding to go online, so the decision must win.
        constants.HF_HUB_OFFLINE = False
        constants.HF_HUB_DOWNLOAD_TIMEOUT = self.read_timeout  # likewise read once at import
        logs.adopt("huggingface_hub")

    def resolve(self, spec: RepoSpec) -> tuple[str, dict[str, RemoteFile]]:
        """The commit a revision points at now, and that commit's files (size, etag, Xet or not)."""
        self._prepare()
        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        try:
            info = api.repo_info(spec.repo_id, repo_type=spec.repo_type, revision=spec.revision)
            commit = info.sha
            tree = api.list_repo_tree(spec.repo_id, repo_type=spec.repo_type, revision=commit, recursive=True)
            files = {}
            for item in tree:
                if isinstance(item, RepoFile):
                    etag = (item.lfs.sha256 if item.lfs else item.blob_id) or ""
                    files[item.path] = RemoteFile(item.path, item.size, etag.lower(), xet=bool(item.xet_hash))
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token)) from error
        check_listing(spec, commit, files)
        return commit, files

    def uses_hub_download(self, file: RemoteFile) -> bool:
        """huggingface_hub (and hf_xet) for Xet files in auto mode, or everything in hub mode; ours otherwise."""
        return self.transfer == "hub" or (self.transfer == "auto" and file.xet and xet_available())

    def fetch(
        self,
        spec: RepoSpec,
        commit: str,
        files: Iterable[RemoteFile],
        cache_dir: Path,
        on_bytes: Callable[[int], None] = lambda n: None,
    ) -> None:
        """Download `files` of `commit` into the cache, several at once; the first failure cancels the rest."""
        self._prepare()
        files = sorted(files, key=lambda f: -f.size)  # big ones first: they set the pace
        if not files:
            return
        connections = make_pool(self.read_timeout)
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(files)), thread_name_prefix="preloader-fetch")
        futures = {pool.submit(self._fetch_one, spec, commit, f, cache_dir, connections, on_bytes): f for f in files}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # raises the first failure
        except Exception:
            # Let in-flight files stop before a retry starts the same blobs again.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            # On a signal the caller is leaving: do not wait for threads blocked in a read.
            pool.shutdown(wait=False, cancel_futures=True)
            connections.close()

    def _fetch_one(self, spec: RepoSpec, commit: str, file: RemoteFile, cache_dir: Path, connections,
                   on_bytes: Callable[[int], None]) -> None:
        try:
            if self.uses_hub_download(file):
                hf_hub_download(
                    spec.repo_id,
                    file.path,
                    repo_type=spec.repo_type,
                    revision=commit,
                    cache_dir=cache_dir,
                    token=self.token or False,
                    endpoint=self.endpoint,
                    tqdm_class=_Silent,  # our own plan-wide progress covers it
                )
                on_bytes(file.size)
                return
            Transfer(
                cache_dir=cache_dir, state_dir=self.state_dir or cache_dir / ".locks" / "preloader",
                endpoint=self.endpoint, repo_type=spec.repo_type, repo_id=spec.repo_id, commit=commit, file=file,
                token=self.token, connections=self.connections if file.size >= self.parallel_threshold else 1,
                pool=connections, on_bytes=on_bytes,
            ).run(self.lock_timeout)
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token), file.path) from error
