"""Handing the process over to the service: its environment, the manifest, then exec.

exec keeps the PID, so the service receives the container's signals itself
and its exit code is the container's, as under tini or dumb-init.
"""

from __future__ import annotations

import json
import os
import signal
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import logs
from ..cache import atomic
from ..config import Settings
from ..errors import ServiceError
from .engine import PreloadResult

# Where a token may hide in an inherited environment; none of them reaches the service unless asked.
TOKEN_VARS = ("RUNPOD_HUGGINGFACE_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Python ignores SIGPIPE and some runtimes SIGXFSZ; ignored dispositions survive exec.
RESET_SIGNALS = ("SIGPIPE", "SIGXFSZ", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")


def manifest(settings: Settings, results: Sequence[PreloadResult]) -> dict:
    return {
        "version": 1,
        "cache_dir": str(settings.cache_dir),
        "repos": [
            {
                "type": r.repo_type,
                "repo": r.repo_id,
                "revision": r.revision,
                "commit": r.commit,
                "path": str(r.path),
                "alias": str(r.alias) if r.alias else None,
                "files": r.files,
            }
            for r in results
        ],
    }


def manifest_path(settings: Settings) -> Path:
    """Where asked, else one stable file per plan in the state dir: replaced on each start, never piling up."""
    if settings.manifest is not None:
        return settings.manifest
    plan = "\n".join(str(spec) for spec in settings.repos) + f"\n{settings.include}\n{settings.exclude}"
    return settings.layout.manifest_file(f"{zlib.crc32(plan.encode()):08x}")  # hashlib's import costs a start


def write_manifest(settings: Settings, results: Sequence[PreloadResult]) -> Path:
    """Write the manifest atomically; return its path. A read-only state dir gets it in the temp dir
    instead (a read-only volume shared by readers), under the same per-plan name."""
    path = manifest_path(settings)
    text = json.dumps(manifest(settings, results), indent=2) + "\n"
    try:
        atomic.write_text(path, text, mode=0o644)
    except OSError as error:
        if settings.manifest is not None or error.errno not in atomic.REFUSED:
            raise
        import tempfile  # only for a read-only state dir: tempfile's import is a cached start's cost

        path = Path(tempfile.gettempdir()) / f"preloader-manifest-{path.stem}.json"
        atomic.write_text(path, text, mode=0o644)
    return path


def service_env(
    environ: Mapping[str, str], settings: Settings, results: Sequence[PreloadResult], manifest_path: Path | None
) -> dict[str, str]:
    """The service's environment: ours, minus tokens, plus where the cache and the snapshots are."""
    env = {k: v for k, v in environ.items() if k not in TOKEN_VARS}
    env["HF_HUB_CACHE"] = str(hub_cache(settings, results))
    if settings.layout.hf_home is not None and env["HF_HUB_CACHE"] == str(settings.cache_dir):
        env["HF_HOME"] = str(settings.layout.hf_home)
    if settings.service_offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
    if settings.endpoint:
        env["HF_ENDPOINT"] = settings.endpoint
    if settings.prepare_datasets:  # where `datasets` finds what was prepared for it
        env["HF_DATASETS_CACHE"] = str(settings.layout.datasets_cache)
    if settings.export_token and settings.token:
        env["HF_TOKEN"] = settings.token
    for kind, var in (("model", "PRELOADER_MODEL_PATH"), ("dataset", "PRELOADER_DATASET_PATH")):
        first = next((r for r in results if r.repo_type == kind), None)
        if first is not None:
            env[var] = str(first.path)
    if manifest_path is not None:
        env["PRELOADER_MANIFEST"] = str(manifest_path)
    return env


def hub_cache(settings: Settings, results: Sequence[PreloadResult]) -> Path:
    """The cache the service should read: ours, unless every snapshot is in one read-only tier (no writable
    cache to link them into)."""
    homes = {r.hub_cache for r in results}
    if settings.cache_dir not in homes and len(homes) == 1:
        return homes.pop()
    return settings.cache_dir


def exec_service(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process with `argv`; raise ServiceError (127 not found, 126 not executable)."""
    logs.flush()
    for name in RESET_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except FileNotFoundError:
        message = f"service command not found: {argv[0]!r}; check the command after --"
        raise ServiceError(message, exit_code=127) from None
    except PermissionError:
        raise ServiceError(f"service command is not executable: {argv[0]!r}", exit_code=126) from None
    except OSError as error:
        raise ServiceError(f"cannot execute the service {argv[0]!r}: {error.strerror}", exit_code=126) from None
