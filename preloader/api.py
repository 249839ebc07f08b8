"""The Python API for worker init code: explicit arguments in, result objects out.

It never prints, exits, installs a signal handler or changes another package's globals or loggers. It runs
the same sequences as the CLI (`preloading.entrypoint`): `preload()` is `preloader run` without the exec.

Every keyword is a setting of `options.OPTIONS` by its name (`cache_dir`, `timeout`, `max_cache_size`, `warm`,
`prepare_datasets`, ...), parsed by the same code as the CLI's flags and env vars: `timeout="10s"` works as
`--timeout 10s` does, and a bad value raises ConfigError naming the keyword (`timeout=-1: ...`) before any
network call or write. Where no keyword says otherwise, huggingface_hub's conventions hold, as in every
Hugging Face library: HF_ENDPOINT, HF_HUB_CACHE / HF_HOME, HF_TOKEN, HF_HUB_OFFLINE (`config.LIBRARY_VARS`);
the RunPod and PRELOADER_* variables are the CLI's and are not read here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import logs
from .cache import records
from .config import Settings
from .errors import ConfigError, UnsafePathError
from .preloading import entrypoint
from .preloading.entrypoint import warm_results
from .preloading.results import PreloadResult
from .spec import REPO_TYPES, RepoSpec, parse_given, parse_specs
from .tokens import secrets_in
from .warm.mode import Dtype, WarmMode

__all__ = ["Cache", "preload", "preload_settings", "settings_for", "wait", "warm", "warm_results"]

Specs = str | Iterable[str | RepoSpec] | None


def settings_for(models: Specs = None, datasets: Specs = None, *, _names: dict[str, str] | None = None,
                 **keywords) -> Settings:
    """Settings from explicit arguments, any setting's name as a keyword (see `options.OPTIONS`), and where
    none is given huggingface_hub's env vars (`config.LIBRARY_VARS`; `cache_dir` is then $HF_HUB_CACHE, else
    $HF_HOME/hub, else ~/.cache/huggingface/hub). ConfigError for an unknown keyword or a bad value."""
    environ = os.environ  # read by Settings.load for huggingface_hub's variables only (config.LIBRARY_VARS)
    keywords = {"models": models, "datasets": datasets, **keywords}
    for secret in secrets_in(environ, keywords):  # before anything that could fail and show one
        logs.add_secret(secret)
    return Settings.load(environ, keywords=keywords, names=_names)


def _aliased(options: dict, alias: str, name: str, value: object) -> dict:
    """`options` with `value`, given under its older keyword `alias`, as setting `name`; both given is a
    ConfigError (they would disagree silently)."""
    if value is None:
        return options
    if options.get(name) is not None:
        raise ConfigError(f"invalid settings: {alias} and {name} are the same setting: give one")
    return {**options, name: value}


def preload(models: Specs = None, datasets: Specs = None, **options) -> list[PreloadResult]:
    """Preload models and datasets (`"user/name[:revision]"` strings); return one result per repo.

    Runs what `preloader run` runs before the exec: the preload, then the capacity (`max_cache_size`),
    warming (`warm`, `dtype`, `warm_lock`) and dataset preparation (`prepare_datasets`). Keyword options are
    those of `settings_for`. Raises a PreloaderError subclass, whose `exit_code` says what kind of failure.
    """
    return preload_settings(settings_for(models, datasets, **options))


def preload_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[PreloadResult]:
    """`preload` for settings already loaded, e.g. the CLI's env-driven ones: `Settings.load(os.environ)`.
    The same sequence (capacity, warming, datasets); `environ` is what `datasets`' subprocess inherits.
    `metrics_addr` / `metrics_file` export the preload's metrics while it runs, as `pull` does."""
    from .metrics import serving

    with serving(settings.metrics_addr, settings.metrics_file, settings.cache_dir) as served:
        served.metrics.plan(settings.repos)
        return entrypoint.preload(settings, os.environ if environ is None else environ, metrics=served.metrics)


def wait(models: Specs = None, datasets: Specs = None, **options) -> list[PreloadResult]:
    """Block (no network) until another process has preloaded these repos into the cache, as `preloader
    wait` does; TransientError when `timeout` passes. Keyword options are those of `settings_for`."""
    return entrypoint.wait_for(settings_for(models, datasets, **options))


def warm(models: Specs = None, *, mode: str | WarmMode | None = None, dtype: Dtype | None = None,
         lock: bool | None = None, **options) -> list:
    """Warm models already complete in the cache (no network), as `preloader warm` does: the page cache
    (`warm="page-cache"`, the default here) or a GPU (`warm="gpu:0"`). One WarmReport each.

    `mode` and `lock` are older names of the `warm` and `warm_lock` settings. Raises NotFoundError (66) for
    a model that is not complete in the cache.
    """
    options = _aliased(_aliased(options, "mode", "warm", mode), "lock", "warm_lock", lock)
    names = {"warm": "mode" if mode is not None else "warm", "warm_lock": "lock" if lock is not None else "warm_lock"}
    return entrypoint.warm_cached(settings_for(models, None, dtype=dtype, _names=names, **options))


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
    `options` are those of `settings_for` (state_dir, token, endpoint, warm, ...); `capacity_bytes` is the
    `max_cache_size` setting, under the name a mapping's capacity has.
    """

    def __init__(self, cache_dir: str | Path, capacity_bytes: int | str | None = None, **options) -> None:
        if cache_dir is None or cache_dir == "":
            raise ConfigError("invalid settings: cache_dir=None: expected a path" if cache_dir is None
                              else "invalid settings: cache_dir='': expected a path")
        self.options = _aliased(dict(options, cache_dir=cache_dir), "capacity_bytes", "max_cache_size",
                                capacity_bytes)
        names = {"max_cache_size": "capacity_bytes"} if capacity_bytes is not None else None
        self.settings = settings_for(_names=names, **self.options)
        self.capacity = self.settings.max_cache_size
        self.layout = self.settings.layout

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
        # Complete as this cache's selection sees it, as its preload made it.
        spec = self._spec(key)
        return records.check(self.layout, spec, selection=self.settings.selection(spec))

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
        state = self._state(spec)
        if state.unsafe is not None:  # not "not in the cache": a folder of it leads out, and is left alone
            raise UnsafePathError(f"refusing to remove {spec}: {state.detail}")
        if not state.complete:
            raise KeyError(f"{spec} is not in {self.layout.cache_dir}")
        remove(self.layout, revisions=[spec])

    def preload(self, models: Specs = None, datasets: Specs = None, **options) -> list[PreloadResult]:
        """Preload into this cache (see `preload`: warming and datasets as its settings say), evicting least
        recently used complete snapshots until the capacity holds: never one just preloaded, never one whose
        repo lock is held. `options` override this cache's settings for this call (not its cache_dir)."""
        if "cache_dir" in options:
            raise ConfigError("invalid settings: cache_dir is the Cache's own: make another Cache for another dir")
        return entrypoint.preload(settings_for(models, datasets, **{**self.options, **options}), os.environ)
