"""Handing the process over to the service: its environment, the manifest, then exec.

exec keeps the PID, so the service receives the container's signals itself
and its exit code is the container's, as under tini or dumb-init.
"""

from __future__ import annotations

import json
import os
import stat
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import logs
from ..cache import atomic
from ..config import Settings
from ..errors import ConfigError, DiskError, ServiceError
from ..options import TOKEN_VARS
from . import signals
from .engine import PreloadResult


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
                "weights": chosen(settings, r),
            }
            for r in results
        ],
    }


def chosen(settings: Settings, result: PreloadResult) -> dict:
    """The selection a repo was preloaded with and the files it chose (docs/weights.md)."""
    from ..cache.selection import quant_of

    label = settings.selection(result.spec).label()
    ggufs = sorted({quant_of(p) for p in result.chosen
                    if p.lower().endswith(".gguf") and not p.rsplit("/", 1)[-1].lower().startswith("mmproj")})
    return {**label, "quant": ", ".join(ggufs) or label["quant"], "chosen": list(result.chosen)}


def manifest_path(settings: Settings) -> Path:
    """Where asked, else one stable file per plan in the state dir: replaced on each start, never piling up."""
    if settings.manifest is not None:
        return settings.manifest
    plan = "\n".join(str(spec) for spec in settings.repos) + f"\n{settings.include}\n{settings.exclude}"
    return settings.layout.manifest_file(f"{zlib.crc32(plan.encode()):08x}")  # hashlib's import costs a start


def check_command(argv: Sequence[str]) -> None:
    """A command exec cannot even try: 78 before any work, not a bug after the preload."""
    if argv and not argv[0]:
        raise ConfigError("the service command after -- is empty; give the program to run, "
                          "e.g. `preloader run -- python serve.py`")
    if any("\0" in arg for arg in argv):
        raise ConfigError("the service command after -- holds a NUL character; exec cannot pass it")


def check_manifest(settings: Settings) -> None:
    """PRELOADER_MANIFEST must name a file that can be created: a folder there, or a file where a folder
    should be, is a setting to fix (78) before any work, not a failure after the preload."""
    path = settings.manifest
    if path is None:
        return
    where = f"PRELOADER_MANIFEST (--manifest) {path}"
    if path.is_dir():
        raise ConfigError(f"{where} is a directory; name a file in it, e.g. {path / 'manifest.json'}")
    parent = atomic.nearest_existing(path.parent)
    if not parent.is_dir():
        raise ConfigError(f"{where}: {parent} is not a directory; name a file in a folder")


def write_manifest(settings: Settings, results: Sequence[PreloadResult],
                   environ: Mapping[str, str] | None = None) -> Path:
    """Write the manifest atomically; return its path. A read-only state dir gets it in a private place
    instead (see `private_manifest`): never under a name another local user could take or read."""
    path = manifest_path(settings)
    text = json.dumps(manifest(settings, results), indent=2) + "\n"
    try:
        # The default place is in the state dir: checked to really lie there (no `manifests/` planted as a link
        # out). A path the user named is theirs to choose.
        atomic.write_text(path, text, mode=0o644, root=settings.state_dir if settings.manifest is None else None)
    except OSError as error:
        if settings.manifest is not None:
            check_manifest(settings)  # a folder or a file appeared in the way since the start
            raise ConfigError(f"PRELOADER_MANIFEST (--manifest) {path} cannot be written: "
                              f"{error.strerror or error}; choose a path this user may write") from None
        if error.errno not in atomic.REFUSED:
            raise DiskError(f"cannot write the manifest {path}: {error.strerror or error}") from None
        path = private_manifest(text, path.stem, os.environ if environ is None else environ)
    return path


def private_manifest(text: str, key: str, environ: Mapping[str, str]) -> Path:
    """The manifest, mode 0600, where only this user can reach it: $XDG_RUNTIME_DIR, else a 0700 folder
    of this user in the temp dir (one owned by another user, or a link, is refused), else a fresh mkstemp
    name. A fixed name in /tmp could be pre-created by another user, to block the start or read the list."""
    import tempfile  # only for a read-only state dir: tempfile's import is a cached start's cost

    folder = private_dir(environ)
    if folder is not None:
        path = folder / f"preloader-manifest-{key}.json"
        try:
            atomic.write_text(path, text, mode=0o600)
            return path
        except OSError:
            pass  # fall through to a name of its own
    fd, name = tempfile.mkstemp(prefix="preloader-manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return Path(name)


def private_dir(environ: Mapping[str, str]) -> Path | None:
    """A folder only this user can write and read, or None."""
    import tempfile

    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and _private(Path(runtime)):
        return Path(runtime)
    folder = Path(tempfile.gettempdir()) / f"preloader-{os.getuid()}"
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    return folder if _private(folder) else None


def _private(folder: Path) -> bool:
    """A real folder (not a link) of this user that no one else may enter or write."""
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def service_env(
    environ: Mapping[str, str], settings: Settings, results: Sequence[PreloadResult], manifest_path: Path | None
) -> dict[str, str]:
    """The service's environment: ours, minus tokens, plus where the cache and the snapshots are."""
    env = {k: v for k, v in environ.items() if k not in TOKEN_VARS}  # none reaches the service unless asked
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
    check_command(argv)
    logs.flush()
    signals.for_exec()
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except FileNotFoundError:
        message = f"service command not found: {argv[0]!r}; check the command after --"
        raise ServiceError(message, exit_code=127) from None
    except PermissionError:
        raise ServiceError(f"service command is not executable: {argv[0]!r}", exit_code=126) from None
    except OSError as error:
        raise ServiceError(f"cannot execute the service {argv[0]!r}: {error.strerror}", exit_code=126) from None
