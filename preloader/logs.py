"""Logging set-up: one event per line on stderr, key=value or JSON, secrets scrubbed.

Library modules only call `event(logger, "name", key=value, ...)` or the stdlib
logger methods; handlers are attached here, by the CLI, and nowhere else.
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


def add_secret(secret: str | None) -> None:
    """Scrub `secret` from every record from now on. Short strings are ignored: they would mangle logs."""
    if secret and len(secret) >= 6:
        _secrets.add(secret)


def redact(text: str) -> str:
    """`text` with every known secret, and anything shaped like a token, replaced by ***."""
    for secret in sorted(_secrets, key=len, reverse=True):  # a secret containing another goes first
        text = text.replace(secret, REDACTED)
    return TOKEN_SHAPE.sub(REDACTED, text)


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


def setup(log_format: str = "text", level: str = "info", secrets: Iterable[str | None] = ()) -> None:
    """Attach the one stderr handler of the `preloader` logger tree."""
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


def adopt(name: str) -> None:
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
