"""The Python API for worker init code: explicit arguments in, result objects out.

It never prints, exits or reads the environment; use `Settings.load(os.environ)`
and `preload_settings()` to get the CLI's env-driven behaviour.

Every keyword is a setting of `options.OPTIONS` by its name (`cache_dir`, `timeout`, `retries`, ...), parsed
by the same code as the CLI's flags and env vars: `timeout="10s"` works as `--timeout 10s` does, and a bad
value raises ConfigError naming the keyword (`timeout=-1: ...`) before any network call or write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from . import logs
from .cache import records
from .config import Settings
from .errors import ConfigError, NotFoundError
from .preloading.engine import Preloader
from .preloading.results import PreloadResult
from .preloading.waiting import wait_ready
from .spec import REPO_TYPES, RepoSpec, parse_given, parse_specs
from .tokens import secrets_in
from .warm.mode import Dtype, WarmMode

Specs = str | Iterable[str | RepoSpec] | None


def settings_for(models: Specs = None, datasets: Specs = None, *, _names: dict[str, str] | None = None,
                 **keywords) -> Settings:
    """Settings from explicit arguments: any setting's name as a keyword (see `options.OPTIONS`);
    `cache_dir` defaults to ~/.cache/huggingface/hub. ConfigError for an unknown keyword or a bad value."""
    keywords = {"models": models, "datasets": datasets, **keywords}
    for secret in secrets_in({}, keywords):  # before anything that could fail and show one
        logs.add_secret(secret)
    return Settings.load({}, keywords=keywords, names=_names)


def preload(models: Specs = None, datasets: Specs = None, **options) -> list[PreloadResult]:
    """Preload models and datasets (`"user/name[:revision]"` strings); return one result per repo.

    Keyword options are those of `settings_for`. Raises a PreloaderError
    subclass, whose `exit_code` says what kind of failure it was.
    """
    return preload_settings(settings_for(models, datasets, **options))


def preload_settings(settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> list[PreloadResult]:
    """Preload what `settings` asks for."""
    return Preloader(settings, sleep=sleep).run()


def wait(
    models: Specs = None, datasets: Specs = None, *, timeout: float | None = None, **options
) -> list[PreloadResult]:
    """Block until another process has preloaded these repos into the cache; TransientError at `timeout`."""
    settings = settings_for(models, datasets, timeout=timeout, **options)
    return wait_ready(settings, timeout=settings.timeout)


def warm_results(results: Iterable[PreloadResult], mode: WarmMode, *, dtype: Dtype | None = None,
                 lock: bool = False) -> list:
    """Warm every model among `results` as `mode` says; one WarmReport per model."""
    if mode.kind == "none":
        return []
    from .warm.snapshot import warm_snapshot  # warming's modules only when warming is asked for

    return [warm_snapshot(r.path, mode, repo=r.repo_id, dtype=dtype, lock=lock)
            for r in results if r.repo_type == "model"]


def warm(models: Specs = None, *, mode: str | WarmMode = "page-cache", dtype: Dtype | None = None,
         lock: bool = False, **options) -> list:
    """Warm models already complete in the cache (no network): page cache or GPU. One WarmReport each.

    Raises NotFoundError (66) for a model that is not complete in the cache.
    """
    settings = settings_for(models, None, warm=mode, dtype=dtype, warm_lock=lock, _names={"warm": "mode",
                            "warm_lock": "lock"}, **options)
    mode, dtype, lock = settings.warm, settings.dtype, settings.warm_lock
    results = []
    for spec in settings.models:
        state = records.check(settings.layout, spec)
        if not state.complete:
            raise NotFoundError(f"{spec} is not complete in the cache {settings.cache_dir}: {state.detail}; "
                                "run `preloader run` first")
        results.append(PreloadResult.of(settings.layout, state))
    return warm_results(results, mode, dtype=dtype, lock=lock)


class Cache:
    """A hub cache you can hold in code, like llama-cpp-python's LlamaDiskCache: a mapping from repo specs
    to complete snapshot paths, with an optional capacity in bytes.

        cache = preloader.Cache("/runpod-volume/hub", capacity_bytes=200 * 2**30)
        cache.preload(models=["org/model-a"])          # evicts least recently used snapshots past 200 GiB
        path = cache["org/model-a"]                    # KeyError unless complete
        "hf://datasets/org/data@v1.0" in cache
        for spec in cache: ...                         # every complete snapshot, pinned to its commit
        del cache["org/model-a:dev"]                   # that revision and what only it used

    A spec is a RepoSpec or a string in any form the env vars take (`hf://datasets/...` for a dataset).
    `options` are those of `settings_for` (state_dir, token, endpoint, ...).
    """

    def __init__(self, cache_dir: str | Path, capacity_bytes: int | None = None, **options) -> None:
        if cache_dir is None or cache_dir == "":
            raise ConfigError("invalid settings: cache_dir=None: expected a path" if cache_dir is None
                              else "invalid settings: cache_dir='': expected a path")
        self.options = dict(options, cache_dir=cache_dir)
        settings = settings_for(**self.options, max_cache_size=capacity_bytes, _names={"max_cache_size":
                                                                                       "capacity_bytes"})
        self.capacity = settings.max_cache_size
        self.layout = settings.layout

    def _spec(self, key: str | RepoSpec) -> RepoSpec:
        if isinstance(key, RepoSpec):
            specs, problems = parse_given([key], key.repo_type if key.repo_type in REPO_TYPES else "model", "key")
            if problems:
                raise ConfigError("invalid repo spec: " + problems[0])
            return specs[0]
        if not isinstance(key, str):
            raise ConfigError(f"invalid repo spec: key {logs.shown(repr(key), quote=False)}: expected a string "
                              "like user/name[:revision] or a RepoSpec")
        return parse_specs([key], "model", "key", typed=True)[0]  # hf://datasets/... is a dataset

    def _state(self, key: str | RepoSpec):
        return records.check(self.layout, self._spec(key))

    def __contains__(self, key: object) -> bool:
        try:
            return self._state(key).complete
        except ConfigError:
            return False

    def __getitem__(self, key: str | RepoSpec) -> Path:
        state = self._state(key)
        if not state.complete:
            raise KeyError(f"{state.spec} is not complete in {self.layout.cache_dir}: {state.detail}")
        return self.layout.snapshot_dir(state.spec, state.commit)

    def get(self, key: str | RepoSpec, default: Path | None = None) -> Path | None:
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self):
        from .cache.inventory import scan

        for repo in scan(self.layout).repos:
            for revision in repo.revisions:
                if revision.complete:
                    yield RepoSpec(repo.repo_type, repo.repo_id, revision.commit)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __delitem__(self, key: str | RepoSpec) -> None:
        from .cache.manage import remove

        spec = self._spec(key)
        if spec not in self:
            raise KeyError(f"{spec} is not in {self.layout.cache_dir}")
        remove(self.layout, revisions=[spec])

    def preload(self, models: Specs = None, datasets: Specs = None) -> list[PreloadResult]:
        """Preload into this cache (see `preload`), then evict least recently used complete snapshots until
        the capacity holds: never one just preloaded, never one whose repo lock is held."""
        from .preloading.capacity import preload_within

        settings = replace(settings_for(models, datasets, **self.options), max_cache_size=self.capacity)
        return preload_within(settings)
