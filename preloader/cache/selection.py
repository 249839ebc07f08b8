"""Which files of a commit's listing a request wants: the one owner of that answer.

A `Selection` is a pure function of a listing (path -> size), so a request can be
judged against a completion record with no network call, the same way online and
offline. The engine, `status`, `wait`, `plan`, tiers, the lock file and the API all
ask `Selection.apply`; `Settings.selection(spec)` builds the one a plan uses.

`weights="auto"` keeps what a serving engine loads (docs/weights.md): safetensors over
pickle, the shards an index names, PyTorch over other frameworks, one GGUF quantization.
The one fact not in a listing, which shards an index's `weight_map` names, comes in as
`indexes` (index path -> shard paths): the engine reads it from the hub, the completion
record keeps it, so an offline check needs no network.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError, NotFoundError
from ..spec import QUANT

Indexes = Mapping[str, frozenset[str]]  # index json path -> the shard paths its weight_map names

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Other frameworks' weights: skipped when PyTorch weights exist. `onnx/` and the like go as whole folders.
OTHER_SUFFIXES = (".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".onnx.data", ".tflite", ".mlmodel")
OTHER_FOLDERS = ("onnx", "openvino", "coreml")
INDEX_SUFFIX = ".safetensors.index.json"
_LEFTOVER = re.compile(r"(optimizer\.pt|scheduler\.pt|training_args\.bin|rng_state.*\.pth)")
_QUANT_IN_NAME = re.compile(rf"(?<![A-Za-z0-9]){QUANT}(?![A-Za-z0-9])", re.IGNORECASE)
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})$")
DEFAULT_QUANT = "Q4_K_M"
# A projector to go with the chosen quantization when none is of the same type: the precision llama.cpp's
# own conversions write first.
_MMPROJ_ORDER = ("F16", "BF16", "F32", "Q8_0")


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """huggingface_hub's pattern rules: fnmatch, and `dir/` means `dir/*`."""
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


def quant_of(path: str) -> str:
    """The quantization a GGUF file holds, upper case, from its name (split parts share it); its stem when the
    name says none."""
    stem = _SPLIT_PART.sub("", posixpath.basename(path)[: -len(".gguf")])
    found = list(_QUANT_IN_NAME.finditer(stem)) or list(_QUANT_IN_NAME.finditer(posixpath.dirname(path)))
    return found[-1].group(0).upper() if found else stem


def _is_mmproj(path: str) -> bool:
    return posixpath.basename(path).lower().startswith("mmproj")


def _gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def _other_framework(path: str) -> bool:
    parts = path.split("/")
    return path.lower().endswith(OTHER_SUFFIXES) or any(part in OTHER_FOLDERS for part in parts[:-1])


def _pickle(path: str) -> bool:
    return path.lower().endswith(PICKLE_SUFFIXES) and not _other_framework(path)


def _safetensors(path: str) -> bool:
    return path.endswith(".safetensors") and not _other_framework(path)


@dataclass(frozen=True)
class Choice:
    """What a selection made of a listing: the wanted files, what `auto` skipped, and the GGUF type chosen."""

    wanted: dict[str, int]
    skipped: dict[str, int]
    quant: str | None = None


@dataclass(frozen=True)
class Selection:
    """The files a request wants: `include` (empty: every file) less `exclude`; with `weights="auto"` and no
    `include`, only the weights the service loads. `quant` names the GGUF quantization; `repo` is for messages."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    weights: str = "all"
    quant: str | None = None
    repo: str = ""

    @property
    def auto(self) -> bool:
        return self.weights == "auto" and not self.include

    def needs_indexes(self, listing: Mapping[str, int]) -> tuple[str, ...]:
        """The index files whose weight_map `apply` reads for this listing (none unless `auto`)."""
        return tuple(sorted(p for p in listing if p.endswith(INDEX_SUFFIX))) if self.auto else ()

    def apply(self, listing: Mapping[str, int], indexes: Indexes | None = None) -> dict[str, int]:
        """The wanted part of `listing`, path -> size."""
        return self.choose(listing, indexes).wanted

    def choose(self, listing: Mapping[str, int], indexes: Indexes | None = None) -> Choice:
        """The wanted files, and what the `auto` rules skipped (before `exclude`); ConfigError (78) for a GGUF
        repo whose quantization is not settled, NotFoundError (66) for a named one it lacks."""
        kept, quant = (self._auto(listing, indexes or {}) if self.auto else (set(listing), None))
        wanted = {path: size for path, size in listing.items()
                  if path in kept and (not self.include or matches(path, self.include))
                  and not matches(path, self.exclude)}
        skipped = {path: size for path, size in listing.items() if path not in kept}
        return Choice(wanted, skipped, quant)

    def _auto(self, listing: Mapping[str, int], indexes: Indexes) -> tuple[set[str], str | None]:
        paths = set(listing)
        safetensors = {p for p in paths if _safetensors(p)}
        ggufs = {p for p in paths if _gguf(p)}
        drop: set[str] = set()
        quant = None
        if ggufs and (not safetensors or self.quant):
            chosen, quant = self._gguf(ggufs, listing)
            drop |= ggufs - chosen
        else:
            drop |= ggufs
        folders_with_st = {posixpath.dirname(p) for p in safetensors}
        if safetensors:
            drop |= {p for p in paths if _LEFTOVER.fullmatch(posixpath.basename(p))}
        # Pickle weights go where the same folder has safetensors: a sentence-transformers `2_Dense/` with only
        # pytorch_model.bin keeps it, whatever the root holds.
        drop |= {p for p in paths if _pickle(p) and posixpath.dirname(p) in folders_with_st}
        for index in (p for p in paths if p.endswith(INDEX_SUFFIX)):
            if index not in indexes or not indexes[index] <= paths:
                continue  # its weight_map unknown, or naming files the commit lacks: keep the folder's safetensors
            folder = posixpath.dirname(index)
            named = set().union(*(indexes[i] for i in paths if i.endswith(INDEX_SUFFIX)
                                  and posixpath.dirname(i) == folder and i in indexes and indexes[i] <= paths))
            drop |= {p for p in safetensors if posixpath.dirname(p) == folder and p not in named}
        pytorch = {p for p in paths - drop if _safetensors(p) or (_pickle(p) and not _LEFTOVER.fullmatch(
            posixpath.basename(p)))}
        if pytorch:
            drop |= {p for p in paths if _other_framework(p)}
        return paths - drop, quant

    def _gguf(self, ggufs: set[str], listing: Mapping[str, int]) -> tuple[set[str], str]:
        """The files of one quantization (every split part) and the projector that goes with it."""
        projectors = {p for p in ggufs if _is_mmproj(p)}
        groups: dict[str, set[str]] = {}
        for path in ggufs - projectors:
            groups.setdefault(quant_of(path), set()).add(path)
        found = ", ".join(sorted(groups)) or "none"
        if self.quant:
            quant = self.quant.upper()
            if quant not in groups:
                raise NotFoundError(f"{self._where()}has no GGUF quantization {self.quant}; it has: {found}; "
                                    "name one of those")
        elif DEFAULT_QUANT in groups or len(groups) == 1:
            quant = DEFAULT_QUANT if DEFAULT_QUANT in groups else next(iter(groups))
        elif not groups:
            return set(projectors), ""
        else:
            raise ConfigError(
                f"{self._where()}holds several GGUF quantizations and none is named (no {DEFAULT_QUANT}): {found}; "
                "name one as user/name:TYPE or with PRELOADER_GGUF_QUANT, or fetch every file with "
                "PRELOADER_WEIGHTS=all")
        return groups[quant] | self._projector(projectors, quant, listing), quant

    @staticmethod
    def _projector(projectors: set[str], quant: str, listing: Mapping[str, int]) -> set[str]:
        if not projectors:
            return set()
        by_type = {quant_of(p): p for p in sorted(projectors)}
        for kind in (quant, *_MMPROJ_ORDER):
            if kind in by_type:
                return {by_type[kind]}
        return {min(projectors, key=lambda p: (listing[p], p))}

    def _where(self) -> str:
        return f"{self.repo} " if self.repo else ""

    def describe(self) -> str:
        """For messages: what this selection asked for, and the setting that changes it."""
        quant = f" quant={self.quant}" if self.quant else ""
        return (f"weights={self.weights}{quant} include={list(self.include)} exclude={list(self.exclude)}; "
                "check PRELOADER_WEIGHTS/INCLUDE/EXCLUDE")

    def label(self) -> dict:
        """What the completion record and the manifest say this selection was."""
        return {"weights": "include" if self.include else self.weights, "quant": self.quant,
                "include": list(self.include), "exclude": list(self.exclude)}


EVERYTHING = Selection()
