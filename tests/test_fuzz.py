"""Fuzzing the parsers and the API's edge with hypothesis: no generated input may raise anything but
ConfigError (in-process), and a few subprocess examples never end in exit 70 or a traceback.

Short in CI: a fixed seed (derandomize) and few examples. To run it long, pick the `long` profile:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py      # 20,000 random examples per test

(`HYPOTHESIS_PROFILE=ci`, the default, is what CI runs.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preloader import api, logs
from preloader.config import Settings
from preloader.errors import ConfigError
from preloader.options import OPTIONS, OPTIONS_BY_NAME
from preloader.spec import RepoSpec, parse_list, parse_specs
from preloader.tokens import TOKEN_FILE_CAP, TokenFileError, read_token_file
from preloader.units import MAX_SIZE, OutOfRange, parse_duration, parse_size

settings.register_profile("ci", derandomize=True, max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Text near what the parsers look for: separators, units, URL pieces, hex, escapes, and anything at all.
PIECES = st.sampled_from(["/", ":", "@", ",", ".", "..", "-", "--", "hf://", "datasets/", "models/", "spaces/",
                          "https://", "http://h/", "?", "#", "%", "\\", " ", "\n", "\x00", "org", "m", "main",
                          "0123456789abcdef0123456789ABCDEF01234567", "refs/pr/1", ".lock", "@{", "~", "é",
                          "ms", "s", "m", "h", "d", "k", "M", "G", "T", "P", "i", "B", "1", "0", "9" * 30, "1.5",
                          "inf", "nan", "-1", "1e9", "\u0663", "\u00b2"])
NEARLY = st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=12).map("".join)
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), NEARLY, st.binary(max_size=8),
                      st.lists(st.one_of(NEARLY, st.none(), st.integers()), max_size=3))


@given(NEARLY, st.sampled_from(["model", "dataset"]), st.booleans())
def test_specs_parse_or_say_why(text, repo_type, typed):
    specs, problems = parse_list(text, repo_type, "X")
    assert all(isinstance(s, RepoSpec) and s.repo_type in ("model", "dataset") for s in specs)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)
    try:
        parse_specs(text.split(","), repo_type, typed=typed)
    except ConfigError as error:
        assert len(str(error)) < 2000


@given(NEARLY)
def test_sizes_parse_within_range_or_raise_value_error(text):
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert isinstance(size, int) and 0 <= size <= MAX_SIZE


@given(NEARLY, st.floats(0, 1e6), st.floats(1, 1e9))
def test_durations_parse_within_range_or_raise_value_error(text, least, most):
    try:
        seconds = parse_duration(text, least, max(least, most))
    except (ValueError, OutOfRange):
        return
    assert least <= seconds <= max(least, most)


ENV_NAMES = sorted({o.env for o in OPTIONS} | {f for o in OPTIONS for f in o.fallbacks}
                   | {"HUGGING_FACE_HUB_TOKEN", "HTTPS_PROXY", "HOME"})


@given(st.dictionaries(st.sampled_from(ENV_NAMES), NEARLY.filter(lambda t: "\x00" not in t), max_size=8))
def test_settings_from_any_environment_load_or_raise_config_error(environ):
    try:
        Settings.load(environ)
    except ConfigError as error:
        assert "\n" not in str(error).strip() or "RUNPOD" in str(error)  # one line (a value's repr escapes \n)


@given(st.dictionaries(st.sampled_from(sorted(OPTIONS_BY_NAME) + ["nope"]), ANY_VALUE, max_size=5))
def test_the_api_edge_raises_only_config_error(keywords):
    try:
        api.settings_for(**keywords)
    except ConfigError:
        pass


@given(st.one_of(ANY_VALUE, st.builds(RepoSpec, st.sampled_from(["model", "dataset", "space"]), NEARLY, NEARLY)))
def test_cache_keys_raise_only_config_error_or_key_error(key):
    cache = api.Cache("/nonexistent/preloader-fuzz/hub")
    try:
        cache[key]
    except (ConfigError, KeyError):
        pass
    assert isinstance(key in cache, bool)


@settings(max_examples=40)
@given(st.one_of(st.binary(max_size=64), st.binary(min_size=TOKEN_FILE_CAP - 8, max_size=TOKEN_FILE_CAP + 8)))
def test_token_files_are_read_or_refused_without_their_content(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("token") / "file"
    path.write_bytes(data)
    try:
        token = read_token_file(path)
    except TokenFileError as error:
        assert data.strip() == b"" or len(data.strip()) < 4 or data.strip()[:4].decode("latin-1") not in str(error)
        return
    assert token == data.decode().strip() and len(data) <= TOKEN_FILE_CAP
    try:
        Settings.load({"PRELOADER_TOKEN_FILE": str(path)})
    except ConfigError as error:
        assert token not in str(error) or len(token) < 6


@given(st.text(min_size=6, max_size=20))
def test_the_scrubber_catches_a_registered_secret_in_its_renderings(secret):
    import json
    import urllib.parse

    logs.add_secret(secret)
    try:
        for form in (secret, repr(secret), repr(secret.encode("utf-8", "surrogatepass")), json.dumps(secret),
                     urllib.parse.quote(secret.encode("utf-8", "surrogatepass"), safe="")):
            assert secret not in logs.redact(f"<{form}>")
            assert form not in logs.redact(f"<{form}>") or form == logs.REDACTED
    finally:
        logs._secrets.discard(secret)


# A few real processes: whatever the env holds, the CLI ends with a documented code, never 70 or a traceback.
@settings(max_examples=6)
@given(st.dictionaries(st.sampled_from(ENV_NAMES), NEARLY.filter(lambda t: "\x00" not in t), min_size=1,
                       max_size=4))
def test_the_cli_never_ends_in_a_traceback(tmp_path_factory, environ):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PRELOADER_", "RUNPOD_", "HF_"))}
    env = base | environ | {"PRELOADER_CACHE_DIR": str(tmp_path_factory.mktemp("fuzz") / "hub"),
                           "HF_HUB_OFFLINE": "1", "PRELOADER_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "preloader", "plan"], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode in (0, 78), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["1" + "0" * 5000, "9" * 400 + "P", "1.5" * 100, "nan", "-0"])
def test_the_cli_never_ends_in_a_traceback_for_huge_numbers(tmp_path, value):
    env = {k: v for k, v in os.environ.items()} | {
        "PRELOADER_CACHE_DIR": str(tmp_path / "hub"), "PRELOADER_MAX_CACHE_SIZE": value,
        "PRELOADER_TIMEOUT": value, "PRELOADER_WORKERS": value}
    proc = subprocess.run([sys.executable, "-m", "preloader", "plan"], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 78) and len(proc.stderr) < 1500
