"""Logging set-up: one event per line on stderr, key=value or JSON, secrets scrubbed.

Library modules only call `event(logger, "name", key=value, ...)` or the stdlib
logger methods; handlers are attached here, by the CLI's `setup`, and nowhere else.
Used as a library, the package leaves logging to the host: a NullHandler on its own
logger, and no other package's logger touched.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

PREFIX = "preloader"
REDACTED = "***"
# A Hugging Face token's shape: scrubbed even when it was never registered (pasted into the wrong variable).
TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{30,}")

_secrets: set[str] = set()
_patterns: dict[str, re.Pattern[str]] = {}
_adopted: tuple[str, ...] = ()  # other libraries' loggers the CLI routes through its handler (see `setup`)
# The library's records go nowhere until the host configures logging (or the CLI calls `setup`): never to
# Python's last-resort handler, which would print warnings of a library call on the host's stderr.
logging.getLogger(PREFIX).addHandler(logging.NullHandler())


def add_secret(secret: str | None) -> None:
    """Scrub `secret` from every record from now on. Short strings are ignored: they would mangle logs."""
    if isinstance(secret, str) and len(secret) >= 6:
        _secrets.add(secret)


def _hex(value: int, digits: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{digits}x}")


def _rendering_pattern(secret: str) -> re.Pattern[str]:
    """Every way `secret` can be rendered into a line, one character at a time: as itself, percent-encoded
    (either case of hex, `+` for a space), as a repr or bytes-repr escape (\\xNN, \\n), a JSON escape
    (\\uXXXX, \\/), with backslashes doubled by a second layer of quoting (a repr inside JSON)."""
    parts = []
    for char in secret:
        code = ord(char)
        encoded = char.encode("utf-8", "surrogatepass")
        ways = [re.escape(char), "".join("%" + _hex(b, 2) for b in encoded),
                "".join(r"\\+x" + _hex(b, 2) for b in encoded)]
        if code < 0x100:
            ways.append(r"\\+x" + _hex(code, 2))
        if code < 0x10000:
            ways.append(r"\\+u" + _hex(code, 4))
        else:  # JSON writes a character past the BMP as a surrogate pair
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            ways.append(r"\\+u" + _hex(high, 4) + r"\\+u" + _hex(low, 4))
        ways.append(r"\\+U" + _hex(code, 8))
        short = {"\n": "n", "\t": "t", "\r": "r", "\b": "b", "\f": "f"}.get(char)
        if short or char in "/'\"\\":
            ways.append(r"\\+" + re.escape(short or char))
        if char == " ":
            ways.append(r"\+")
        parts.append("(?:" + "|".join(ways) + ")")
    return re.compile("".join(parts))


def redact(text: str) -> str:
    """`text` with every known secret, in every rendering, and anything shaped like a token, replaced by ***."""
    for secret in sorted(_secrets, key=len, reverse=True):  # a secret containing another goes first
        text = text.replace(secret, REDACTED)
        if secret not in _patterns:
            _patterns[secret] = _rendering_pattern(secret)
        text = _patterns[secret].sub(REDACTED, text)
    return TOKEN_SHAPE.sub(REDACTED, text)


def shown(text: str, limit: int = 80, *, quote: bool = True) -> str:
    """`text` as an error message quotes it: scrubbed first, then cut to `limit` characters (saying how long
    it was), so that one huge value cannot make a huge line and a cut can never leave part of a secret."""
    text = redact(text)
    cut = text if len(text) <= limit else text[:limit]
    cut = repr(cut) if quote else cut
    return cut if len(text) <= limit else f"{cut}... ({len(text)} characters)"


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one event: a dotted name and its fields, formatted lazily by the handler."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def _quote(value: object) -> str:
    text = "" if value is None else str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`preloader: fetch.done repo=org/m bytes=123`, warnings and errors marked."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        parts = [f"{PREFIX}:"]
        if record.levelno >= logging.ERROR:
            parts.append("error:")
        elif record.levelno >= logging.WARNING:
            parts.append("warning:")
        parts.append(record.getMessage())
        parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        data = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event" if hasattr(record, "fields") else "message": record.getMessage(),
        }
        data.update({key: value for key, value in fields.items() if key not in data})
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, default=str))


def setup(log_format: str = "text", level: str = "info", secrets: Iterable[str | None] = (),
          adopt: Iterable[str] = ()) -> None:
    """Attach the one stderr handler of the `preloader` logger tree, and route the loggers of the libraries
    named in `adopt` (huggingface_hub's) through it once they are imported (see `imported`). The CLI's alone:
    a host process configures its own logging."""
    global _adopted
    for secret in secrets:
        add_secret(secret)
    logger = logging.getLogger(PREFIX)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    _adopted = tuple(adopt)
    for name in _adopted:
        if name in sys.modules:
            _adopt(name)


def imported(name: str) -> None:
    """Say that library `name` has just been imported. Where the CLI's `setup` asked for its logger (its import
    attached a handler of its own), that logger now goes through ours; in a host's process, nothing happens."""
    if name in _adopted:
        _adopt(name)


def _adopt(name: str) -> None:
    """Send another library's log records (huggingface_hub's) through our handler and format."""
    ours = logging.getLogger(PREFIX)
    theirs = logging.getLogger(name)
    theirs.handlers = list(ours.handlers)
    theirs.propagate = False
    if ours.handlers:
        theirs.setLevel(max(ours.level, logging.WARNING))


def flush() -> None:
    """Flush our handlers: exec replaces the process and would drop buffered lines."""
    for handler in logging.getLogger(PREFIX).handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


class Clock:
    """Monotonic seconds since creation, rounded for log lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.start, 3)
