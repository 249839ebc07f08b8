"""What `--warm` and `--dtype` can ask for: parsed once, at the boundary, into these types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

Dtype = Literal["float16", "bfloat16", "float32"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)  # what --dtype casts to


@dataclass(frozen=True)
class WarmMode:
    """kind is none, page-cache or gpu; gpu has a CUDA device index."""

    kind: Literal["none", "page-cache", "gpu"]
    device_index: int = 0

    FORMS: ClassVar[str] = "none, page-cache, gpu or gpu:N (N a CUDA device index)"

    @classmethod
    def parse(cls, text: str) -> WarmMode:
        """`none`, `page-cache`, `gpu` or `gpu:N` (case and spaces ignored); ValueError otherwise."""
        value = text.strip().lower()
        if value in ("none", "page-cache", "gpu"):
            return cls(value)
        kind, _, index = value.partition(":")
        if kind == "gpu" and index.isdigit():
            return cls("gpu", int(index))
        raise ValueError(text)

    @property
    def device(self) -> str:
        return f"cuda:{self.device_index}" if self.kind == "gpu" else self.kind

    def __str__(self) -> str:
        return f"gpu:{self.device_index}" if self.kind == "gpu" else self.kind
