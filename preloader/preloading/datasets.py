"""Preparing preloaded datasets, so that `datasets.load_dataset("user/name")` works offline.

datasets 5 never reads the hub cache when offline: by name, it only looks for a copy it prepared
earlier in HF_DATASETS_CACHE. Preparing it once, while the hub is reachable, from the files already
in the hub cache (a few small API calls resolve the revision and list the files; no file is fetched
again) leaves that copy on the shared volume, and the service gets HF_DATASETS_CACHE pointing there.
It runs in a subprocess: datasets reads its settings from the environment at import, and its import
costs seconds that a start without --prepare-datasets should not pay.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence

from ..config import Settings
from ..errors import TransientError, UnavailableError
from ..logs import Clock, event, redact
from ..options import TOKEN_VARS
from .results import PreloadResult

logger = logging.getLogger(__name__)

SCRIPT = ("import sys, datasets\n"
          "datasets.load_dataset_builder(sys.argv[1], revision=sys.argv[2]).download_and_prepare()\n")


def environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """datasets' environment: online, on our hub cache and endpoint, the token only as HF_TOKEN."""
    env = {k: v for k, v in environ.items() if k not in TOKEN_VARS}
    env.update(HF_HUB_CACHE=str(settings.cache_dir), HF_DATASETS_CACHE=str(settings.layout.datasets_cache),
               HF_ENDPOINT=settings.endpoint, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0")
    if settings.token:
        env["HF_TOKEN"] = settings.token
    return env


def prepare(settings: Settings, results: Sequence[PreloadResult], environ: Mapping[str, str]) -> None:
    """Prepare every dataset among `results` at the commit preloaded (with --prepare-datasets)."""
    wanted = [r for r in results if r.repo_type == "dataset"]
    if not settings.prepare_datasets or not wanted:
        return
    if settings.offline:
        logger.warning("--prepare-datasets needs the hub and offline mode is on (%s): not prepared",
                       settings.offline_source)
        return
    if importlib.util.find_spec("datasets") is None:
        raise UnavailableError("--prepare-datasets needs the `datasets` package in the preloader's environment: "
                               "pip install datasets, or load the dataset from PRELOADER_DATASET_PATH instead")
    env = environment(settings, environ)
    for result in wanted:
        clock = Clock()
        proc = subprocess.run([sys.executable, "-c", SCRIPT, result.repo_id, result.commit], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise _failure(result, proc.stderr)
        event(logger, "datasets.prepared", repo=result.repo_id, rev=result.revision, commit=result.commit,
              cache=settings.layout.datasets_cache, secs=clock.seconds())


def _failure(result: PreloadResult, stderr: str) -> Exception:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
    where = f"dataset {result.repo_id}@{result.revision}"
    if "ConnectionError" in last or "Couldn't reach" in last:
        return TransientError(f"{where}: datasets could not reach the hub to prepare it: {redact(last)}")
    return UnavailableError(f"{where}: datasets could not prepare it: {redact(last)}; "
                            "load it from PRELOADER_DATASET_PATH instead")
