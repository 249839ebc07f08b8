"""Sizes and durations: parsed from settings and flags, formatted for people. The one owner of both,
and of their valid ranges: every parse takes the range it must fall in and says it when it does not."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(i?b?)")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?")
_SECONDS = {None: 1, "ms": Fraction(1, 1000), "s": 1, "m": 60, "h": 3600, "d": 86400}
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB")
# Longer numbers are accidents (or attacks): Fraction of a million digits is slow. Any float fits in 400.
_MAX_DIGITS = 400

MAX_SIZE = 2**63 - 1  # what st_size, off_t and statvfs can hold
DAY = 86400.0
# Past a year, a timeout or lease is a mistake: and time.monotonic() + d, setitimer and datetime all stay exact.
YEAR = 365 * DAY


class OutOfRange(ValueError):
    """A well-formed size or duration outside the range the setting allows."""


def parse_size(text: str, least: int = 0, most: int = MAX_SIZE) -> int:
    """Bytes from `500M`, `200G`, `1.5TiB` (powers of 1024) or `200GB` (powers of 1000), from `least` to `most`;
    ValueError otherwise (OutOfRange when well formed)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match or len(match.group(1)) > _MAX_DIGITS:
        raise ValueError(text)
    number, unit, suffix = match.groups()
    power = "kmgtp".find(unit) + 1 if unit else 0
    base = 1000 if suffix == "b" and unit else 1024
    return check_size(int(Fraction(number) * base**power), least, most)


def check_size(count: int, least: int = 0, most: int = MAX_SIZE) -> int:
    if not least <= count <= most:
        raise OutOfRange(str(count))
    return count


def parse_duration(text: str, least: float = 0.0, most: float = YEAR) -> float:
    """Seconds from `30`, `90s`, `500ms`, `10m`, `1h` or `1d`, from `least` to `most`; ValueError otherwise
    (OutOfRange when well formed)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or len(match.group(1)) > _MAX_DIGITS:
        raise ValueError(text)
    seconds = Fraction(match.group(1)) * _SECONDS[match.group(2)]
    # Compared exactly, before a float could round into the range (and 100ms is 0.1 s, not float 0.1's binary).
    if not Fraction(repr(least)) <= seconds <= Fraction(repr(most)):
        raise OutOfRange(text)
    return float(seconds)


def check_duration(seconds: float, least: float = 0.0, most: float = YEAR) -> float:
    """`seconds` as given in code (an int or float): finite and from `least` to `most`, else OutOfRange."""
    if not math.isfinite(seconds) or not least <= seconds <= most:
        raise OutOfRange(str(seconds))
    return float(seconds)


def human_size(count: float | None) -> str:
    """`512 B`, `48.1 MiB`: powers of 1024, one decimal above bytes; `?` for unknown."""
    if count is None:
        return "?"
    for unit in _BINARY:
        if abs(count) < 1024 or unit == _BINARY[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """The shortest of `100ms`, `30s`, `10m`, `1h`, `365d` that is exact, for range texts."""
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
