"""The Python API for worker init code: explicit arguments in, result objects out.

It never prints, exits or reads the environment; use `Settings.load(os.environ)`
and `preload_settings()` to get the CLI's env-driven behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
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
