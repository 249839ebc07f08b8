"""What a preload or a wait hands back: one PreloadResult per requested repo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache.layout import Layout
from ..cache.records import Completeness
from ..spec import RepoSpec


@dataclass(frozen=True)
class PreloadResult:
    """What one requested repo ended up as."""

    repo_type: str
    repo_id: str
    revision: str
    commit: str
    path: Path
    alias: Path | None
    files: int
    bytes_fetched: int
    bytes_reused: int
    seconds: float
    source: str  # "hub" (fetched or checked online), "cache" (no network), "cache-fallback" (hub failed)
    chosen: tuple[str, ...] = ()  # the files of the snapshot the plan's selection wants
    quant: str | None = None  # the GGUF quantization named in place of a revision, if any

    @classmethod
    def of(cls, layout: Layout, state: Completeness, *, fetched: int = 0, seconds: float = 0.0,
           source: str = "cache") -> PreloadResult:
        """The result for a complete snapshot: its path and alias (where that exists), files and bytes."""
        spec = state.spec
        alias = layout.alias_link(spec)
        return cls(
            repo_type=spec.repo_type, repo_id=spec.repo_id, revision=spec.revision, commit=state.commit,
            path=layout.snapshot_dir(spec, state.commit), alias=alias if alias is not None and alias.exists() else None,
            files=len(state.wanted), bytes_fetched=fetched, bytes_reused=state.size - fetched, seconds=seconds,
            source=source, chosen=tuple(sorted(state.wanted)), quant=spec.quant or None,
        )

    @property
    def spec(self) -> RepoSpec:
        """The request as the plan reads it (a named quantization included)."""
        return RepoSpec(self.repo_type, self.repo_id, self.revision, self.quant)

    @property
    def hub_cache(self) -> Path:
        """The hub cache the snapshot lies in (`<cache>/<repo>/snapshots/<commit>`): ours, or a read-only tier."""
        return self.path.parents[2]

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["path"] = str(self.path)
        data["alias"] = str(self.alias) if self.alias else None
        return data

