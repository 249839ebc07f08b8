"""The Python API for worker init code: explicit arguments in, result objects out.

It never prints, exits or reads the environment; use `Settings.load(os.environ)`
and `preload_settings()` to get the CLI's env-driven behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import DEFAULT_ENDPOINT, Settings, default_state_dir
from .engine import Preloader, PreloadResult, wait_ready
from .spec import RepoSpec, dedupe, parse_specs

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
    cache = Path(cache_dir).expanduser().absolute() if cache_dir else Path.home() / ".cache/huggingface/hub"
    state = Path(state_dir).expanduser().absolute() if state_dir else default_state_dir(cache)
    return Settings(
        models=_specs(models, "model"),
        datasets=_specs(datasets, "dataset"),
        token=token,
        token_source="argument" if token else None,
        cache_dir=cache,
        cache_dir_source="argument" if cache_dir else "default",
        state_dir=state,
        link_root=Path(link_root).expanduser().absolute() if link_root else state / "links",
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
