"""Talking to the hub: resolve a revision and list its files over the hub's REST API, fetch files.

Resolving and our own transfers need only the standard library. huggingface_hub,
whose import (with its HTTP stack) is most of a cold start's CPU time, is imported
only for the files it fetches itself: Xet files, or everything with
PRELOADER_TRANSFER=hub. Every call gets an explicit endpoint, token and cache dir;
nothing relies on env vars read at import.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote, urljoin

from . import logs
from .connections import Connections, NetworkError, StatusError
from .errors import AuthError, DiskError, HubDataError, NotFoundError, PreloaderError, TransientError
from .spec import RepoSpec, etag_problem, is_commit, repo_path_problem
from .transfer import RemoteFile, Transfer, read_size_for

logger = logging.getLogger(__name__)

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


def translate(error: BaseException, spec: RepoSpec, token_set: bool, path: str | None = None) -> PreloaderError:
    """Turn a hub / HTTP / OS error into ours, with the exit code and a message naming the repo."""
    where = f"{spec.repo_type} {spec.repo_id}@{spec.revision}" + (f" file {path}" if path else "")
    hf = sys.modules.get("huggingface_hub.errors")
    # huggingface_hub wraps network failures into LocalEntryNotFoundError when the file is not cached.
    cause = error.__cause__ if hf and isinstance(error, hf.LocalEntryNotFoundError) and error.__cause__ else error
    kind = _hub_error_kind(cause)
    if kind == "GatedRepo":
        return AuthError(f"{where}: the repo is gated; accept its terms on the hub and use a token that has access")
    if kind == "RepoNotFound":
        hint = "check the name and revision" + ("" if token_set else ", or set a token if it is private")
        return NotFoundError(f"{where}: repository or revision not found or not visible; {hint}")
    if kind == "RevisionNotFound":
        return NotFoundError(f"{where}: revision not found; check the branch, tag or commit")
    if kind == "EntryNotFound":
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
    httpx2 = sys.modules.get("httpx2")  # huggingface_hub's HTTP client
    if httpx2 is not None and isinstance(cause, httpx2.TransportError):  # timeouts, refused or reset connections
        return HubUnreachable(f"{where}: cannot reach the hub ({type(cause).__name__}: {cause})")
    if isinstance(cause, NetworkError):
        return HubUnreachable(f"{where}: cannot reach the hub ({cause})")
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
        return DiskError(f"{where}: {cause.strerror} while writing the cache ({cause.filename or 'cache'})")
    if (hf and isinstance(cause, hf.HfHubHTTPError)) or isinstance(cause, StatusError):
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

    @cached_property
    def _pool(self) -> Connections:  # API calls and transfers: kept alive from one request to the next
        return Connections(self.read_timeout)

    def _api(self, url: str) -> tuple[object, str | None]:
        """GET a hub API URL: its JSON, and the next page's URL (the `Link: <...>; rel="next"` header)."""
        headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {self.token}"} if self.token else {})
        with self._pool.get(url, headers, origin=self.endpoint) as response:
            body = response.read()
            link = response.headers.get("Link") or ""
        following = next((part.split(">")[0].split("<")[-1] for part in link.split(",") if 'rel="next"' in part),
                         None)
        try:
            return json.loads(body), urljoin(url, following) if following else None
        except ValueError:
            raise HubDataError(f"the hub's answer to {url.split('?')[0]} is not JSON") from None

    def resolve(self, spec: RepoSpec) -> tuple[str, dict[str, RemoteFile]]:
        """The commit a revision points at now, and that commit's files (size, etag, Xet or not)."""
        api = f"{self.endpoint}/api/{spec.repo_type}s/{spec.repo_id}"
        try:
            info, _ = self._api(f"{api}/revision/{quote(spec.revision, safe='')}")
            commit = info.get("sha") if isinstance(info, dict) else None
            if not isinstance(commit, str) or not is_commit(commit):
                check_listing(spec, str(commit), {})  # raises, before the id goes into a URL
            files: dict[str, RemoteFile] = {}
            url: str | None = f"{api}/tree/{commit}?recursive=true"
            while url:
                page, url = self._api(url)
                for item in page if isinstance(page, list) else [page]:
                    if isinstance(item, dict) and item.get("type") in ("directory", "folder"):
                        continue
                    file = _listed_file(item)
                    if file is None:
                        raise HubDataError(f"{spec.repo_type} {spec.repo_id}@{spec.revision}: the hub listed a "
                                           f"malformed entry, nothing was written: {str(item)[:200]}")
                    files[file.path] = file
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
        files = sorted(files, key=lambda f: -f.size)  # big ones first: they set the pace
        if not files:
            return
        workers = min(self.workers, len(files))
        big = min(workers, sum(1 for f in files if f.size >= self.parallel_threshold))
        read_size = read_size_for(big * self.connections + (workers - big))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preloader-fetch")
        futures = {pool.submit(self._fetch_one, spec, commit, f, cache_dir, read_size, on_bytes): f
                   for f in files}
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
            self._pool.close()  # the idle ones: dozens of CDN connections must not stay open

    def _fetch_one(self, spec: RepoSpec, commit: str, file: RemoteFile, cache_dir: Path, read_size: int,
                   on_bytes: Callable[[int], None]) -> None:
        try:
            if self.uses_hub_download(file):
                from huggingface_hub import constants, hf_hub_download

                # huggingface_hub reads HF_HUB_OFFLINE once at import and offers no argument for it.
                # We only get here after deciding to go online, so the decision must win.
                constants.HF_HUB_OFFLINE = False
                constants.HF_HUB_DOWNLOAD_TIMEOUT = self.read_timeout  # likewise read once at import
                logs.adopt("huggingface_hub")
                hf_hub_download(
                    spec.repo_id,
                    file.path,
                    repo_type=spec.repo_type,
                    revision=commit,
                    cache_dir=cache_dir,
                    token=self.token or False,
                    endpoint=self.endpoint,
                    tqdm_class=_silent_bars(),  # our own plan-wide progress covers it
                )
                on_bytes(file.size)
                return
            Transfer(
                cache_dir=cache_dir, state_dir=self.state_dir or cache_dir / ".locks" / "preloader",
                endpoint=self.endpoint, repo_type=spec.repo_type, repo_id=spec.repo_id, commit=commit, file=file,
                token=self.token, connections=self.connections if file.size >= self.parallel_threshold else 1,
                pool=self._pool, on_bytes=on_bytes, read_size=read_size,
            ).run(self.lock_timeout)
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token), file.path) from error


def _listed_file(item: object) -> RemoteFile | None:
    """A file of a tree listing (`oid`: git blob id; `lfs.oid`: sha256), or None if it is malformed."""
    if not isinstance(item, dict) or item.get("type", "file") != "file":
        return None
    lfs = item.get("lfs")
    etag = lfs.get("oid") if isinstance(lfs, dict) else item.get("oid")
    path, size = item.get("path"), item.get("size")
    if not isinstance(path, str) or not isinstance(etag, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    return RemoteFile(path, size, etag.lower(), xet=bool(item.get("xetHash")))


def _silent_bars():
    """huggingface_hub's bars, switched off: our plan-wide progress replaces them."""
    from huggingface_hub.utils.tqdm import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
