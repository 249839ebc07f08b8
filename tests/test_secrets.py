"""A token never shows: not when it is pasted into the wrong setting, not in any error or log line."""

from __future__ import annotations

import re

import pytest
from conftest import run_preloader

from preloader import logs

TOKEN = "hf_" + "Ab3" * 12  # token-shaped: hf_ and 36 letters and digits


@pytest.mark.parametrize("extra_env, args, named", [
    ({"RUNPOD_HUGGINGFACE_USER": "alice", "RUNPOD_HUGGINGFACE_TOKEN": TOKEN, "RUNPOD_HUGGINGFACE_MODEL": TOKEN},
     [], "RUNPOD_HUGGINGFACE_MODEL"),
    ({"RUNPOD_HUGGINGFACE_MODEL": f"org/model,{TOKEN}"}, [], "RUNPOD_HUGGINGFACE_MODEL"),
    ({"PRELOADER_TIMEOUT": TOKEN}, [], "PRELOADER_TIMEOUT"),
    ({"PRELOADER_STATE_DIR": f"/volume/{TOKEN}"}, [], "PRELOADER_STATE_DIR"),
    ({"RUNPOD_HUGGINGFACE_MODEL": "org/model"}, ["--cache-dir", f"/volume/{TOKEN}"], "--cache-dir"),
    # not token-shaped, but the value of HF_TOKEN: still a secret
    ({"HF_TOKEN": "short-secret", "PRELOADER_READ_TIMEOUT": "short-secret"}, [], "PRELOADER_READ_TIMEOUT"),
])
@pytest.mark.parametrize("command", ["plan", "run", "status"])
def test_a_token_in_the_wrong_setting_is_refused_unseen(tmp_path, extra_env, args, named, command):
    import os

    cache = tmp_path / "volume" / "hub"
    env = {k: v for k, v in os.environ.items()} | {"PRELOADER_CACHE_DIR": str(cache)} | extra_env
    proc = run_preloader([command, *args], env)
    assert proc.returncode == 78, proc.stderr
    assert f"invalid settings: {named} holds a token" in proc.stderr
    secret = extra_env.get("HF_TOKEN", TOKEN)
    assert secret not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "volume").exists()  # nothing written


def test_redact_scrubs_registered_secrets_and_token_shapes(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", set())
    logs.add_secret("swordfish-42")
    logs.add_secret("swordfish-42-and-more")
    logs.add_secret("abc")  # too short to scrub without mangling every line
    text = f"a swordfish-42-and-more b swordfish-42 c {TOKEN} d hf_short abc"
    assert logs.redact(text) == "a *** b *** c *** d hf_short abc"


def test_log_lines_and_json_lines_are_scrubbed(monkeypatch):
    import json
    import logging

    monkeypatch.setattr(logs, "_secrets", {"swordfish-42"})
    record = logging.LogRecord("preloader.x", logging.INFO, __file__, 1, "fetch.done", (), None)
    record.fields = {"url": f"http://h/?t=swordfish-42&k={TOKEN}"}
    assert "swordfish" not in logs.TextFormatter().format(record)
    assert TOKEN not in logs.TextFormatter().format(record)
    assert json.loads(logs.JsonFormatter().format(record))["url"] == "http://h/?t=***&k=***"


def test_the_token_file_content_is_a_secret_before_validation(tmp_path):
    import os

    secret = tmp_path / "token"
    secret.write_text("mounted-secret-value\n")
    env = {k: v for k, v in os.environ.items()} | {
        "PRELOADER_TOKEN_FILE": str(secret), "PRELOADER_CACHE_DIR": str(tmp_path / "c"),
        "RUNPOD_HUGGINGFACE_MODEL": "mounted-secret-value",
    }
    proc = run_preloader(["plan"], env)
    assert proc.returncode == 78
    assert "mounted-secret-value" not in proc.stdout + proc.stderr


# -- the fault suite's part: hostile tokens and token files (a run each, counted in docs/RELIABILITY.md) --

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import urllib.parse  # noqa: E402

import faultsuite  # noqa: E402
from faultsuite import account  # noqa: E402, F401 (the suite's autouse fixture)

from preloader.tokens import TokenFileError, read_token_file, secrets_in  # noqa: E402

FTOKEN = faultsuite.TOKEN  # what the suite searches every output and every file for


def cli_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()} | {"PRELOADER_CACHE_DIR": str(tmp_path / "volume" / "hub"),
                                                   "RUNPOD_HUGGINGFACE_MODEL": "org/model"}
    return env | extra


def hostile_token_files(folder):
    """(path, the words of the error) for every kind of file that is not a token file; those with content
    hold the token, which must never be shown, nor any other part of the content. `folder` is outside the
    test's tmp_path, which the suite searches for the token after the test."""
    big = folder / "huge"
    big.write_text((FTOKEN + "-CONTENT-MARK\n") * 400)
    binary = folder / "binary"
    binary.write_bytes(b"\xff\xfe" + FTOKEN.encode() + b"\x00CONTENT-MARK")
    inner = folder / "two-lines"
    inner.write_text(f"{FTOKEN}\nCONTENT-MARK\n")
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    return [(folder, "is a directory, not a regular file"), ("/dev/zero", "is a character device"),
            (fifo, "is a FIFO, not a regular file"), (big, "is larger than 4 KiB"), (binary, "is not text"),
            (inner, "PRELOADER_TOKEN_FILE holds a space, a control character or a non-ASCII character")]


@pytest.mark.faults
def test_hostile_token_files_are_78_one_line_and_never_echoed(tmp_path, tmp_path_factory):
    for path, words in hostile_token_files(tmp_path_factory.mktemp("secrets")):
        faultsuite.inject()
        env = cli_env(tmp_path, PRELOADER_TOKEN_FILE=str(path), RUNPOD_HUGGINGFACE_USER="alice")
        proc = faultsuite.run(["run", "--", "true"], env, timeout=60, expect=78)
        assert proc.returncode == 78, (path, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "CONTENT-MARK" not in proc.stdout + proc.stderr
        assert not (tmp_path / "volume").exists()  # refused before any write


@pytest.mark.faults
@pytest.mark.parametrize("token, code", [(FTOKEN + "\n", 0), ("\t" + FTOKEN + " \r\n", 0),
                                         (FTOKEN[:10] + "\n" + FTOKEN[10:], 78), (FTOKEN + "\u00e9", 78),
                                         (FTOKEN[:10] + "\x1b[2J" + FTOKEN[10:], 78)])
def test_a_token_is_stripped_and_a_damaged_one_is_78_naming_the_variable(tmp_path, token, code):
    faultsuite.inject()
    env = cli_env(tmp_path, RUNPOD_HUGGINGFACE_TOKEN=token, RUNPOD_HUGGINGFACE_USER="alice")
    proc = faultsuite.run(["plan"], env, timeout=60, expect=code)
    assert proc.returncode == code, proc.stderr
    if code == 0:
        assert json.loads(proc.stdout)["token"] == "set"
    else:
        assert proc.stderr.splitlines() == [
            "preloader: error: invalid settings: RUNPOD_HUGGINGFACE_TOKEN holds a space, a control character or "
            "a non-ASCII character: a token is printable ASCII (the value is not shown)"]
        assert FTOKEN[:10] not in proc.stdout + proc.stderr and FTOKEN[10:] not in proc.stdout + proc.stderr


def test_a_token_file_this_user_cannot_read_is_named_without_its_content(tmp_path_factory):
    """As an unprivileged user (root reads every file): fork, drop to nobody, read a root-only secret.
    (`runuser -u nobody` cannot start the venv's python here: it lives under /root, mode 0700.)"""
    secret = tmp_path_factory.mktemp("secrets") / "root-only"
    secret.write_text(FTOKEN)
    secret.chmod(0o600)
    if os.getuid() != 0:
        pytest.skip("needs root to become nobody")  # the project's tests run as root
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                read_token_file(secret)
                answer = "read"
            except TokenFileError as error:
                answer = str(error)
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer == "cannot read the token file (Permission denied)"


# -- the scrubber: every rendering of a registered secret that can reach a line --

SECRET = "hf_Swordfish/42+key=v"


def renderings(secret):
    quoted = urllib.parse.quote(secret, safe="")
    return {
        "plain": secret, "repr": repr(secret), "bytes repr": repr(secret.encode()), "ascii": ascii(secret),
        "percent": quoted, "percent, path-safe": urllib.parse.quote(secret),
        "percent, lower-case hex": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quoted),
        "quote_plus": urllib.parse.quote_plus(secret), "json": json.dumps(secret),
        "json, escaped slashes": json.dumps(secret).replace("/", "\\/"),
        "json \\u escapes": "".join(f"\\u{ord(c):04x}" for c in secret),
        "json of a repr": json.dumps(repr(secret)), "json of a bytes repr": json.dumps(repr(secret.encode())),
        "repr of a repr": repr(repr(secret)),
    }


@pytest.mark.parametrize("form", sorted(renderings(SECRET)))
def test_every_rendering_of_a_secret_is_scrubbed(monkeypatch, form):
    monkeypatch.setattr(logs, "_secrets", set())
    logs.add_secret(SECRET)
    line = f"preloader: error: GET https://h/x?t={renderings(SECRET)[form]} failed"
    scrubbed = logs.redact(line)
    assert "Swordfish" not in scrubbed and "***" in scrubbed


def test_a_secret_with_control_characters_is_scrubbed_in_its_escaped_forms(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", set())
    secret = "line-one\nline-two\u00e9"
    logs.add_secret(secret)
    for text in renderings(secret).values():
        assert "line-one" not in logs.redact(text), text


def test_proxy_credentials_and_their_basic_auth_are_secrets(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", set())
    environ = {"HTTPS_PROXY": "http://bob:p%40ss-word-9@proxy:3128"}
    for secret in secrets_in(environ):
        logs.add_secret(secret)
    basic = base64.b64encode(b"bob:p@ss-word-9").decode()
    assert logs.redact(f"Proxy-Authorization: Basic {basic}") == "Proxy-Authorization: Basic ***"
    assert logs.redact("p@ss-word-9 and p%40ss-word-9") == "*** and ***"


def test_long_values_in_messages_are_cut_after_scrubbing(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", {"S" * 20 + "secret-tail"})
    text = "x" * 70 + "S" * 20 + "secret-tail"
    assert logs.shown(text) == repr("x" * 70 + "***") and "secret" not in logs.shown("y" * 75 + text)


def test_a_token_given_to_the_api_is_registered_before_anything_fails(monkeypatch):
    import preloader
    from preloader.errors import ConfigError

    monkeypatch.setattr(logs, "_secrets", set())
    with pytest.raises(ConfigError) as info:
        preloader.preload(models="not-a-spec", token="api-secret-value-1", cache_dir="/nonexistent/hub")
    assert "api-secret-value-1" not in str(info.value)
    assert logs.redact("x api-secret-value-1 y") == "x *** y"
