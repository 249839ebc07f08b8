"""The Python API's keywords as the text a flag would carry, so that `Settings.load` parses a keyword, a flag
and an env var the same way (one parser, one range, one message). Wrong types are problems here, named by
the keyword: `timeout=-1: ...`, never an env var the API does not read."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from decimal import Decimal

from .logs import shown
from .options import OPTIONS_BY_NAME, Option
from .units import OutOfRange, check_duration, check_size

PATHS = ("cache_dir", "state_dir", "link_root", "datasets_cache", "manifest", "token_file", "signature_key",
         "signature_cert", "lockfile")
REPO_LISTS = ("models", "datasets")


def expected(option: Option) -> str:
    """What a setting takes, with its valid range: the end of every message about a bad value."""
    from .warm.mode import WarmMode

    if option.kind == "count":
        return f"expected a whole number {option.range_text}"
    if option.kind == "duration":
        return f"expected a duration {option.range_text} (seconds, or like 90s, 10m, 1h)"
    if option.kind == "size":
        return f"expected a size {option.range_text}, like 500M, 64MiB or 2G"
    if option.name in PATHS or option.name == "read_caches":
        return "expected a path" + (" (or several, colon-separated)" if option.name == "read_caches" else "")
    return {
        "bool": "expected 1/0, true/false, yes/no or on/off",
        "warm": "expected " + WarmMode.FORMS,
        "list": "expected a string of comma-separated items or a list of strings",
        "str": "expected a string",
        "address": "expected [HOST]:PORT, e.g. :9400 or 127.0.0.1:9400",
        "quant": "expected a GGUF quantization type like Q4_K_M, Q8_0, IQ2_XS or BF16",
    }.get(option.kind, "expected one of " + ", ".join(option.choices))


def as_text(name: str, value: object, display: str) -> tuple[str | None, str | None]:
    """(the text a flag would carry, or a problem) for API keyword `name`; `display` names it in messages.

    Repo lists are not handled here: their items keep their positions (`models item 2 ...`)."""
    option = OPTIONS_BY_NAME[name]
    wrong = (None, f"{display}={_shown(name, value)}: {expected(option)}")
    if isinstance(value, str):
        if "\0" in value:
            return None, f"{display} holds a NUL character: {expected(option)}"
        return value, None
    if isinstance(value, bool):
        return ("1" if value else "0", None) if option.kind == "bool" else wrong
    if option.kind in ("duration", "size", "count") and isinstance(value, (int, float)):
        try:
            if option.kind == "duration":
                least, most = option.bounds
                check_duration(value, least, most)
                return format(Decimal(repr(float(value))), "f"), None  # exact: 1e-09 stays above zero
            if not isinstance(value, int) and not (math.isfinite(value) and value == int(value)):
                return wrong
            least, most = option.bounds
            return str(check_size(int(value), int(least), int(most))), None
        except OutOfRange:
            return wrong
    if option.kind == "warm" and type(value).__name__ == "WarmMode":
        return str(value), None
    if name in PATHS and isinstance(value, os.PathLike):
        return as_text(name, os.fspath(value), display) if isinstance(os.fspath(value), str) else wrong
    if option.kind == "list" or name == "read_caches":
        return _joined(name, value, display, option)
    return wrong


def _joined(name: str, value: object, display: str, option: Option) -> tuple[str | None, str | None]:
    separator = ":" if name == "read_caches" else ","
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        return None, f"{display}={_shown(name, value)}: {expected(option)}"
    items = []
    for position, item in enumerate(value, start=1):
        if isinstance(item, os.PathLike) and name == "read_caches":
            item = os.fspath(item)
        if not isinstance(item, str) or "\0" in item or separator in item:
            return None, f"{display} item {position} {_shown(name, item)}: expected a string without {separator!r}"
        items.append(item)
    return separator.join(items), None


def _shown(name: str, value: object) -> str:
    """A keyword's value in a message: never a token's, and never more than a few dozen characters."""
    if name == "token":
        return "<not shown>"
    return shown(value) if isinstance(value, str) else shown(repr(value), quote=False)


def unknown(keywords: Mapping[str, object]) -> list[str]:
    """Keywords that name no setting."""
    return [f"unknown keyword {name}: the keywords are the names of the settings, e.g. cache_dir, token, timeout"
            for name in keywords if name not in OPTIONS_BY_NAME]
