"""The Python API validates at its edge: wrong types and values are ConfigError with the CLI's messages,
named by the keyword, before any network call or write; and the library prints nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import preloader
from preloader.errors import ConfigError, TransientError
from preloader.spec import RepoSpec

DURATION = "expected a duration from 0 to 365d (seconds, or like 90s, 10m, 1h)"
MODELS = "expected a string of comma-separated user/name[:revision] or a list of them"


@pytest.fixture
def listener():
    """A hub address that counts connections: any attempt waits in the backlog, accepted or not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.setblocking(False)

        def connections() -> int:
            count = 0
            while True:
                try:
                    server.accept()[0].close()
                    count += 1
                except BlockingIOError:
                    return count

        yield f"http://127.0.0.1:{server.getsockname()[1]}", connections


BAD = [
    (dict(models=123), f"models=123: {MODELS}"),
    (dict(models=[None]), "models item 1 None: expected a string like user/name[:revision]"),
    (dict(models=["org/a", b"org/b"]), "models item 2 b'org/b': expected a string like user/name[:revision]"),
    (dict(models=b"org/m"), f"models=b'org/m': {MODELS}"),
    (dict(models="org/m", datasets=[3.5]), "datasets item 1 3.5: expected a string like user/name[:revision]"),
    (dict(models=[RepoSpec("model", "../etc", "main")]), "models item 1 'model:../etc@main': user contains '..' or '--'"),
    (dict(models=[RepoSpec("dataset", "org/d")]), "models item 1 'dataset:org/d@main': names a dataset, not a model"),
    (dict(models="org/m", timeout=-1), f"timeout=-1: {DURATION}"),
    (dict(models="org/m", timeout=float("inf")), f"timeout=inf: {DURATION}"),
    (dict(models="org/m", timeout="soon"), f"timeout='soon': {DURATION}"),
    (dict(models="org/m", timeout=[1]), f"timeout=[1]: {DURATION}"),
    (dict(models="org/m", lock_timeout=10**20), f"lock_timeout=100000000000000000000: {DURATION}"),
    (dict(models="org/m", retries=0), "retries=0: expected a whole number from 1 to 100"),
    (dict(models="org/m", workers="8x"), "workers='8x': expected a whole number from 1 to 256"),
    (dict(models="org/m", endpoint="huggingface.co"), "endpoint='huggingface.co': expected an http:// or https:// URL"),
    (dict(models="org/m", endpoint="http://[::1"), "endpoint='http://[::1': expected an http:// or https:// URL"),
    (dict(models="org/m", endpoint="https://h:0"), "endpoint='https://h:0': expected an http:// or https:// URL"),
    (dict(models="org/m", offline="maybe"), "offline='maybe': expected 1/0, true/false, yes/no or on/off"),
    (dict(models="org/m", include=5), "include=5: expected a string of comma-separated items or a list of strings"),
    (dict(models="org/m", state_dir=b"/x"), "state_dir=b'/x': expected a path"),
    (dict(models="org/m", token=b"hf_secretbytes"), "token=<not shown>: expected a string"),
    (dict(models="org/m", colour="blue"),
     "unknown keyword colour: the keywords are the names of the settings, e.g. cache_dir, token, timeout"),
]


@pytest.mark.parametrize("keywords, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_input_is_a_config_error_before_any_network_call_or_write(tmp_path, listener, keywords, message):
    url, connections = listener
    cache = tmp_path / "volume" / "hub"
    keywords = {"cache_dir": cache, "endpoint": url} | keywords
    with pytest.raises(ConfigError) as info:
        preloader.preload(**keywords)
    assert str(info.value) == f"invalid settings: {message}"
    assert info.value.exit_code == 78
    assert not any(name in str(info.value) for name in ("PRELOADER_", "RUNPOD_", "HF_"))  # not read by the API
    assert connections() == 0
    assert not (tmp_path / "volume").exists()


def test_every_entry_point_validates(tmp_path, listener):
    url, connections = listener
    cache = tmp_path / "hub"
    cases = [
        (lambda: preloader.wait(models="org/m", cache_dir=cache, timeout=-1), f"timeout=-1: {DURATION}"),
        (lambda: preloader.api.warm("org/m", mode="tpu", cache_dir=cache),
         "mode='tpu': expected none, page-cache, gpu or gpu:N (N a CUDA device index)"),
        (lambda: preloader.api.warm("org/m", dtype="int3", cache_dir=cache),
         "dtype='int3': expected one of none, float16, bfloat16, float32"),
        (lambda: preloader.Cache(None), "cache_dir=None: expected a path"),
        (lambda: preloader.Cache(""), "cache_dir='': expected a path"),
        (lambda: preloader.Cache(123), "cache_dir=123: expected a path"),
        (lambda: preloader.Cache(cache, capacity_bytes=-1),
         "capacity_bytes=-1: expected a size from 0 to 2^63-1 bytes, like 500M, 64MiB or 2G"),
        (lambda: preloader.Cache(cache, capacity_bytes=2**63),
         f"capacity_bytes={2**63}: expected a size from 0 to 2^63-1 bytes, like 500M, 64MiB or 2G"),
        (lambda: preloader.Cache(cache, endpoint=url, nope=1),
         "unknown keyword nope: the keywords are the names of the settings, e.g. cache_dir, token, timeout"),
        (lambda: preloader.Cache(cache, endpoint=url).preload(models=[None]),
         "models item 1 None: expected a string like user/name[:revision]"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == f"invalid settings: {message}"
    with pytest.raises(ConfigError) as info:
        preloader.Cache(cache)[42]
    assert str(info.value) == "invalid repo spec: key 42: expected a string like user/name[:revision] or a RepoSpec"
    assert 42 not in preloader.Cache(cache)
    assert connections() == 0 and not cache.exists()


def test_keywords_take_what_the_cli_takes(tmp_path):
    s = preloader.api.settings_for("org/m", cache_dir=tmp_path / "hub", timeout="10s", read_timeout="500ms",
                                   max_cache_size="2G", lease_stale=5, retries="3", offline="yes")
    assert (s.timeout, s.read_timeout, s.max_cache_size, s.lease_stale, s.retries, s.offline) == (
        10.0, 0.5, 2 * 1024**3, 5.0, 3, True)
    assert preloader.Cache(tmp_path / "hub", capacity_bytes="1G").capacity == 1024**3


def test_wait_takes_a_duration_string_and_keeps_its_deadline(tmp_path):
    with pytest.raises(TransientError):
        preloader.wait(models="org/m", cache_dir=tmp_path / "hub", timeout="1ms")


def test_preload_with_bad_input_prints_nothing(tmp_path, listener):
    """In a fresh interpreter (no logging configured by anyone): nothing on stdout or stderr."""
    url, connections = listener
    script = (
        "import preloader\n"
        "for kw in (dict(models=123), dict(models=['org/m'], timeout=-1), dict(models='org/m', workers=10**6),\n"
        "           dict(models='org/m', endpoint='ftp://x'), dict(models=[None]), dict(models='bad')):\n"
        "    try:\n"
        f"        preloader.preload(cache_dir={str(tmp_path / 'hub')!r}, **({{'endpoint': {url!r}}} | kw))\n"
        "    except preloader.ConfigError as error:\n"
        "        assert error.exit_code == 78\n"
        "    else:\n"
        "        raise SystemExit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert connections() == 0 and not Path(tmp_path / "hub").exists()
