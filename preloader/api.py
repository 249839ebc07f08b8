"""The Python API for worker init code: explicit arguments in, result objects out.

It never prints, exits or reads the environment; use `Settings.load(os.environ)`
and `preload_settings()` to get the CLI's env-driven behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from .cache import records
from .cache.layout import Layout
from .config import DEFAULT_ENDPOINT, Settings
from .errors import ConfigError, NotFoundError
from .preloading.engine import Preloader
from .preloading.results import PreloadResult
from .preloading.waiting import wait_ready
from .spec import RepoSpec, dedupe, parse_specs
from .warm.mode import Dtype, WarmMode

Specs = str | Iterable[str | RepoSpec] | None


def _specs(value: Specs, repo_type: str) -> tuple[RepoSpec, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [item for item in value.split(",")]
    plain = [item for item in value if not isinstance(item, RepoSpec)]
    given = [item for item in value if isinstance(item, RepoSpec)]
    return dedupe(given + list(parse_specs(plain, repo_type, f"{repo_type}s")))


def settings_for(
    models: Specs = None,
    datasets: Specs = None,
    *,
    cache_dir: str | Path | None = None,
    state_dir: str | Path | None = None,
    link_root: str | Path | None = None,
    token: str | None = None,
    endpoint: str = DEFAULT_ENDPOINT,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    offline: bool = False,
    timeout: float | None = None,
    lock_timeout: float = 3600.0,
    retries: int = 5,
    workers: int = 8,
) -> Settings:
    """Settings from explicit arguments; `cache_dir` defaults to ~/.cache/huggingface/hub."""
    return Settings(
        models=_specs(models, "model"),
        datasets=_specs(datasets, "dataset"),
        token=token,
        token_source="argument" if token else None,
        layout=Layout.build(cache_dir or Path.home() / ".cache/huggingface/hub", state_dir, link_root),
        cache_dir_source="argument" if cache_dir else "default",
        endpoint=endpoint.rstrip("/"),
        include=tuple(include),
        exclude=tuple(exclude),
        offline=offline,
        offline_source="argument" if offline else None,
        timeout=timeout,
        lock_timeout=lock_timeout,
        retries=retries,
        workers=workers,
    )


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
    return wait_ready(settings_for(models, datasets, **options), timeout=timeout)


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
    if not isinstance(mode, WarmMode):
        try:
            mode = WarmMode.parse(mode)
        except ValueError:
            raise ConfigError(f"invalid value mode={mode!r}: expected {WarmMode.FORMS}") from None
    settings = settings_for(models, None, **options)
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
        self.capacity = capacity_bytes
        self.options = dict(options, cache_dir=cache_dir)
        self.layout = settings_for(**self.options).layout

    def _spec(self, key: str | RepoSpec) -> RepoSpec:
        if isinstance(key, RepoSpec):
            return key
        try:
            return parse_specs([key], "model")[0]
        except ConfigError:
            return parse_specs([key], "dataset")[0]  # raises for what is neither

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
