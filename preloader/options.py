"""Every setting: its env var, its CLI flag, its default and its help. The table behind the CLI's flags
and the settings table of docs/settings.md (a test keeps the three in step); `config` parses what it names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from .cache.layout import LATEST_PLACES
from .units import DAY, MAX_SIZE, YEAR, human_duration
from .warm.mode import DTYPES

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_CACHE = "~/.cache/huggingface/hub"  # huggingface_hub's, where neither HF_HUB_CACHE nor HF_HOME is set
TransferKind = Literal["auto", "hub", "parallel"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
# Where a token may come from, the one list of them: every value found in these is a secret before anything is
# validated, and none reaches the service (or `datasets`' subprocess) unless handed over on purpose.
TOKEN_VARS = ("RUNPOD_HUGGINGFACE_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class Option:
    """One setting: its env var, its CLI flag, and the env vars it falls back to."""

    name: str
    env: str
    flag: str
    help: str
    default: str = ""
    kind: str = "str"  # str | list | bool | duration | count | size | choice | warm | address | quant
    fallbacks: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    # The valid range of a duration (seconds), size (bytes) or count; the help text says it in `range_text`'s words.
    least: float = 0
    most: float | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        default = {"duration": YEAR, "size": MAX_SIZE}.get(self.kind, 0)
        return self.least, (self.most if self.most is not None else default)

    @property
    def range_text(self) -> str:
        """The valid range in words, as the help text and every error about this setting say it."""
        least, most = self.bounds
        if self.kind == "duration":
            return f"from {human_duration(least)} to {human_duration(most)}"
        if self.kind == "size":
            return f"from {least:g} to 2^63-1 bytes" if most == MAX_SIZE else f"from {least:g} to {most:g} bytes"
        if self.kind == "count":
            return f"from {least:g} to {most:g}"
        return ""


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
           default=f"$HF_HUB_CACHE, else $HF_HOME/hub, else {DEFAULT_CACHE}",
           fallbacks=("HF_HUB_CACHE", "HF_HOME")),
    Option("read_caches", "PRELOADER_READ_CACHES", "--read-caches",
           "Read-only hub caches, colon-separated, never written: a snapshot complete in one is used where it "
           "is (the writable cache gets links to it), not downloaded or copied."),
    Option("state_dir", "PRELOADER_STATE_DIR", "--state-dir",
           "Where locks and completion records live, outside the hub tree.",
           default="`preloader/` beside a cache dir named `hub`, else `<cache>/.locks/preloader`"),
    Option("link_root", "PRELOADER_LINK_ROOT", "--link-root",
           "Root of the alias tree <root>/model/<user>/<name>/<revision>.",
           default="<state dir>/links"),
    Option("latest", "PRELOADER_LATEST", "--latest",
           "Where the stable `latest` link of each repo lives: snapshots (<repo>/snapshots/latest, what "
           "services reference), repo (<repo>/latest: invisible to `hf cache`), or off.",
           default="snapshots", kind="choice", choices=LATEST_PLACES),
    Option("prepare_datasets", "PRELOADER_PREPARE_DATASETS", "--prepare-datasets",
           "After the preload, prepare each dataset with the `datasets` package (from the files in the cache) so "
           "that load_dataset(\"user/name\") works offline; the service gets HF_DATASETS_CACHE.",
           default="0", kind="bool"),
    Option("datasets_cache", "PRELOADER_DATASETS_CACHE", "--datasets-cache",
           "Where --prepare-datasets keeps the prepared datasets (HF_DATASETS_CACHE), on the shared volume.",
           default="`$HF_HOME/datasets` beside a cache dir named `hub`, else `<state dir>/datasets`",
           fallbacks=("HF_DATASETS_CACHE",)),
    Option("endpoint", "HF_ENDPOINT", "--endpoint",
           "Hub or mirror URL.", default=DEFAULT_ENDPOINT),
    Option("weights", "PRELOADER_WEIGHTS", "--weights",
           "Which weight files of a model to fetch: auto (what the service loads: safetensors over pickle, the "
           "shards an index names, PyTorch over other frameworks, one GGUF quantization) or all.",
           default="auto", kind="choice", choices=("auto", "all")),
    Option("gguf_quant", "PRELOADER_GGUF_QUANT", "--gguf-quant",
           "The GGUF quantization (Q4_K_M, Q8_0, IQ2_XS, ...; any case) to fetch from every GGUF repo of the plan; "
           "a quantization named in a spec (user/name:Q8_0) wins.", kind="quant"),
    Option("include", "PRELOADER_INCLUDE", "--include",
           "Only files matching these comma-separated globs (in place of --weights auto).", kind="list"),
    Option("exclude", "PRELOADER_EXCLUDE", "--exclude",
           "Skip files matching these comma-separated globs.", kind="list"),
    Option("timeout", "PRELOADER_TIMEOUT", "--timeout",
           "Overall deadline for the preload (30, 90s, 10m, 1h; 0 = none), from 0 to 365d; exit 75 when it passes.",
           default="0", kind="duration"),
    Option("lock", "PRELOADER_LOCK", "--lock",
           "How repo locks exclude other processes and nodes: flock, lease (an O_EXCL marker with a heartbeat, for "
           "NFS, CephFS, Lustre and FUSE volumes where flock does not cross nodes) or auto (lease on those).",
           default="auto", kind="choice", choices=("auto", "flock", "lease")),
    Option("lease_stale", "PRELOADER_LEASE_STALE", "--lease-stale",
           "A lease whose marker has not changed for this long is taken over (every node must agree); from 1s to 1d.",
           default="30s", kind="duration", least=1, most=DAY),
    Option("lock_timeout", "PRELOADER_LOCK_TIMEOUT", "--lock-timeout",
           "How long to wait for another process's repo or blob lock (0 = not at all), from 0 to 365d; exit 75 "
           "once after it (not retried).",
           default="1h", kind="duration"),
    Option("retries", "PRELOADER_RETRIES", "--retries",
           "Attempts per repo on transient hub errors (timeouts, 408, 429, 5xx) and on bytes that do not match "
           "their hash, from 1 to 100.",
           default="5", kind="count", least=1, most=100),
    Option("read_timeout", "PRELOADER_READ_TIMEOUT", "--read-timeout",
           "A download that receives nothing for this long is retried; from 100ms to 1d.", default="30s",
           kind="duration", least=0.1, most=DAY),
    Option("workers", "PRELOADER_WORKERS", "--workers",
           "Files downloaded in parallel per repo, from 1 to 256.", default="8", kind="count", least=1, most=256),
    Option("transfer", "PRELOADER_TRANSFER", "--transfer",
           "auto: our resumable, checked, multi-connection download for every file hf_xet does not serve; "
           "hub: huggingface_hub for all; parallel: ours for all.", default="auto", kind="choice",
           choices=("auto", "hub", "parallel")),
    Option("connections", "PRELOADER_CONNECTIONS", "--connections",
           "Parallel ranged connections per large file, from 1 to 64.", default="8", kind="count", least=1,
           most=64),
    Option("parallel_threshold", "PRELOADER_PARALLEL_THRESHOLD", "--parallel-threshold",
           "Files at least this big use several connections (500M, 64MiB), from 0 to 2^63-1 bytes.",
           default="64MiB", kind="size"),
    Option("max_cache_size", "PRELOADER_MAX_CACHE_SIZE", "--max-cache-size",
           "Evict least recently used complete snapshots before a download that would take the cache over this "
           "size or not fit the free space, and after the preload until the cache is at most this big (200G; 0 = no "
           "bound), from 0 to 2^63-1 bytes; never one of the plan, never a locked one.",
           default="0", kind="size"),
    Option("min_free", "PRELOADER_MIN_FREE", "--min-free",
           "Free space to leave on the cache volume, from 0 to 2^63-1 bytes; exit 74 before downloading if it "
           "would not fit.", default="1GiB", kind="size"),
    Option("warm", "PRELOADER_WARM", "--warm",
           "After the preload, warm each model: none, page-cache (read into RAM) or gpu[:N] "
           "(load every safetensors tensor onto CUDA device N, check it fits, free it).",
           default="none", kind="warm"),
    Option("warm_lock", "PRELOADER_WARM_LOCK", "--warm-lock",
           "With --warm page-cache and no command: mlock the weights and stay up holding them until SIGTERM.",
           default="0", kind="bool"),
    Option("refresh", "PRELOADER_REFRESH", "--refresh",
           "With no command: stay up after the preload and preload again every this long (10m, 1h; 0 = exit once "
           "ready), from 0 to 365d, serving /metrics until SIGTERM; for a node cache (DaemonSet).",
           default="0", kind="duration"),
    Option("dtype", "PRELOADER_DTYPE", "--dtype",
           "With --warm gpu: cast tensors on the device to float16, bfloat16 or float32.",
           default="none", kind="choice", choices=("none", *DTYPES)),
    Option("lockfile", "PRELOADER_LOCKFILE", "--lockfile",
           "Use the commits and file digests of this lock file (`preloader lock` writes it): run, pull and wait "
           "take each repo's locked commit with no hub lookup, and refuse (79), before the hand-off, a file whose "
           "digest differs, a missing file or a repo of the plan the lock does not hold."),
    Option("pickle", "PRELOADER_PICKLE", "--pickle",
           "refuse: fail (79) before any download when the plan selects pickle-format weights (*.bin, *.pt, "
           "*.pth, *.ckpt, *.pkl, ...; by content, a zip holding data.pkl or a pickle header), listing them.",
           default="allow", kind="choice", choices=("allow", "refuse")),
    Option("offline", "PRELOADER_OFFLINE", "--offline",
           "Cache only: no network calls; fail (75) if a snapshot is not complete.",
           default="0", kind="bool", fallbacks=("HF_HUB_OFFLINE",)),
    Option("require_repos", "PRELOADER_REQUIRE_REPOS", "--require-repos",
           "Fail (78) when no repo is requested, instead of warning and starting the service anyway.",
           default="0", kind="bool"),
    Option("service_offline", "PRELOADER_SERVICE_OFFLINE", "--service-offline",
           "Start the service with HF_HUB_OFFLINE=1.", default="1", kind="bool"),
    Option("export_token", "PRELOADER_EXPORT_TOKEN", "--export-token",
           "Pass the token to the service as HF_TOKEN (it is removed otherwise).",
           default="0", kind="bool"),
    Option("manifest", "PRELOADER_MANIFEST", "--manifest",
           "Where to write the manifest JSON handed to the service.",
           default="<state dir>/manifests/<plan>.json"),
    Option("log_format", "PRELOADER_LOG_FORMAT", "--log-format",
           "Log lines as key=value text or JSON.", default="text", kind="choice",
           choices=get_args(LogFormat)),
    Option("log_level", "PRELOADER_LOG_LEVEL", "--log-level",
           "Least severe log level shown.", default="info", kind="choice",
           choices=get_args(LogLevel)),
    Option("metrics_addr", "PRELOADER_METRICS_ADDR", "--metrics-addr",
           "Serve Prometheus metrics at http://ADDR/metrics (:9400, 0.0.0.0:9400, 127.0.0.1:0) from the start "
           "until the hand-off, and for as long as a long-running form lives; off when empty.", kind="address"),
    Option("metrics_file", "PRELOADER_METRICS_FILE", "--metrics-file",
           "Write the same metrics to this file (atomically) every few seconds and at exit, success or failure, "
           "for node_exporter's textfile collector (name it *.prom)."),
    Option("signature", "PRELOADER_SIGNATURE", "--signature",
           "Check each model against its OpenSSF model signature before the hand-off: off, if-present (when the "
           "repo has one) or required (exit 65 without one); needs hf-preloader[signing] and a key, certificate "
           "or identity.", default="off", kind="choice", choices=("off", "if-present", "required")),
    Option("signature_key", "PRELOADER_SIGNATURE_KEY", "--signature-key",
           "The PEM public key that signed the models (model_signing's `key` method)."),
    Option("signature_cert", "PRELOADER_SIGNATURE_CERT", "--signature-cert",
           "A PEM file of the trusted (CA) certificates the signing certificate must chain to (the `certificate` "
           "method)."),
    Option("signature_identity", "PRELOADER_SIGNATURE_IDENTITY", "--signature-identity",
           "Sigstore keyless: the identity (e-mail or workflow URI) that must have signed; with --signature-issuer."),
    Option("signature_issuer", "PRELOADER_SIGNATURE_ISSUER", "--signature-issuer",
           "Sigstore keyless: the OIDC issuer of that identity (https://accounts.google.com, "
           "https://token.actions.githubusercontent.com)."),
    Option("signature_file", "PRELOADER_SIGNATURE_FILE", "--signature-file",
           "The signature's path in each model repo.", default="model.sig"),
    Option("debug", "PRELOADER_DEBUG", "--debug",
           "Show tracebacks for errors.", default="0", kind="bool"),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
