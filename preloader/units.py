"""Sizes and durations: parsed from settings and flags, formatted for people. The one owner of both."""

from __future__ import annotations

import re

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB")


def parse_size(text: str) -> int:
    """Bytes from `500M`, `200G`, `1.5TiB` (powers of 1024) or `200GB` (powers of 1000); ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(text)
    number, unit, suffix = match.groups()
    power = "kmgtp".find(unit) + 1 if unit else 0
    base = 1000 if suffix == "b" and unit else 1024
    return int(float(number) * base**power)


def parse_duration(text: str) -> float:
    """Seconds from `30`, `90s`, `500ms`, `10m`, `1h` or `1d`; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _SECONDS[match.group(2)]


def human_size(count: float | None) -> str:
    """`512 B`, `48.1 MiB`: powers of 1024, one decimal above bytes; `?` for unknown."""
    if count is None:
        return "?"
    for unit in _BINARY:
        if abs(count) < 1024 or unit == _BINARY[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
