"""preloader: get Hugging Face models and datasets into a shared cache before the service starts.

The Python API for worker init code::

    import preloader
    results = preloader.preload(models=["org/model:main"], cache_dir="/runpod-volume/hub")
    results[0].path   # the snapshot directory, ready for from_pretrained(..., local_files_only=True)
"""

from __future__ import annotations

from .api import Cache, preload, wait
from .config import Settings
from .errors import (
    AuthError,
    ConfigError,
    DiskError,
    LockRefusedError,
    NotFoundError,
    PickleRefusedError,
    PolicyRefusedError,
    PreloaderError,
    SignatureError,
    TransientError,
    UnavailableError,
)
from .preloading.results import PreloadResult
from .spec import RepoSpec
from .version import __version__ as __version__  # the one definition, which every layer can import

__all__ = [
    "AuthError",
    "Cache",
    "ConfigError",
    "DiskError",
    "LockRefusedError",
    "NotFoundError",
    "PickleRefusedError",
    "PolicyRefusedError",
    "PreloadResult",
    "PreloaderError",
    "RepoSpec",
    "Settings",
    "SignatureError",
    "TransientError",
    "UnavailableError",
    "preload",
    "wait",
]
