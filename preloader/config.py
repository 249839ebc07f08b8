"""Settings: the one place that reads the environment.

`Settings.load(environ, flags)` turns env vars and CLI flags into a frozen
dataclass. Flags win over env vars. Everything else in the package takes
explicit arguments, so tests never patch module globals.

The CLI reads every variable of the table; the Python API (`Settings.load(environ, keywords=...)`) reads only
huggingface_hub's own (`LIBRARY_VARS`: HF_ENDPOINT, HF_HUB_CACHE/HF_HOME, HF_TOKEN, HF_HUB_OFFLINE, ...), as
every Hugging Face library does: the RunPod and PRELOADER_* variables are the CLI's.

What each setting is (env var, flag, default, help) is the table in `options`; every default is parsed from
it here (`DEFAULTS`), nowhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .cache.layout import HUB, Layout, absolute
from .cache.selection import Selection
from .errors import ConfigError, listed
from .keywords import REPO_LISTS, as_text, expected, unknown
from .lockfile import LockFile
from .lockfile import read as read_lockfile
from .logs import TOKEN_SHAPE, shown
from .metrics import parse_addr
from .options import (
    DEFAULT_CACHE,
    DEFAULT_ENDPOINT,
    OPTIONS,
    OPTIONS_BY_NAME,
    TOKEN_VARS,
    LogFormat,
    LogLevel,
    Option,
    TransferKind,
)
from .spec import RepoSpec, dedupe, is_quant_name, parse_given, parse_list, repo_path_problem
from .tokens import TokenFileError, read_token_file, secrets_in, token_problem
from .units import parse_duration, parse_size
from .warm.mode import Dtype, WarmMode

__all__ = ["DEFAULTS", "DEFAULT_ENDPOINT", "LIBRARY_VARS", "OPTIONS", "TOKEN_VARS", "Settings", "TransferKind",
           "debug_requested", "secrets_in"]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# What the Python API reads from the environment where no argument says otherwise: huggingface_hub's own
# conventions (HOME for the default cache, as huggingface_hub's expanduser does).
LIBRARY_VARS = ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_CACHE",
                "HF_HUB_DISABLE_SHARED_BLOBS", "HF_HUB_DISABLE_XET", "HOME")


def convert(option: Option, text: str):
    """The typed value of `text` for `option`, parsed within the option's range; ValueError if it is not one."""
    text = text.strip()
    least, most = option.bounds
    if option.kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if option.kind == "duration":
        return parse_duration(text, least, most)
    if option.kind == "size":
        return parse_size(text, int(least), int(most))
    if option.kind == "warm":
        return WarmMode.parse(text)
    if option.kind == "count":
        if not re.fullmatch(r"[0-9]{1,6}", text) or not least <= int(text) <= most:
            raise ValueError(text)
        return int(text)
    if option.kind == "choice":
        if text.lower() not in option.choices:
            raise ValueError(text)
        return text.lower()
    if option.kind == "address":
        return parse_addr(text)
    if option.kind == "quant":
        if not is_quant_name(text):
            raise ValueError(text)
        return text.upper()
    if option.kind == "list":
        return tuple(item.strip() for item in text.split(",") if item.strip())
    return text


# Every default, parsed from the table (`options.OPTIONS`), the one place it is written. A default that is a
# description (`<state dir>/links`) is not a value: those settings default to None here and are derived.
DEFAULTS: dict[str, object] = {
    option.name: convert(option, option.default) if option.default and option.kind not in ("str", "list") else None
    for option in OPTIONS
}


@dataclass(frozen=True)
class Settings:
    """Everything a preload needs, resolved, validated and typed."""

    models: tuple[RepoSpec, ...] = ()
    datasets: tuple[RepoSpec, ...] = ()
    user: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    layout: Layout = field(default_factory=lambda: Layout.build(DEFAULT_CACHE))
    cache_dir_source: str = "default"
    read_caches: tuple[Path, ...] = ()
    endpoint: str = DEFAULT_ENDPOINT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    weights: Literal["auto", "all"] = DEFAULTS["weights"]
    gguf_quant: str | None = None
    timeout: float | None = None
    lock: Literal["auto", "flock", "lease"] = DEFAULTS["lock"]
    lease_stale: float = DEFAULTS["lease_stale"]
    lock_timeout: float = DEFAULTS["lock_timeout"]
    retries: int = DEFAULTS["retries"]
    read_timeout: float = DEFAULTS["read_timeout"]
    workers: int = DEFAULTS["workers"]
    transfer: TransferKind = DEFAULTS["transfer"]
    connections: int = DEFAULTS["connections"]
    parallel_threshold: int = DEFAULTS["parallel_threshold"]
    min_free: int = DEFAULTS["min_free"]
    max_cache_size: int | None = None
    warm: WarmMode = DEFAULTS["warm"]
    warm_lock: bool = DEFAULTS["warm_lock"]
    refresh: float = DEFAULTS["refresh"]  # seconds between a node cache's preloads; 0: preload once
    dtype: Dtype | None = None
    offline: bool = DEFAULTS["offline"]
    offline_source: str | None = None
    prepare_datasets: bool = DEFAULTS["prepare_datasets"]
    require_repos: bool = DEFAULTS["require_repos"]
    service_offline: bool = DEFAULTS["service_offline"]
    export_token: bool = DEFAULTS["export_token"]
    manifest: Path | None = None
    log_format: LogFormat = DEFAULTS["log_format"]
    log_level: LogLevel = DEFAULTS["log_level"]
    debug: bool = DEFAULTS["debug"]
    metrics_addr: tuple[str, int] | None = None  # (host, port) of the /metrics endpoint
    metrics_file: str | None = None
    shared_blobs_disabled: bool = False  # huggingface_hub's HF_HUB_DISABLE_SHARED_BLOBS / HF_HUB_DISABLE_XET
    signature: Literal["off", "if-present", "required"] = DEFAULTS["signature"]
    signature_key: Path | None = None
    signature_cert: Path | None = None
    signature_identity: str | None = None
    signature_issuer: str | None = None
    signature_file: str = OPTIONS_BY_NAME["signature_file"].default
    lockfile: LockFile | None = None  # PRELOADER_LOCKFILE, read and checked once, here
    pickle: Literal["allow", "refuse"] = DEFAULTS["pickle"]

    @property
    def repos(self) -> tuple[RepoSpec, ...]:
        return self.models + self.datasets

    def selection(self, spec: RepoSpec) -> Selection:
        """The files of `spec`'s listing this plan wants: PRELOADER_INCLUDE when given, else the weights rule
        (datasets: every file), less PRELOADER_EXCLUDE; the spec's quantization over PRELOADER_GGUF_QUANT."""
        weights = self.weights if spec.repo_type == "model" else "all"
        # `user/name:Q4_K_M` names a quantization unless a branch or tag of that name was fetched here (it wins).
        named = spec.quant or (spec.revision.upper() if spec.names_quant
                               and not self.layout.ref_file(spec).exists() else None)
        quant = (named or self.gguf_quant) if weights == "auto" and not self.include else None
        return Selection(self.include, self.exclude, weights, quant, f"{spec.repo_type} {spec.repo_id}")

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
    def load(cls, environ: Mapping[str, str], flags: Mapping[str, object] | None = None, *,
             keywords: Mapping[str, object] | None = None, names: Mapping[str, str] | None = None) -> Settings:
        """Read settings from env vars and flags (flags win), and from the API's `keywords` (Python values,
        any setting's name; they win over both, and messages name them by the keyword, or as `names` says);
        raise ConfigError listing every problem."""
        return _Loader(environ, flags or {}, keywords, names).settings()


def debug_requested(environ: Mapping[str, str]) -> bool:
    """PRELOADER_DEBUG, read on its own: it must work even when the other settings do not parse."""
    return environ.get("PRELOADER_DEBUG", "").strip().lower() in _TRUE


class _Loader:
    """Collects every problem before raising, so one error lists them all.

    A value comes from an API keyword (named as the keyword), a flag or an env var, in that order, and is
    parsed by the same code whichever it came from."""

    def __init__(self, environ: Mapping[str, str], flags: Mapping[str, object],
                 keywords: Mapping[str, object] | None = None, names: Mapping[str, str] | None = None) -> None:
        self.environ = environ
        self.flags = flags
        self.api = keywords is not None  # messages name keywords, and no env var the API does not read
        self.keywords = {name: value for name, value in (keywords or {}).items() if value is not None}
        self.names = dict(names or {})
        self.problems: list[str] = unknown(self.keywords)
        self.secrets = [s for s in secrets_in(environ, {**flags, **self.keywords}) if s]
        self.texts: dict[str, str] = {}
        for name, value in self.keywords.items():
            if name in OPTIONS_BY_NAME and name not in REPO_LISTS:
                text, problem = as_text(name, value, self.keyword(name))
                if problem:
                    self.problems.append(problem)
                elif text is not None:
                    self.texts[name] = text

    def keyword(self, name: str) -> str:
        return self.names.get(name, name)

    def env(self, name: str) -> str | None:
        if self.api and name not in LIBRARY_VARS:
            return None  # the RunPod and PRELOADER_* variables are the CLI's
        # An empty value counts as unset: compose files often pass `${VAR:-}`.
        value = self.environ.get(name)
        return value if value not in (None, "") else None

    def raw(self, name: str) -> tuple[str | None, str]:
        """The raw value of a setting and where it came from (keyword, flag, env var or fallback)."""
        option = OPTIONS_BY_NAME[name]
        if name in self.keywords:
            text = self.texts.get(name)
            return (self.not_a_token(option, text, self.keyword(name)) if text not in (None, "")
                    else (None, self.keyword(name)))
        flag = self.flags.get(name)
        if isinstance(flag, (list, tuple)):
            flag = ",".join(flag) if flag else None
        if isinstance(flag, bool):
            flag = "1" if flag else "0"
        if flag not in (None, ""):
            return self.not_a_token(option, str(flag), option.flag)
        for env in (option.env, *option.fallbacks):
            value = self.env(env)
            # A blank token (a newline from a templated Secret) is unset: the fallback is looked at.
            if value is not None and not (name == "token" and not value.strip()):
                return self.not_a_token(option, value, env)
        return None, "default"

    def not_a_token(self, option: Option, text: str, source: str) -> tuple[str | None, str]:
        """A token pasted into another setting is refused (and never shown) rather than used as a name or path."""
        # A short test token could be part of an honest path: only long ones count inside other text.
        held = any(s == text.strip() or (len(s) >= 16 and s in text) for s in self.secrets)
        if option.name == "token" or not (held or TOKEN_SHAPE.search(text)):
            return text, source
        where = ("token= or token_file=" if self.api
                 else "RUNPOD_HUGGINGFACE_TOKEN, HF_TOKEN or PRELOADER_TOKEN_FILE")
        problem = f"{source} holds a token; put it in {where}, never in another setting"
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
            self.problems.append(f"{source}={shown(text)}: {expected(option)}")
            return self.convert(option, option.default) if option.default else None

    convert = staticmethod(convert)

    def repos(self, name: str, repo_type: str) -> tuple[RepoSpec, ...]:
        given = self.keywords.get(name)
        if given is not None and not isinstance(given, str):
            specs, problems = parse_given(given, repo_type, self.keyword(name))
        else:
            text, source = (self.not_a_token(OPTIONS_BY_NAME[name], given, self.keyword(name)) if given is not None
                            else self.raw(name))
            specs, problems = parse_list(text or "", repo_type, source)
        self.problems.extend(problems)
        return dedupe(specs)

    def credentials(self) -> tuple[str | None, str | None, str | None]:
        """User, token and the token's source; the RunPod pair must come together."""
        user, user_source = self.raw("user")
        token, token_source = self.raw("token")
        path, path_source = self.raw("token_file")
        if token is not None:
            token = token.strip() or None  # a Kubernetes Secret or `echo > file` leaves a newline
            token_source = token_source if token else "default"
        if path and token_source in ("HF_TOKEN", "default"):
            # A mounted secret (compose `secrets:`, a Kubernetes Secret) beats the HF_TOKEN fallback.
            try:
                token, token_source = read_token_file(path), path_source
            except TokenFileError as error:
                self.problems.append(f"{path_source}={shown(path)}: {error}")
                return user, None, None  # the pairing is not in question: the file is
        if token and token_problem(token):
            self.problems.append(f"{token_source} {token_problem(token)} (the value is not shown)")
        runpod_token = token_source in ("RUNPOD_HUGGINGFACE_TOKEN", "--token", "PRELOADER_TOKEN_FILE",
                                        "--token-file", self.keyword("token"), self.keyword("token_file"))
        token_name = self.keyword("token") if self.api else "RUNPOD_HUGGINGFACE_TOKEN"
        if user and not runpod_token:
            self.problems.append(f"{user_source} is set but {token_name} is missing; set both or neither")
        if runpod_token and not user and token_source == "RUNPOD_HUGGINGFACE_TOKEN":
            self.problems.append(
                "RUNPOD_HUGGINGFACE_TOKEN is set but RUNPOD_HUGGINGFACE_USER is missing; set both or neither"
            )
        return user, token, (token_source if token else None)

    def cache_dir(self) -> tuple[Path, str]:
        text, source = self.raw("cache_dir")
        if source == "HF_HOME":
            return absolute(text) / HUB, "HF_HOME/hub"
        if text is None:
            home = self.env("HOME") or str(Path.home())
            return absolute(DEFAULT_CACHE.replace("~", home, 1)), "default"
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
            gguf_quant=self.gguf_quant(),
            exclude=self.value("exclude") or (),
            timeout=self.value("timeout") or None,
            max_cache_size=self.value("max_cache_size") or None,
            offline=offline,
            offline_source=offline_source,
            dtype=None if dtype == "none" else dtype,
            manifest=absolute(manifest) if manifest else None,
            **self.signature(),
            lockfile=self.lockfile(),
            shared_blobs_disabled=any((self.env(name) or "").strip().lower() in _TRUE
                                      for name in ("HF_HUB_DISABLE_SHARED_BLOBS", "HF_HUB_DISABLE_XET")),
            **{name: self.value(name) for name in _PLAIN},
        )
        if self.problems:
            raise ConfigError("invalid settings: " + listed(self.problems))
        return settings

    def signature(self) -> dict[str, object]:
        """The signature settings: one trust method (key, certificate, or identity with its issuer) when
        checking is on, files that exist, and a safe path in the repo for the signature."""
        found = {name: self.value(name) for name in ("signature", "signature_key", "signature_cert",
                                                     "signature_identity", "signature_issuer", "signature_file")}
        found["signature_file"] = found["signature_file"] or OPTIONS_BY_NAME["signature_file"].default
        why = repo_path_problem(found["signature_file"])
        if why:
            self.problems.append(f"{self.raw('signature_file')[1]}={shown(found['signature_file'])}: {why}")
        for name in ("signature_key", "signature_cert"):
            if found[name] is not None:
                found[name] = absolute(found[name])
                if not found[name].is_file():
                    self.problems.append(f"{self.raw(name)[1]}={shown(str(found[name]))}: no such file")
                elif not os.access(found[name], os.R_OK):  # found now, not after the download it would end
                    self.problems.append(f"{self.raw(name)[1]}={shown(str(found[name]))}: not readable by uid "
                                         f"{os.geteuid()}")
        if bool(found["signature_identity"]) != bool(found["signature_issuer"]):
            given, missing = (("signature_identity", "signature_issuer") if found["signature_identity"]
                              else ("signature_issuer", "signature_identity"))
            self.problems.append(f"{self.raw(given)[1]} is set but {self.name_of(missing)} is missing; "
                                 "sigstore keyless needs both")
        methods = [name for name in ("signature_key", "signature_cert", "signature_identity") if found[name]]
        if len(methods) > 1:
            self.problems.append("give one way to trust signatures: " + " or ".join(self.name_of(m) for m in methods))
        if found["signature"] != "off" and not _signing_installed():
            self.problems.append(f"{self.raw('signature')[1]}={found['signature']} needs the model-signing package: "
                                 "pip install 'hf-preloader[signing]'")
        if found["signature"] != "off" and not methods:
            self.problems.append(f"{self.raw('signature')[1]}={found['signature']} needs "
                                 f"{self.name_of('signature_key')}, {self.name_of('signature_cert')} or "
                                 f"{self.name_of('signature_identity')} + {self.name_of('signature_issuer')}")
        return found

    def name_of(self, name: str) -> str:
        """How a message names a setting: the keyword in the API, the env var in the CLI."""
        return self.keyword(name) if self.api else OPTIONS_BY_NAME[name].env

    def lockfile(self) -> LockFile | None:
        """The lock file, parsed at the boundary: a bad one is one problem of the settings (78)."""
        text, source = self.raw("lockfile")
        if not text:
            return None
        try:
            return read_lockfile(absolute(text))
        except ValueError as error:
            self.problems.append(f"{source}={shown(text)}: {error}")
            return None

    def gguf_quant(self) -> str | None:
        text, source = self.raw("gguf_quant")
        if text is None or not text.strip():
            return None
        try:
            return convert(OPTIONS_BY_NAME["gguf_quant"], text)
        except ValueError:
            self.problems.append(f"{source}={shown(text)}: {expected(OPTIONS_BY_NAME['gguf_quant'])}")
            return None

    def endpoint(self) -> str:
        text, source = self.raw("endpoint")
        endpoint = (text or DEFAULT_ENDPOINT).strip().rstrip("/")
        if endpoint_problem(endpoint):
            self.problems.append(f"{source}={shown(endpoint)}: expected an http:// or https:// URL")
        return endpoint


def _signing_installed() -> bool:
    """model-signing is importable (found, not imported: it is slow to import)."""
    import importlib.util

    try:
        return importlib.util.find_spec("model_signing") is not None
    except (ImportError, ValueError):
        return False


def endpoint_problem(url: str) -> str | None:
    """Why `url` is not a hub URL we can connect to (scheme, host, port), or None."""
    if any(char.isspace() or not char.isprintable() for char in url):
        return "space or control character"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        return "malformed"
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return "not http(s)://host"
    if parts.query or parts.fragment:
        return "query or fragment"
    return None


# Settings whose parsed value goes into Settings as it is.
_PLAIN = ("weights", "lock", "lease_stale", "lock_timeout", "retries", "read_timeout", "workers", "transfer",
          "connections", "parallel_threshold", "min_free", "warm", "warm_lock", "refresh", "prepare_datasets",
          "require_repos", "service_offline", "export_token", "log_format", "log_level", "debug", "metrics_addr",
          "metrics_file", "pickle")
