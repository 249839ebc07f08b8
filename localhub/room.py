"""Four same-sized models for the node-cache tests: three fill a small volume, the fourth needs room.

Each is a config and one 1 MiB LFS weight file of its own (random bytes, so nothing is shared or
deduplicated between them), committed once on `main`.
"""

from __future__ import annotations

import numpy as np

ROOM_MODELS = ("org/room-a", "org/room-b", "org/room-c", "org/room-d")
ROOM_WEIGHT = 1024 * 1024


def build_room(m, repo_class, attrs: dict[str, bytes], lfs: bool) -> None:
    """Add the ROOM_MODELS to the mirrors `m` (a localhub.mirrors.Mirrors), with its `_Repo` driver."""
    for n, repo_id in enumerate(ROOM_MODELS):
        r = repo_class(m, "model", repo_id, lfs)
        r.write({**attrs, "config.json": b'{"model_type": "blob", "n": %d}\n' % n,
                 "model.safetensors": np.random.default_rng(100 + n).bytes(ROOM_WEIGHT)})
        r.commit(f"room model {n}", 0)
