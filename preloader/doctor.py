"""`preloader doctor`: is this machine fit to preload into this cache? Each check: ok, warn or fail, and a fix."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cache import atomic
from .cache.inventory import free_space
from .config import Settings
from .errors import os_error
from .units import human_size

GIB = 1024**3


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def existing_parent(path: Path) -> Path:
    return atomic.nearest_existing(path, follow=True)


def check_location(s: Settings) -> Check:
    how = {"default": "the default ~/.cache/huggingface/hub"}.get(s.cache_dir_source, s.cache_dir_source)
    return Check("cache location", "ok", f"{s.cache_dir} (from {how}); state in {s.state_dir}")


def check_writable(s: Settings) -> Check:
    target = existing_parent(s.cache_dir)
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".preloader-doctor-"):
            pass
    except OSError as error:  # the fix depends on why: a read-only mount, or a folder this user may not write
        return _failed("writable", os_error(OSError(error.errno, error.strerror, str(target)), "write in"))
    where = "" if target == s.cache_dir else f" (will be created under {target})"
    return Check("writable", "ok", f"{s.cache_dir} is writable{where}")


def check_sharing(s: Settings) -> Check:
    umask = os.umask(0)
    os.umask(umask)
    target = existing_parent(s.cache_dir)
    mode = target.stat().st_mode
    problems = []
    if umask & 0o020:
        problems.append(f"umask {umask:03o} drops group write")
    if not mode & stat.S_IWGRP:
        problems.append(f"{target} is not group-writable ({stat.filemode(mode)})")
    if problems:
        return Check("group sharing", "warn", "; ".join(problems),
                     "for containers with other UIDs: umask 002 and `chmod -R g+ws` the volume for a shared group")
    return Check("group sharing", "ok", f"umask {umask:03o}, {target} group-writable")


def check_space(s: Settings) -> Check:
    free = free_space(s.cache_dir)
    if free is None:
        return Check("free space", "warn", "cannot read free space", "check the volume is mounted")
    text = f"{free / GIB:.1f} GiB free on the cache volume"
    if free < GIB:
        return Check("free space", "fail", text, "free space: `preloader prune --max-size ...` or a bigger volume")
    if free < 10 * GIB:
        return Check("free space", "warn", text, "large models need tens of GiB: `preloader prune` or grow the volume")
    return Check("free space", "ok", text)


def check_hub(s: Settings) -> Check:
    """One API request over the transfer's own client (hub.client.Hub): what a download will meet."""
    if s.offline:
        return Check("hub reachable", "warn", f"not checked: offline mode ({s.offline_source})",
                     "unset PRELOADER_OFFLINE / HF_HUB_OFFLINE to download")
    from .hub.client import Hub  # the hub client, for this check only
    from .hub.errors import HubUnreachable, UntrustedCertificate

    try:
        code = Hub.from_settings(s).probe()
    except UntrustedCertificate as error:
        return _failed("hub reachable", error)
    except HubUnreachable as error:
        return Check("hub reachable", "fail", f"{s.endpoint}: {error}",
                     "check HF_ENDPOINT, DNS and proxies (HTTPS_PROXY, NO_PROXY); cached snapshots still start offline")
    return Check("hub reachable", "ok", f"{s.endpoint} answered HTTP {code}")


def check_token(s: Settings) -> Check:
    if s.token:
        return Check("token", "ok", f"set (from {s.token_source})")
    return Check("token", "warn", "unset: private and gated repos will fail",
                 "set RUNPOD_HUGGINGFACE_USER and RUNPOD_HUGGINGFACE_TOKEN, or HF_TOKEN")


def check_hf_offline(s: Settings) -> Check:
    if s.offline_source == "HF_HUB_OFFLINE":
        return Check("HF_HUB_OFFLINE", "warn", "HF_HUB_OFFLINE is set: the preloader will not download",
                     "unset it: the preloader sets HF_HUB_OFFLINE=1 for the service itself")
    return Check("HF_HUB_OFFLINE", "ok", "not set for the preloader (the service gets HF_HUB_OFFLINE=1)")


def check_symlinks(s: Settings) -> Check:
    target = existing_parent(s.cache_dir)
    try:
        with tempfile.TemporaryDirectory(dir=target, prefix=".preloader-doctor-") as tmp:
            os.symlink("target", Path(tmp) / "link")
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _failed("symlinks", os_error(OSError(error.errno, error.strerror, str(target)), "try symlinks in"))
        return Check("symlinks", "fail", f"cannot create symlinks in {target}: {error.strerror}",
                     "use a filesystem with symlinks (not FAT/SMB without unix extensions)")
    return Check("symlinks", "ok", f"supported in {target}")


def check_flock(s: Settings) -> Check:
    target = existing_parent(s.state_dir)
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".preloader-doctor-") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    except OSError as error:
        return Check("flock", "warn", f"flock fails in {target}: {error.strerror}; a marker-file lock is used",
                     "correctness holds (atomic renames); duplicated downloads are possible")
    return Check("flock", "ok", f"works in {target}")


def check_lock(s: Settings) -> Check:
    """Which repo lock this volume gets, and why (PRELOADER_LOCK=auto looks at the filesystem)."""
    from .cache.locks import choose

    policy = choose(s.lock, s.state_dir, s.lease_stale)
    detail = f"{policy.kind}: {policy.why}"
    if policy.kind == "lease":
        detail += f"; a lease unchanged for {policy.stale:g} s is taken over"
    return Check("repo lock", "ok", detail)


def check_store(s: Settings) -> Check:
    """huggingface_hub 2.x keeps Xet files once per cache, in a store the preloader reads and frees too."""
    from .cache import store

    if store.is_on(s.cache_dir):
        entries = store.entries(s.cache_dir)
        return Check("shared blob store", "ok", f"on: {len(entries)} entries, {human_size(sum(entries.values()))} "
                     f"in {store.store_dir(s.cache_dir)}")
    if s.shared_blobs_disabled:
        return Check("shared blob store", "ok", "off: HF_HUB_DISABLE_SHARED_BLOBS (or HF_HUB_DISABLE_XET) is set")
    return Check("shared blob store", "ok", "not created yet: huggingface_hub makes it on its first Xet download "
                 "into this cache (HF_HUB_DISABLE_SHARED_BLOBS=1 turns it off)")


def check_gpu() -> Check:
    smi = shutil.which("nvidia-smi")
    driver = Path("/proc/driver/nvidia/version").exists()
    if importlib.util.find_spec("torch") is None:
        if smi or driver:
            return Check("GPU", "warn", "NVIDIA driver present, torch not installed",
                         "pip install 'hf-preloader[warm]' torch for --warm gpu")
        return Check("GPU", "warn", "no GPU visible (no NVIDIA driver, torch not installed)",
                     "only needed for --warm gpu")
    import torch  # only when installed: doctor is not a hot path

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("GPU", "ok", f"CUDA: {names}")
    return Check("GPU", "warn", f"torch {torch.__version__} sees no CUDA device", "only needed for --warm gpu")


def check_signing(s: Settings) -> Check:
    """Whether model signatures can be checked here: model-signing and what it imports without declaring."""
    from importlib import metadata

    missing = [name for name, module in (("model-signing", "model_signing"), ("pyOpenSSL", "OpenSSL"),
                                         ("protobuf", "google.protobuf"), ("certifi", "certifi"))
               if _module_missing(module)]
    if missing:
        status = "fail" if s.signature != "off" else "warn"
        return Check("signing", status, f"signing support not installed (missing: {', '.join(missing)})"
                     + (f"; PRELOADER_SIGNATURE={s.signature} cannot check signatures" if s.signature != "off"
                        else ""), "pip install 'hf-preloader[signing]' (only needed for PRELOADER_SIGNATURE)")
    detail = f"signing support installed (model-signing {metadata.version('model-signing')})"
    if s.signature != "off":
        trust = s.signature_key or s.signature_cert or f"identity {s.signature_identity}"
        detail += f"; PRELOADER_SIGNATURE={s.signature}, trusting {trust}"
    return Check("signing", "ok", detail)


def _module_missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent package that is not there
        return True


def run_checks(s: Settings) -> list[Check]:
    """Every check; one that meets a path this user may not use fails with the reason, the others still run."""
    checks = (("cache location", check_location), ("writable", check_writable), ("group sharing", check_sharing),
              ("free space", check_space), ("hub reachable", check_hub), ("token", check_token),
              ("HF_HUB_OFFLINE", check_hf_offline), ("symlinks", check_symlinks), ("flock", check_flock),
              ("repo lock", check_lock), ("shared blob store", check_store), ("GPU", lambda _: check_gpu()),
              ("signing", check_signing))
    return [_guarded(name, check, s) for name, check in checks]


def _guarded(name: str, check, s: Settings) -> Check:
    try:
        return check(s)
    except OSError as error:
        return _failed(name, os_error(error, "read"))


def _failed(name: str, problem: Exception) -> Check:
    """A failed check from errors.os_error's line: what went wrong, then what to do."""
    detail, _, fix = str(problem).partition("; ")
    return Check(name, "fail", detail, fix)
