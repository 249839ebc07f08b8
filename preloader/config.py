"""Settings: the one place that reads the environment.

`Settings.load(environ, flags)` turns env vars and CLI flags into a frozen
dataclass. Flags win over env vars. Everything else in the package takes
explicit arguments, so tests never patch module globals.

What each setting is (env var, flag, default, help) is the table in `options`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .cache.layout import Layout, absolute
from .errors import ConfigError
from .logs import TOKEN_SHAPE
from .metrics import parse_addr
from .options import DEFAULT_ENDPOINT, OPTIONS, OPTIONS_BY_NAME, TOKEN_VARS, LogFormat, LogLevel, Option, TransferKind
from .spec import RepoSpec, dedupe, parse_list
from .units import parse_duration, parse_size
from .warm.mode import Dtype, WarmMode

__all__ = ["DEFAULT_ENDPOINT", "OPTIONS", "TOKEN_VARS", "Settings", "TransferKind", "debug_requested", "secrets_in"]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Everything a preload needs, resolved, validated and typed."""

    models: tuple[RepoSpec, ...] = ()
    datasets: tuple[RepoSpec, ...] = ()
    user: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    layout: Layout = field(default_factory=lambda: Layout.build("~/.cache/huggingface/hub"))
    cache_dir_source: str = "default"
    read_caches: tuple[Path, ...] = ()
    endpoint: str = DEFAULT_ENDPOINT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    timeout: float | None = None
    lock: Literal["auto", "flock", "lease"] = "auto"
    lease_stale: float = 30.0
    lock_timeout: float = 3600.0
    retries: int = 5
    read_timeout: float = 30.0
    workers: int = 8
    transfer: TransferKind = "auto"
    connections: int = 8
    parallel_threshold: int = 64 * 1024**2
    min_free: int = 1024**3
    max_cache_size: int | None = None
    warm: WarmMode = WarmMode("none")
    warm_lock: bool = False
    dtype: Dtype | None = None
    offline: bool = False
    offline_source: str | None = None
    prepare_datasets: bool = False
    require_repos: bool = False
    service_offline: bool = True
    export_token: bool = False
    manifest: Path | None = None
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    debug: bool = False
    metrics_addr: tuple[str, int] | None = None  # (host, port) of the /metrics endpoint
    metrics_file: str | None = None
    shared_blobs_disabled: bool = False  # huggingface_hub's HF_HUB_DISABLE_SHARED_BLOBS / HF_HUB_DISABLE_XET

    @property
    def repos(self) -> tuple[RepoSpec, ...]:
        return self.models + self.datasets

    @property
    def cache_dir(self) -> Path:
        return self.layout.cache_dir

    @property
    def state_dir(self) -> Path:
        return self.layout.state_dir

    @property
    def link_root(self) -> Path | None:
        return self.layout.link_root

    @classmethod
    def load(cls, environ: Mapping[str, str], flags: Mapping[str, object] | None = None) -> Settings:
        """Read settings from env vars and flags (flags win); raise ConfigError listing every problem."""
        return _Loader(environ, flags or {}).settings()


def debug_requested(environ: Mapping[str, str]) -> bool:
    """PRELOADER_DEBUG, read on its own: it must work even when the other settings do not parse."""
    return environ.get("PRELOADER_DEBUG", "").strip().lower() in _TRUE


def secrets_in(environ: Mapping[str, str], flags: Mapping[str, object] | None = None) -> Iterator[str]:
    """Every token value the env vars, flags and token file hold, read before anything is validated,
    so that no error about any setting can show one."""
    flags = flags or {}
    for value in (*(environ.get(name) for name in TOKEN_VARS), flags.get("token")):
        if isinstance(value, str) and value.strip():
            yield value.strip()
    path = flags.get("token_file") or environ.get("PRELOADER_TOKEN_FILE")
    if isinstance(path, str) and path:
        try:
            yield Path(path).expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            pass  # reported, without its content, when the settings load



class _Loader:
    """Collects every problem before raising, so one error lists them all."""

    def __init__(self, environ: Mapping[str, str], flags: Mapping[str, object]) -> None:
        self.environ = environ
        self.flags = flags
        self.problems: list[str] = []
        self.secrets = list(secrets_in(environ, flags))

    def env(self, name: str) -> str | None:
        # An empty value counts as unset: compose files often pass `${VAR:-}`.
        value = self.environ.get(name)
        return value if value not in (None, "") else None

    def raw(self, name: str) -> tuple[str | None, str]:
        """The raw value of a setting and where it came from (flag, env var or fallback)."""
        option = OPTIONS_BY_NAME[name]
        flag = self.flags.get(name)
        if isinstance(flag, (list, tuple)):
            flag = ",".join(flag) if flag else None
        if isinstance(flag, bool):
            flag = "1" if flag else "0"
        if flag not in (None, ""):
            return self.not_a_token(option, str(flag), option.flag)
        for env in (option.env, *option.fallbacks):
            value = self.env(env)
            if value is not None:
                return self.not_a_token(option, value, env)
        return None, "default"

    def not_a_token(self, option: Option, text: str, source: str) -> tuple[str | None, str]:
        """A token pasted into another setting is refused (and never shown) rather than used as a name or path."""
        # A short test token could be part of an honest path: only long ones count inside other text.
        held = any(s == text.strip() or (len(s) >= 16 and s in text) for s in self.secrets)
        if option.name == "token" or not (held or TOKEN_SHAPE.search(text)):
            return text, source
        problem = (f"{source} holds a token; put it in RUNPOD_HUGGINGFACE_TOKEN, HF_TOKEN or "
                   "PRELOADER_TOKEN_FILE, never in another setting")
        if problem not in self.problems:
            self.problems.append(problem)
        return None, source

    def value(self, name: str):
        option = OPTIONS_BY_NAME[name]
        text, source = self.raw(name)
        if text is None:
            text = option.default if option.kind != "str" and option.kind != "list" else None
            if text is None:
                return None
        try:
            return self.convert(option, text)
        except ValueError:
            self.problems.append(f"{source}={text!r}: {self.expected(option)}")
            return self.convert(option, option.default) if option.default else None

    @staticmethod
    def convert(option: Option, text: str):
        text = text.strip()
        if option.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(text)
        if option.kind == "duration":
            return parse_duration(text)
        if option.kind == "size":
            return parse_size(text)
        if option.kind == "warm":
            return WarmMode.parse(text)
        if option.kind == "count":
            if not text.isdigit() or int(text) < 1 or (option.most is not None and int(text) > option.most):
                raise ValueError(text)
            return int(text)
        if option.kind == "choice":
            if text.lower() not in option.choices:
                raise ValueError(text)
            return text.lower()
        if option.kind == "address":
            return parse_addr(text)
        if option.kind == "list":
            return tuple(item.strip() for item in text.split(",") if item.strip())
        return text

    @staticmethod
    def expected(option: Option) -> str:
        if option.kind == "count" and option.most is not None:
            return f"expected a whole number from 1 to {option.most}"
        return {
            "bool": "expected 1/0, true/false, yes/no or on/off",
            "duration": "expected seconds or a duration like 90s, 10m, 1h",
            "count": "expected a whole number of at least 1",
            "size": "expected a size like 500M, 64MiB or 2G",
            "warm": "expected " + WarmMode.FORMS,
            "address": "expected [HOST]:PORT, e.g. :9400 or 127.0.0.1:9400",
        }.get(option.kind, "expected one of " + ", ".join(option.choices))

    def repos(self, name: str, repo_type: str) -> tuple[RepoSpec, ...]:
        text, source = self.raw(name)
        specs, problems = parse_list(text or "", repo_type, source)
        self.problems.extend(problems)
        return dedupe(specs)

    def credentials(self) -> tuple[str | None, str | None, str | None]:
        """User, token and the token's source; the RunPod pair must come together."""
        user, user_source = self.raw("user")
        token, token_source = self.raw("token")
        path, path_source = self.raw("token_file")
        if path and token_source in ("HF_TOKEN", "default"):
            # A mounted secret (compose `secrets:`, a Kubernetes Secret) beats the HF_TOKEN fallback.
            try:
                token, token_source = Path(path).read_text(encoding="utf-8").strip(), path_source
            except OSError as error:
                self.problems.append(f"{path_source}={path!r}: cannot read the token file ({error.strerror})")
        runpod_token = token_source in ("RUNPOD_HUGGINGFACE_TOKEN", "--token", "PRELOADER_TOKEN_FILE",
                                        "--token-file")
        if user and not runpod_token:
            self.problems.append(
                f"{user_source} is set but RUNPOD_HUGGINGFACE_TOKEN is missing; set both or neither"
            )
        if runpod_token and not user and token_source == "RUNPOD_HUGGINGFACE_TOKEN":
            self.problems.append(
                "RUNPOD_HUGGINGFACE_TOKEN is set but RUNPOD_HUGGINGFACE_USER is missing; set both or neither"
            )
        return user, token, (token_source if token else None)

    def cache_dir(self) -> tuple[Path, str]:
        text, source = self.raw("cache_dir")
        if source == "HF_HOME":
            return absolute(text) / "hub", "HF_HOME/hub"
        if text is None:
            home = Path(self.environ.get("HOME") or Path.home())
            return home / ".cache" / "huggingface" / "hub", "default"
        return absolute(text), source

    def offline(self) -> tuple[bool, str | None]:
        value = self.value("offline")
        _, source = self.raw("offline")
        return bool(value), (source if value else None)

    def settings(self) -> Settings:
        user, token, token_source = self.credentials()
        cache_dir, cache_source = self.cache_dir()
        offline, offline_source = self.offline()
        dtype = self.value("dtype")
        manifest = self.value("manifest")
        settings = Settings(
            models=self.repos("models", "model"),
            datasets=self.repos("datasets", "dataset"),
            user=user,
            token=token,
            token_source=token_source,
            layout=Layout.build(cache_dir, self.value("state_dir"), self.value("link_root"), self.value("latest"),
                                self.value("datasets_cache")),
            cache_dir_source=cache_source,
            read_caches=tuple(absolute(p) for p in (self.value("read_caches") or "").split(":") if p.strip()),
            endpoint=self.endpoint(),
            include=self.value("include") or (),
            exclude=self.value("exclude") or (),
            timeout=self.value("timeout") or None,
            max_cache_size=self.value("max_cache_size") or None,
            offline=offline,
            offline_source=offline_source,
            dtype=None if dtype == "none" else dtype,
            manifest=absolute(manifest) if manifest else None,
            shared_blobs_disabled=any((self.env(name) or "").strip().lower() in _TRUE
                                      for name in ("HF_HUB_DISABLE_SHARED_BLOBS", "HF_HUB_DISABLE_XET")),
            **{name: self.value(name) for name in _PLAIN},
        )
        if self.problems:
            raise ConfigError("invalid settings: " + "; ".join(self.problems))
        return settings

    def endpoint(self) -> str:
        text, source = self.raw("endpoint")
        endpoint = (text or DEFAULT_ENDPOINT).strip().rstrip("/")
        if not re.match(r"https?://[^/\s]+", endpoint):
            self.problems.append(f"{source}={endpoint!r}: expected an http:// or https:// URL")
        return endpoint


# Settings whose parsed value goes into Settings as it is.
_PLAIN = ("lock", "lease_stale", "lock_timeout", "retries", "read_timeout", "workers", "transfer", "connections",
          "parallel_threshold", "min_free", "warm", "warm_lock", "prepare_datasets", "require_repos",
          "service_offline", "export_token", "log_format", "log_level", "debug", "metrics_addr", "metrics_file")
