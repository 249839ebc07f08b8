"""What one warming did."""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass
class WarmReport:
    """What one warming did: bytes read, seconds, and where to (page-cache, cuda:0, cpu)."""

    device: str
    files: int
    bytes: int
    seconds: float
    method: str = ""
    device_name: str = ""
    tensors: int = 0
    dtype: str | None = None
    needed_bytes: int = 0
    free_bytes: int = 0
    setup_seconds: float = 0.0
    locked_bytes: int = 0
    warning: str | None = None

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / GB if self.seconds > 0 else 0.0
