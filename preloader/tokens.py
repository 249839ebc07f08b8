"""Tokens: where they come from, what a valid one looks like, and every secret value to scrub before any
setting is validated. Reading a token file is bounded: it must be a small regular file, and nothing of its
content is ever put into a message, whatever the file turns out to be."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .options import TOKEN_VARS

# A Hugging Face token is 37 characters; a JWT or a mirror's token a few hundred. More is not a token file.
TOKEN_FILE_CAP = 4096
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class TokenFileError(ValueError):
    """Why a token file cannot be used; the message never holds any of its content."""


def read_token_file(path: str | os.PathLike) -> str:
    """The token a file holds, stripped of surrounding whitespace; TokenFileError when it cannot be read, is
    not a regular file, is over TOKEN_FILE_CAP bytes or is not text."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (and reading it is refused below).
        fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError) as error:
        raise TokenFileError(f"cannot read the token file ({getattr(error, 'strerror', None) or error})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise TokenFileError(f"the token file is {kind}, not a regular file")
        data = b""
        while len(data) <= TOKEN_FILE_CAP:
            chunk = os.read(fd, TOKEN_FILE_CAP + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as error:
        raise TokenFileError(f"cannot read the token file ({error.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > TOKEN_FILE_CAP:
        raise TokenFileError(f"the token file is larger than {TOKEN_FILE_CAP // 1024} KiB: not a token file")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError("the token file is not text") from None
    if not text:
        raise TokenFileError("the token file is empty")
    return text


def token_problem(token: str) -> str | None:
    """Why a token (already stripped) cannot be sent in an HTTP header, in words that never quote it."""
    if any(not 0x21 <= ord(char) <= 0x7E for char in token):
        return "holds a space, a control character or a non-ASCII character: a token is printable ASCII"
    return None


def secrets_in(environ: Mapping[str, str], flags: Mapping[str, object] | None = None) -> Iterator[str]:
    """Every secret value the env vars, flags (or API keywords) and token file hold, read before anything is
    validated, so that no error about any setting can show one: tokens as given and stripped, the token
    file's content, and proxy passwords with the Basic credentials built from them."""
    flags = flags or {}
    for value in (*(environ.get(name) for name in TOKEN_VARS), flags.get("token")):
        if isinstance(value, str) and value.strip():
            yield value
            yield value.strip()
    path = flags.get("token_file") or environ.get("PRELOADER_TOKEN_FILE")
    if isinstance(path, (str, os.PathLike)) and str(path):
        try:
            yield read_token_file(path)
        except TokenFileError:
            pass  # reported, without its content, when the settings load
    for name in PROXY_VARS:
        yield from _proxy_secrets(environ.get(name) or "")


def _proxy_secrets(url: str) -> Iterator[str]:
    try:
        parts = urlsplit(url.strip())
        user, password = parts.username, parts.password
    except ValueError:
        return
    if password:
        yield password
        yield unquote(password)
        # What hub.connections sends as Proxy-Authorization: never to be shown either.
        yield base64.b64encode(f"{unquote(user or '')}:{unquote(password)}".encode()).decode()
