"""Which files of a snapshot to warm, and warming one snapshot as a WarmMode says."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import UnavailableError
from ..logs import event
from .mode import WarmMode
from .page_cache import DEFAULT_THREADS, warm_page_cache
from .report import WarmReport
from .safetensors import SAFETENSORS_SUFFIX

log = logging.getLogger(__name__)

# Weight-like files worth having in RAM. Reading a pickle file's bytes is harmless; only
# unpickling runs code, and nothing here ever unpickles.
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")


def weight_files(snapshot_dir: Path, *, safetensors_only: bool = False) -> list[Path]:
    """The weight files of a snapshot, sorted; one entry per blob when two names link to it.

    With `safetensors_only` (the GPU's set), a folder with a `*.safetensors.index.json` gives
    only the shards its weight map names: repos that also ship the same weights in another
    layout (Mistral's consolidated.safetensors) would otherwise count twice against GPU memory.
    """
    snapshot_dir = Path(snapshot_dir)
    suffixes = (SAFETENSORS_SUFFIX,) if safetensors_only else WEIGHT_SUFFIXES
    found: dict[Path, Path] = {}
    indexed: dict[Path, set[str] | None] = {}
    for path in sorted(snapshot_dir.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(snapshot_dir).parts):
            continue
        if not (path.name.lower().endswith(suffixes) and path.is_file()):
            continue
        if safetensors_only:
            if path.parent not in indexed:
                indexed[path.parent] = _indexed_shards(path.parent)
            shards = indexed[path.parent]
            if shards is not None and path.name not in shards:
                continue
        found.setdefault(path.resolve(), path)
    return list(found.values())


def _indexed_shards(folder: Path) -> set[str] | None:
    """File names the folder's safetensors index files map weights to; None without an index."""
    shards: set[str] | None = None
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError, AttributeError):
            continue  # a damaged index: warm every file rather than guess
        shards = (shards or set()) | {str(name) for name in weight_map.values()}
    return shards


def warm_snapshot(
    snapshot_dir: Path,
    mode: WarmMode,
    *,
    repo: str = "",
    dtype: str | None = None,
    lock: bool = False,
    threads: int | None = None,
) -> WarmReport | None:
    """Warm one snapshot as `mode` says and log `warm.done` with bytes, seconds, GB/s and device.

    None for mode none. GPU warming reads only *.safetensors files (UnavailableError when a
    snapshot has none); page-cache warming reads every weight file.
    """
    if mode.kind == "none":
        return None
    snapshot_dir = Path(snapshot_dir)
    gpu = mode.kind == "gpu"
    paths = weight_files(snapshot_dir, safetensors_only=gpu)
    event(log, "warm.start", repo=repo, mode=str(mode), files=len(paths))
    if gpu:
        from .gpu import warm_gpu  # torch only now, and only for this

        if not paths:
            raise UnavailableError(
                f"no *.safetensors files in {snapshot_dir} ({repo or 'snapshot'}): GPU warming loads only "
                "safetensors (pickle weights are never unpickled); use --warm page-cache for this repo"
            )
        report = warm_gpu(paths, device=mode.device, dtype=dtype, threads=threads)
    else:
        report = warm_page_cache(paths, threads=threads or DEFAULT_THREADS, lock=lock)
    fields: dict[str, object] = {"repo": repo, "device": report.device}
    if report.device_name:
        fields["gpu"] = report.device_name
    fields.update(files=report.files, bytes=report.bytes, secs=f"{report.seconds:.2f}", rate=f"{report.gbps:.2f}GB/s")
    if gpu:
        fields.update(tensors=report.tensors, dtype=report.dtype or "as-stored")
        fields["setup_secs"] = f"{report.setup_seconds:.2f}"
    if report.locked_bytes:
        fields["locked"] = report.locked_bytes
    event(log, "warm.done", **fields)
    if report.warning:
        event(log, "warm.lock_failed", logging.WARNING, repo=repo, reason=report.warning)
    return report
