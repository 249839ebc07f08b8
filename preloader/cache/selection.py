"""Which files of a commit's listing a request wants: the one owner of that answer.

A `Selection` is a pure function of a listing (path -> size), so a request can be
judged against a completion record with no network call, the same way online and
offline. The engine, `status`, `wait`, `plan`, tiers, the lock file and the API all
ask `Selection.apply`; `Settings.selection(spec)` builds the one a plan uses.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """huggingface_hub's pattern rules: fnmatch, and `dir/` means `dir/*`."""
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


@dataclass(frozen=True)
class Selection:
    """The files a request wants: `include` (empty: every file) less `exclude`."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def apply(self, listing: dict[str, int]) -> dict[str, int]:
        """The wanted part of `listing`, path -> size."""
        return {
            path: size
            for path, size in listing.items()
            if (not self.include or matches(path, self.include)) and not matches(path, self.exclude)
        }

    def describe(self) -> str:
        """For messages: what this selection asked for, and the setting that changes it."""
        return f"include={list(self.include)} exclude={list(self.exclude)}; check PRELOADER_INCLUDE/EXCLUDE"


EVERYTHING = Selection()
