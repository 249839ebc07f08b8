"""The hub client: resolve a revision and list its files over the hub's REST API, fetch files into the cache.

Resolving and our own transfers need only the standard library. huggingface_hub,
whose import (with its HTTP stack) is most of a cold start's CPU time, is imported
only for the files it fetches itself: Xet files, or everything with
PRELOADER_TRANSFER=hub. Every call gets an explicit endpoint, token and layout;
nothing relies on env vars read at import, and huggingface_hub's module globals are
left as the host had them once a fetch returns (`_hub_globals`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote, urljoin

from .. import logs
from ..cache.layout import Layout
from ..config import DEFAULTS, Settings, TransferKind
from ..errors import HubDataError
from ..spec import RepoSpec, is_commit
from .connections import Connections
from .errors import StatusError, repo_not_found, translate, wrong_type
from .listing import RemoteFile, check_listing, listed_file, resolve_url

logger = logging.getLogger(__name__)


def xet_available() -> bool:
    return importlib.util.find_spec("hf_xet") is not None


@dataclass(frozen=True)
class Hub:
    endpoint: str
    layout: Layout
    token: str | None = None
    workers: int = DEFAULTS["workers"]
    transfer: TransferKind = DEFAULTS["transfer"]
    connections: int = DEFAULTS["connections"]
    parallel_threshold: int = DEFAULTS["parallel_threshold"]
    lock_timeout: float = DEFAULTS["lock_timeout"]
    read_timeout: float = DEFAULTS["read_timeout"]
    tiers: tuple[Layout, ...] = ()  # read-only caches whose blobs are linked or copied, not downloaded

    @classmethod
    def from_settings(cls, settings: Settings) -> Hub:
        """The hub client every command uses: the settings' endpoint, token, layout and transfer options."""
        s = settings
        return cls(s.endpoint, s.layout, s.token, workers=s.workers, transfer=s.transfer, connections=s.connections,
                   parallel_threshold=s.parallel_threshold, lock_timeout=s.lock_timeout, read_timeout=s.read_timeout,
                   tiers=tuple(Layout.build(path) for path in s.read_caches))

    @cached_property
    def _pool(self) -> Connections:  # API calls and transfers: kept alive from one request to the next
        return Connections(self.read_timeout)

    @cached_property
    def _stopper(self):
        from .rangemap import Stopper

        return Stopper()

    def stop_writing(self) -> None:
        """An interrupted run is leaving: download threads still running write nothing more to our state
        (see rangemap.Stopper); the caller then removes what they left."""
        self._stopper.stop()

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

    def probe(self) -> int:
        """The status of one small API answer (`/api/models?limit=1`) over the transfer's own connections:
        certificates, proxy, token and timeouts as a download gets them. Any answer means the hub is there;
        raises NetworkError or UntrustedCertificate when it cannot be reached."""
        headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {self.token}"} if self.token else {})
        try:
            with self._pool.get(f"{self.endpoint}/api/models?limit=1", headers, origin=self.endpoint) as response:
                response.read()
                return response.status
        except StatusError as error:
            return error.status
        finally:
            self._pool.close()

    def resolve(self, spec: RepoSpec) -> tuple[str, dict[str, RemoteFile]]:
        """The commit a revision points at now, and that commit's files (size, etag, Xet or not)."""
        api = f"{self.endpoint}/api/{spec.repo_type}s/{spec.repo_id}"
        info = None
        try:
            info, _ = self._api(f"{api}/revision/{quote(spec.revision, safe='')}")
            commit = info.get("sha") if isinstance(info, dict) else None
            if not isinstance(commit, str) or not is_commit(commit):
                check_listing(spec, str(commit), {})  # raises, before the id goes into a URL
            files = self._list(spec, f"{api}/tree/{commit}?recursive=true")
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            if info is None and repo_not_found(error) and self._exists_as_other_type(spec):
                raise wrong_type(spec) from error
            raise translate(error, spec, bool(self.token)) from error
        check_listing(spec, commit, files)
        return commit, files

    def _exists_as_other_type(self, spec: RepoSpec) -> bool:
        """One question to the hub after a "repo not found": is there a repo of the other type by that id?"""
        other = "datasets" if spec.repo_type == "model" else "models"
        try:
            info, _ = self._api(f"{self.endpoint}/api/{other}/{spec.repo_id}/revision/{quote(spec.revision, safe='')}")
        except Exception:  # noqa: BLE001 - no answer is no hint: the original error stands
            return False
        return isinstance(info, dict) and isinstance(info.get("sha"), str) and is_commit(info["sha"])

    def _list(self, spec: RepoSpec, url: str | None) -> dict[str, RemoteFile]:
        files: dict[str, RemoteFile] = {}
        while url:
            page, url = self._api(url)
            for item in page if isinstance(page, list) else [page]:
                if isinstance(item, dict) and item.get("type") in ("directory", "folder"):
                    continue
                file = listed_file(item)
                if file is None:
                    raise HubDataError(f"{spec.repo_type} {spec.repo_id}@{spec.revision}: the hub listed a "
                                       f"malformed entry, nothing was written: {str(item)[:200]}")
                files[file.path] = file
        return files

    def read(self, spec: RepoSpec, commit: str, file: RemoteFile, limit: int = 64 << 20) -> bytes:
        """A small file of `commit` into memory (an index json, to know its shards before the download)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            if file.size > limit:
                raise HubDataError(f"{spec.repo_type} {spec.repo_id}@{spec.revision}: {file.path} is "
                                   f"{file.size:,} bytes, too big to read as an index")
            with self._pool.get(resolve_url(self.endpoint, spec, commit, file.path), headers,
                                origin=self.endpoint) as response:
                return response.read()  # no bigger than the listing said: checked above
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token), file.path) from error

    def uses_hub_download(self, file: RemoteFile) -> bool:
        """huggingface_hub (and hf_xet) for Xet files in auto mode, or everything in hub mode; ours otherwise."""
        return self.transfer == "hub" or (self.transfer == "auto" and file.xet and xet_available())

    def fetch(self, spec: RepoSpec, commit: str, files: Iterable[RemoteFile],
              on_bytes: Callable[[int], None] = lambda n: None) -> None:
        """Download `files` of `commit` into the cache, several at once; the first failure cancels the rest."""
        from .transfer import read_size_for  # the transfer's modules load when a file is fetched, not to resolve

        files = sorted(files, key=lambda f: -f.size)  # big ones first: they set the pace
        if not files:
            return
        workers = min(self.workers, len(files))
        big = min(workers, sum(1 for f in files if f.size >= self.parallel_threshold))
        read_size = read_size_for(big * self.connections + (workers - big))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preloader-fetch")
        futures = [pool.submit(self._fetch_one, spec, commit, f, read_size, on_bytes) for f in files]
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

    def _fetch_one(self, spec: RepoSpec, commit: str, file: RemoteFile, read_size: int,
                   on_bytes: Callable[[int], None]) -> None:
        try:
            if self.uses_hub_download(file):
                self._hub_download(spec, commit, file)
                on_bytes(file.size)
                return
            from .source import RemoteSource
            from .transfer import Transfer

            source = RemoteSource(resolve_url(self.endpoint, spec, commit, file.path), self.token, self._pool,
                                  name=file.path, read_size=read_size, on_bytes=on_bytes)
            connections = self.connections if file.size >= self.parallel_threshold else 1
            Transfer(self.layout, spec, commit, file, source, connections, self.tiers,
                     self._stopper).run(self.lock_timeout)
        except Exception as error:  # noqa: BLE001 - translate() re-raises what it does not know
            raise translate(error, spec, bool(self.token), file.path) from error

    def _hub_download(self, spec: RepoSpec, commit: str, file: RemoteFile) -> None:
        from huggingface_hub import hf_hub_download

        logs.imported("huggingface_hub")  # its logger through the CLI's handler, in the CLI's process only
        with _hub_globals(self.read_timeout):
            hf_hub_download(
                spec.repo_id, file.path, repo_type=spec.repo_type, revision=commit, cache_dir=self.layout.cache_dir,
                token=self.token or False, endpoint=self.endpoint,
                tqdm_class=_silent_bars(),  # our own plan-wide progress covers it
            )


# huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_DOWNLOAD_TIMEOUT once, at import, into module globals, and
# its download function takes no argument for either. We only fetch after deciding to go online (offline=False
# wins over HF_HUB_OFFLINE=1), so for the length of a fetch they say what the settings say; then the host's
# values come back, whatever happened. Downloads of several threads (or several Hub objects) overlap: the
# first one in saves, the last one out restores.
_globals_lock = threading.Lock()
_globals_users = 0
_globals_saved: dict[str, object] = {}


@contextmanager
def _hub_globals(read_timeout: float) -> Iterator[None]:
    global _globals_users
    from huggingface_hub import constants

    wanted = {"HF_HUB_OFFLINE": False, "HF_HUB_DOWNLOAD_TIMEOUT": read_timeout}
    with _globals_lock:
        if _globals_users == 0:
            _globals_saved.update({name: getattr(constants, name) for name in wanted})
            for name, value in wanted.items():
                setattr(constants, name, value)
        _globals_users += 1
    try:
        yield
    finally:
        with _globals_lock:
            _globals_users -= 1
            if _globals_users == 0:
                for name, value in _globals_saved.items():
                    setattr(constants, name, value)
                _globals_saved.clear()


def _silent_bars():
    """huggingface_hub's bars, switched off: our plan-wide progress replaces them."""
    from huggingface_hub.utils.tqdm import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
