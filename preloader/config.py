"""Settings: the one place that reads the environment.

`Settings.load(environ, flags)` turns env vars and CLI flags into a frozen
dataclass. Flags win over env vars. Everything else in the package takes
explicit arguments, so tests never patch module globals.

`OPTIONS` is the table behind the CLI flags and the README's settings table;
a test keeps the three in step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .spec import RepoSpec, dedupe, parse_list

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class Option:
    """One setting: its env var, its CLI flag, and the env vars it falls back to."""

    name: str
    env: str
    flag: str
    help: str
    default: str = ""
    kind: str = "str"  # str | list | bool | duration | count | choice
    fallbacks: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    most: int | None = None  # for counts


OPTIONS: tuple[Option, ...] = (
    Option("models", "RUNPOD_HUGGINGFACE_MODEL", "--model",
           "Models to preload: comma-separated user/name[:revision].", kind="list"),
    Option("datasets", "RUNPOD_HUGGINGFACE_DATASET", "--dataset",
           "Datasets to preload: comma-separated user/name[:revision].", kind="list"),
    Option("user", "RUNPOD_HUGGINGFACE_USER", "--user",
           "Hub user name; comes with the token."),
    Option("token", "RUNPOD_HUGGINGFACE_TOKEN", "--token",
           "Hub token; comes with the user. Prefer the env var: flags show in `ps`.",
           fallbacks=("HF_TOKEN",)),
    Option("token_file", "PRELOADER_TOKEN_FILE", "--token-file",
           "Read the token from this file, e.g. a compose or Kubernetes secret; pairs with the user."),
    Option("cache_dir", "PRELOADER_CACHE_DIR", "--cache-dir",
           "Hugging Face hub cache to fill (the `hub/` layout).",
           default="$HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub",
           fallbacks=("HF_HUB_CACHE", "HF_HOME")),
    Option("state_dir", "PRELOADER_STATE_DIR", "--state-dir",
           "Where locks and completion records live, outside the hub tree.",
           default="`preloader/` beside a cache dir named `hub`, else `<cache>/.locks/preloader`"),
    Option("link_root", "PRELOADER_LINK_ROOT", "--link-root",
           "Root of the alias tree <root>/model/<user>/<name>/<revision>.",
           default="<state dir>/links"),
    Option("endpoint", "HF_ENDPOINT", "--endpoint",
           "Hub or mirror URL.", default=DEFAULT_ENDPOINT),
    Option("include", "PRELOADER_INCLUDE", "--include",
           "Only files matching these comma-separated globs.", kind="list"),
    Option("exclude", "PRELOADER_EXCLUDE", "--exclude",
           "Skip files matching these comma-separated globs.", kind="list"),
    Option("timeout", "PRELOADER_TIMEOUT", "--timeout",
           "Overall deadline for the preload (30, 90s, 10m, 1h; 0 = none); exit 75 when it passes.",
           default="0", kind="duration"),
    Option("lock_timeout", "PRELOADER_LOCK_TIMEOUT", "--lock-timeout",
           "How long to wait for another process's repo lock; exit 75 after.",
           default="1h", kind="duration"),
    Option("retries", "PRELOADER_RETRIES", "--retries",
           "Attempts per repo on transient hub errors (timeouts, 408, 429, 5xx).",
           default="5", kind="count"),
    Option("read_timeout", "PRELOADER_READ_TIMEOUT", "--read-timeout",
           "A download that receives nothing for this long is retried.", default="30s", kind="duration"),
    Option("workers", "PRELOADER_WORKERS", "--workers",
           "Files downloaded in parallel per repo.", default="8", kind="count"),
    Option("transfer", "PRELOADER_TRANSFER", "--transfer",
           "auto: our resumable, checked, multi-connection download for every file hf_xet does not serve; "
           "hub: huggingface_hub for all; parallel: ours for all.", default="auto", kind="choice",
           choices=("auto", "hub", "parallel")),
    Option("connections", "PRELOADER_CONNECTIONS", "--connections",
           "Parallel ranged connections per large file (at most 64).", default="8", kind="count", most=64),
    Option("parallel_threshold", "PRELOADER_PARALLEL_THRESHOLD", "--parallel-threshold",
           "Files at least this big use several connections (500M, 64MiB).", default="64MiB", kind="size"),
    Option("min_free", "PRELOADER_MIN_FREE", "--min-free",
           "Free space to leave on the cache volume; exit 74 before downloading if it would not fit.",
           default="1GiB", kind="size"),
    Option("warm", "PRELOADER_WARM", "--warm",
           "After the preload, warm each model: none, page-cache (read into RAM) or gpu[:N] "
           "(load every safetensors tensor onto CUDA device N, check it fits, free it).",
           default="none", kind="warm"),
    Option("warm_lock", "PRELOADER_WARM_LOCK", "--warm-lock",
           "With --warm page-cache and no command: mlock the weights and stay up holding them until SIGTERM.",
           default="0", kind="bool"),
    Option("dtype", "PRELOADER_DTYPE", "--dtype",
           "With --warm gpu: cast tensors on the device to float16, bfloat16 or float32.",
           default="none", kind="choice", choices=("none", "float16", "bfloat16", "float32")),
    Option("offline", "PRELOADER_OFFLINE", "--offline",
           "Cache only: no network calls; fail (75) if a snapshot is not complete.",
           default="0", kind="bool", fallbacks=("HF_HUB_OFFLINE",)),
    Option("service_offline", "PRELOADER_SERVICE_OFFLINE", "--service-offline",
           "Start the service with HF_HUB_OFFLINE=1.", default="1", kind="bool"),
    Option("export_token", "PRELOADER_EXPORT_TOKEN", "--export-token",
           "Pass the token to the service as HF_TOKEN (it is removed otherwise).",
           default="0", kind="bool"),
    Option("manifest", "PRELOADER_MANIFEST", "--manifest",
           "Where to write the manifest JSON handed to the service.",
           default="a new file in the temp dir"),
    Option("log_format", "PRELOADER_LOG_FORMAT", "--log-format",
           "Log lines as key=value text or JSON.", default="text", kind="choice",
           choices=("text", "json")),
    Option("log_level", "PRELOADER_LOG_LEVEL", "--log-level",
           "Least severe log level shown.", default="info", kind="choice",
           choices=("debug", "info", "warning", "error")),
    Option("debug", "PRELOADER_DEBUG", "--debug",
           "Show tracebacks for errors.", default="0", kind="bool"),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}

_TRUE = {"1", "true", "yes", "on"}
_WARM = re.compile(r"none|page-cache|gpu(:\d+)?")
_FALSE = {"0", "false", "no", "off"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Settings:
    """Everything a preload needs, resolved and validated."""

    models: tuple[RepoSpec, ...] = ()
    datasets: tuple[RepoSpec, ...] = ()
    user: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    cache_dir: Path = Path("~/.cache/huggingface/hub").expanduser()
    cache_dir_source: str = "default"
    state_dir: Path | None = None
    link_root: Path | None = None
    endpoint: str = DEFAULT_ENDPOINT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    timeout: float | None = None
    lock_timeout: float = 3600.0
    retries: int = 5
    read_timeout: float = 30.0
    workers: int = 8
    transfer: str = "auto"
    connections: int = 8
    parallel_threshold: int = 64 * 1024**2
    min_free: int = 1024**3
    warm: str = "none"
    warm_lock: bool = False
    dtype: str | None = None
    offline: bool = False
    offline_source: str | None = None
    service_offline: bool = True
    export_token: bool = False
    manifest: Path | None = None
    log_format: str = "text"
    log_level: str = "info"
    debug: bool = False

    @property
    def repos(self) -> tuple[RepoSpec, ...]:
        return self.models + self.datasets

    @classmethod
    def load(cls, environ: Mapping[str, str], flags: Mapping[str, object] | None = None) -> Settings:
        """Read settings from env vars and flags (flags win); raise ConfigError listing every problem."""
        return _Loader(environ, flags or {}).settings()


def debug_requested(environ: Mapping[str, str]) -> bool:
    """PRELOADER_DEBUG, read on its own: it must work even when the other settings do not parse."""
    return environ.get("PRELOADER_DEBUG", "").strip().lower() in _TRUE


def default_state_dir(cache_dir: Path) -> Path:
    """Our own files live outside the hub tree so `hf cache` tools see only theirs.

    Beside a cache named `hub` (the HF_HOME layout) that is `HF_HOME/preloader`.
    Otherwise the volume root may be the cache itself, and the only place in it
    that huggingface_hub's scanner skips is `.locks/`.
    """
    if cache_dir.name == "hub":
        return cache_dir.parent / "preloader"
    return cache_dir / ".locks" / "preloader"


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)")


def parse_size(text: str) -> int:
    """Bytes from `500M`, `200G`, `1.5TiB` (powers of 1024) or `200GB` (powers of 1000)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(text)
    number, unit, suffix = match.groups()
    power = "kmgtp".find(unit) + 1 if unit else 0
    base = 1000 if suffix == "b" and unit else 1024
    return int(float(number) * base**power)


def parse_duration(text: str) -> float:
    """Seconds from `30`, `90s`, `500ms`, `10m`, `1h` or `1d`; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


class _Loader:
    """Collects every problem before raising, so one error lists them all."""

    def __init__(self, environ: Mapping[str, str], flags: Mapping[str, object]) -> None:
        self.environ = environ
        self.flags = flags
        self.problems: list[str] = []

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
            return str(flag), option.flag
        for env in (option.env, *option.fallbacks):
            value = self.env(env)
            if value is not None:
                return value, env
        return None, "default"

    def value(self, name: str):
        option = OPTIONS_BY_NAME[name]
        text, source = self.raw(name)
        if text is None:
            text = option.default if option.kind in ("bool", "duration", "count", "choice", "size", "warm") else None
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
            if not _WARM.fullmatch(text.lower()):
                raise ValueError(text)
            return text.lower()
        if option.kind == "count":
            if not text.isdigit() or int(text) < 1 or (option.most is not None and int(text) > option.most):
                raise ValueError(text)
            return int(text)
        if option.kind == "choice":
            if text.lower() not in option.choices:
                raise ValueError(text)
            return text.lower()
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
            "warm": "expected none, page-cache, gpu or gpu:N",
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
        models = self.repos("models", "model")
        datasets = self.repos("datasets", "dataset")
        user, token, token_source = self.credentials()
        cache_dir, cache_source = self.cache_dir()
        state_text = self.value("state_dir")
        state_dir = absolute(state_text) if state_text else default_state_dir(cache_dir)
        link_text = self.value("link_root")
        link_root = absolute(link_text) if link_text else state_dir / "links"
        manifest = self.value("manifest")
        endpoint = (self.value("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
        if not re.match(r"https?://[^/\s]+", endpoint):
            self.problems.append(f"HF_ENDPOINT={endpoint!r}: expected an http:// or https:// URL")
        offline, offline_source = self.offline()
        timeout = self.value("timeout")
        settings = Settings(
            models=models,
            datasets=datasets,
            user=user,
            token=token,
            token_source=token_source,
            cache_dir=cache_dir,
            cache_dir_source=cache_source,
            state_dir=state_dir,
            link_root=link_root,
            endpoint=endpoint,
            include=self.value("include") or (),
            exclude=self.value("exclude") or (),
            timeout=timeout or None,
            lock_timeout=self.value("lock_timeout"),
            retries=self.value("retries"),
            read_timeout=self.value("read_timeout"),
            workers=self.value("workers"),
            transfer=self.value("transfer"),
            connections=self.value("connections"),
            parallel_threshold=self.value("parallel_threshold"),
            min_free=self.value("min_free"),
            warm=self.value("warm"),
            warm_lock=self.value("warm_lock"),
            dtype=None if self.value("dtype") == "none" else self.value("dtype"),
            offline=offline,
            offline_source=offline_source,
            service_offline=self.value("service_offline"),
            export_token=self.value("export_token"),
            manifest=absolute(manifest) if manifest else None,
            log_format=self.value("log_format"),
            log_level=self.value("log_level"),
            debug=self.value("debug"),
        )
        if self.problems:
            raise ConfigError("invalid settings: " + "; ".join(self.problems))
        return settings


def absolute(path: str) -> Path:
    """An absolute path without resolving symlinks: a volume may be mounted through one."""
    return Path(os.path.abspath(os.path.expanduser(path)))
