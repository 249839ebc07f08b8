import os
from pathlib import Path

import pytest

from preloader.config import Settings
from preloader.errors import ConfigError
from preloader.spec import RepoSpec
from preloader.units import parse_duration


def load(env, flags=None, home="/home/u"):
    return Settings.load({"HOME": home, **env}, flags)


def test_defaults():
    s = load({})
    assert s.repos == ()
    assert s.cache_dir == Path("/home/u/.cache/huggingface/hub")
    assert s.cache_dir_source == "default"
    assert s.state_dir == Path("/home/u/.cache/huggingface/preloader")
    assert s.link_root == Path("/home/u/.cache/huggingface/preloader/links")
    assert s.endpoint == "https://huggingface.co"
    assert (s.timeout, s.lock_timeout, s.retries, s.offline, s.service_offline) == (None, 3600.0, 5, False, True)
    assert s.token is None and s.token_source is None


@pytest.mark.parametrize(
    "env, expected, source",
    [
        ({"PRELOADER_CACHE_DIR": "/cache"}, "/cache", "PRELOADER_CACHE_DIR"),
        ({"HF_HUB_CACHE": "/hc", "HF_HOME": "/hh"}, "/hc", "HF_HUB_CACHE"),
        ({"HF_HOME": "/hh"}, "/hh/hub", "HF_HOME/hub"),
        ({"PRELOADER_CACHE_DIR": "/p", "HF_HUB_CACHE": "/hc"}, "/p", "PRELOADER_CACHE_DIR"),
        ({"PRELOADER_CACHE_DIR": "", "HF_HOME": "/hh"}, "/hh/hub", "HF_HOME/hub"),
    ],
)
def test_cache_dir_precedence(env, expected, source):
    s = load(env)
    assert (s.cache_dir, s.cache_dir_source) == (Path(expected), source)


def test_flag_wins_over_env():
    s = load({"PRELOADER_CACHE_DIR": "/env"}, {"cache_dir": "/flag", "models": ("org/a", "org/b:dev")})
    assert s.cache_dir == Path("/flag") and s.cache_dir_source == "--cache-dir"
    assert s.models == (RepoSpec("model", "org/a"), RepoSpec("model", "org/b", "dev"))


def test_state_dir_beside_hub_or_inside_locks():
    assert load({"PRELOADER_CACHE_DIR": "/v/hub"}).state_dir == Path("/v/preloader")
    assert load({"PRELOADER_CACHE_DIR": "/cache"}).state_dir == Path("/cache/.locks/preloader")


def test_runpod_env_vars():
    s = load({
        "RUNPOD_HUGGINGFACE_MODEL": "org/model-a, org/model-b:dev, org/model-a",
        "RUNPOD_HUGGINGFACE_DATASET": "org/data:v1.0",
        "RUNPOD_HUGGINGFACE_USER": "alice",
        "RUNPOD_HUGGINGFACE_TOKEN": "hf_secret_value",
    })
    assert s.models == (RepoSpec("model", "org/model-a"), RepoSpec("model", "org/model-b", "dev"))
    assert s.datasets == (RepoSpec("dataset", "org/data", "v1.0"),)
    assert (s.user, s.token, s.token_source) == ("alice", "hf_secret_value", "RUNPOD_HUGGINGFACE_TOKEN")
    assert "hf_secret_value" not in repr(s)


def test_hf_token_is_the_fallback():
    s = load({"HF_TOKEN": "hf_fallback"})
    assert (s.token, s.token_source) == ("hf_fallback", "HF_TOKEN")
    s = load({"HF_TOKEN": "hf_fallback", "RUNPOD_HUGGINGFACE_TOKEN": "hf_rp", "RUNPOD_HUGGINGFACE_USER": "u"})
    assert s.token == "hf_rp"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RUNPOD_HUGGINGFACE_USER": "alice"},
         "invalid settings: RUNPOD_HUGGINGFACE_USER is set but RUNPOD_HUGGINGFACE_TOKEN is missing; set both or neither"),
        ({"RUNPOD_HUGGINGFACE_USER": "alice", "HF_TOKEN": "hf_x"},
         "invalid settings: RUNPOD_HUGGINGFACE_USER is set but RUNPOD_HUGGINGFACE_TOKEN is missing; set both or neither"),
        ({"RUNPOD_HUGGINGFACE_TOKEN": "hf_x"},
         "invalid settings: RUNPOD_HUGGINGFACE_TOKEN is set but RUNPOD_HUGGINGFACE_USER is missing; set both or neither"),
        ({"PRELOADER_TIMEOUT": "soon"},
         "invalid settings: PRELOADER_TIMEOUT='soon': expected a duration from 0 to 365d (seconds, or like 90s, 10m, 1h)"),
        ({"PRELOADER_RETRIES": "0"},
         "invalid settings: PRELOADER_RETRIES='0': expected a whole number from 1 to 100"),
        ({"PRELOADER_CONNECTIONS": "65"},
         "invalid settings: PRELOADER_CONNECTIONS='65': expected a whole number from 1 to 64"),
        ({"PRELOADER_OFFLINE": "maybe"},
         "invalid settings: PRELOADER_OFFLINE='maybe': expected 1/0, true/false, yes/no or on/off"),
        ({"PRELOADER_LOG_FORMAT": "xml"},
         "invalid settings: PRELOADER_LOG_FORMAT='xml': expected one of text, json"),
        ({"HF_ENDPOINT": "ftp://x"},
         "invalid settings: HF_ENDPOINT='ftp://x': expected an http:// or https:// URL"),
        ({"RUNPOD_HUGGINGFACE_MODEL": "org/a,bad", "RUNPOD_HUGGINGFACE_DATASET": " ,org/d:..", "PRELOADER_RETRIES": "x"},
         "invalid settings: RUNPOD_HUGGINGFACE_MODEL item 2 'bad': no \"/\" between user and name; "
         "RUNPOD_HUGGINGFACE_DATASET item 1 '': empty item; "
         "RUNPOD_HUGGINGFACE_DATASET item 2 'org/d:..': revision contains '..', '//' or '@{'; "
         "PRELOADER_RETRIES='x': expected a whole number from 1 to 100"),
    ],
)
def test_invalid_settings_give_one_error(env, message):
    with pytest.raises(ConfigError) as info:
        load(env)
    assert str(info.value) == message
    assert info.value.exit_code == 78


def test_user_flag_pairs_with_token_flag():
    s = load({}, {"user": "alice", "token": "hf_flag"})
    assert (s.user, s.token, s.token_source) == ("alice", "hf_flag", "--token")


@pytest.mark.parametrize("text, seconds", [("30", 30), ("90s", 90), ("500ms", 0.5), ("10m", 600), ("1h", 3600),
                                           ("1.5h", 5400), ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_offline_from_hf_hub_offline_and_override():
    assert load({"HF_HUB_OFFLINE": "1"}).offline_source == "HF_HUB_OFFLINE"
    assert load({"HF_HUB_OFFLINE": "1", "PRELOADER_OFFLINE": "0"}).offline is False


def test_token_from_a_secret_file(tmp_path):
    secret = tmp_path / "hf_token"
    secret.write_text("hf_fromfile123\n")
    s = load({"PRELOADER_TOKEN_FILE": str(secret), "RUNPOD_HUGGINGFACE_USER": "alice", "HF_TOKEN": "hf_other"})
    assert (s.token, s.token_source, s.user) == ("hf_fromfile123", "PRELOADER_TOKEN_FILE", "alice")
    s = load({"PRELOADER_TOKEN_FILE": str(secret), "RUNPOD_HUGGINGFACE_TOKEN": "hf_env", "RUNPOD_HUGGINGFACE_USER": "a"})
    assert s.token == "hf_env"  # the explicit RunPod token wins
    with pytest.raises(ConfigError) as info:
        load({"PRELOADER_TOKEN_FILE": str(tmp_path / "missing")})
    assert str(info.value) == (f"invalid settings: PRELOADER_TOKEN_FILE={str(tmp_path / 'missing')!r}: "
                               "cannot read the token file (No such file or directory)")


# -- bounds: every duration, size and count has a range, said in its help and enforced where it is parsed --

from preloader.options import OPTIONS  # noqa: E402
from preloader.units import MAX_SIZE, OutOfRange, parse_size  # noqa: E402

BOUNDED = [o for o in OPTIONS if o.kind in ("duration", "size", "count")]


@pytest.mark.parametrize("option", BOUNDED, ids=lambda o: o.name)
def test_every_bounded_setting_documents_its_range(option):
    assert option.range_text and option.range_text in option.help


@pytest.mark.parametrize("env, value, expected", [
    ("PRELOADER_TIMEOUT", "366d", "a duration from 0 to 365d"),
    ("PRELOADER_TIMEOUT", "9" * 30, "a duration from 0 to 365d"),  # time.monotonic() + d, setitimer, datetime
    ("PRELOADER_TIMEOUT", "1" + "0" * 500, "a duration from 0 to 365d"),  # no float('inf') sneaks through
    ("PRELOADER_TIMEOUT", "inf", "a duration from 0 to 365d"),
    ("PRELOADER_TIMEOUT", "nan", "a duration from 0 to 365d"),
    ("PRELOADER_TIMEOUT", "-5", "a duration from 0 to 365d"),
    ("PRELOADER_READ_TIMEOUT", "0", "a duration from 100ms to 1d"),
    ("PRELOADER_READ_TIMEOUT", "50ms", "a duration from 100ms to 1d"),
    ("PRELOADER_LEASE_STALE", "0", "a duration from 1s to 1d"),
    ("PRELOADER_LEASE_STALE", "2d", "a duration from 1s to 1d"),
    ("PRELOADER_LOCK_TIMEOUT", "400d", "a duration from 0 to 365d"),
    ("PRELOADER_MAX_CACHE_SIZE", "9223372036854775808", "a size from 0 to 2^63-1 bytes"),
    ("PRELOADER_MAX_CACHE_SIZE", "99999999P", "a size from 0 to 2^63-1 bytes"),
    ("PRELOADER_MIN_FREE", "1" + "0" * 400, "a size from 0 to 2^63-1 bytes"),  # was OverflowError: exit 70
    ("PRELOADER_PARALLEL_THRESHOLD", "8193PiB", "a size from 0 to 2^63-1 bytes"),
    ("PRELOADER_WORKERS", "257", "a whole number from 1 to 256"),
    ("PRELOADER_WORKERS", "0", "a whole number from 1 to 256"),
    ("PRELOADER_RETRIES", "101", "a whole number from 1 to 100"),
    ("PRELOADER_RETRIES", "9" * 5000, "a whole number from 1 to 100"),  # int() of it is a ValueError of its own
    ("PRELOADER_RETRIES", "\u0663", "a whole number from 1 to 100"),  # an Arabic-Indic 3: not a digit here
    ("PRELOADER_CONNECTIONS", "65", "a whole number from 1 to 64"),
])
def test_out_of_range_is_a_config_error_naming_the_range(env, value, expected):
    with pytest.raises(ConfigError) as info:
        load({env: value})
    assert info.value.exit_code == 78
    message = str(info.value)
    assert message.startswith(f"invalid settings: {env}=") and f"expected {expected}" in message
    assert len(message) < 300  # a huge value is cut, not echoed


@pytest.mark.parametrize("flags, attribute, value", [
    ({"timeout": "365d"}, "timeout", 365 * 86400.0),
    ({"timeout": "0"}, "timeout", None),
    ({"read_timeout": "100ms"}, "read_timeout", 0.1),
    ({"lease_stale": "1s"}, "lease_stale", 1.0),
    ({"lock_timeout": "0"}, "lock_timeout", 0.0),
    ({"max_cache_size": str(MAX_SIZE)}, "max_cache_size", MAX_SIZE),
    ({"workers": "256"}, "workers", 256),
    ({"retries": "100"}, "retries", 100),
])
def test_the_ends_of_each_range_are_valid(flags, attribute, value):
    assert getattr(load({}, flags), attribute) == value


def test_a_flag_out_of_range_is_named_by_the_flag():
    with pytest.raises(ConfigError) as info:
        load({}, {"read_timeout": "0"})
    assert str(info.value) == ("invalid settings: --read-timeout='0': expected a duration from 100ms to 1d "
                               "(seconds, or like 90s, 10m, 1h)")


def test_sizes_are_exact_and_bounded():
    assert parse_size("1.5TiB") == 3 * 2**39
    assert parse_size(f"{2**63 - 1}") == 2**63 - 1  # exact, where float() would round up past the bound
    with pytest.raises(OutOfRange):
        parse_size(f"{2**63}")


def test_prune_flags_apply_the_same_bounds(tmp_path):
    from click.testing import CliRunner

    from preloader.cli import cli

    for flag, value in (("--older-than", "3651d"), ("--grace", "1" + "0" * 300), ("--max-size", f"{2**63}")):
        result = CliRunner().invoke(cli, ["prune", "--cache-dir", str(tmp_path / "hub"), flag, value])
        assert result.exit_code == 2, result.output
        assert "out of range" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "hub").exists()


# -- tokens: stripped; a control or non-ASCII character is 78 naming the variable, never the value --

@pytest.mark.parametrize("var", ["RUNPOD_HUGGINGFACE_TOKEN", "HF_TOKEN"])
def test_a_token_is_stripped_of_surrounding_whitespace(var):
    s = load({var: "  hf_tok3n-value\n", "RUNPOD_HUGGINGFACE_USER": "u"} if var.startswith("RUNPOD") else
             {var: "\thf_tok3n-value\r\n"})
    assert s.token == "hf_tok3n-value"


def test_a_blank_runpod_token_counts_as_unset():
    assert load({"RUNPOD_HUGGINGFACE_TOKEN": " \n", "HF_TOKEN": "hf_fallback\n"}).token == "hf_fallback"
    with pytest.raises(ConfigError) as info:
        load({"RUNPOD_HUGGINGFACE_TOKEN": "\n", "RUNPOD_HUGGINGFACE_USER": "alice"})
    assert str(info.value) == ("invalid settings: RUNPOD_HUGGINGFACE_USER is set but RUNPOD_HUGGINGFACE_TOKEN is "
                               "missing; set both or neither")


@pytest.mark.parametrize("token", ["hf_tok\nen-value", "hf_tok\x00en", "hf_tok\x7fen", "hf_t\u00f6ken-value",
                                   "hf_tok en-value", "hf_token\u2028x"])
def test_a_token_with_a_control_or_non_ascii_character_is_78_unshown(token):
    with pytest.raises(ConfigError) as info:
        load({"RUNPOD_HUGGINGFACE_TOKEN": token, "RUNPOD_HUGGINGFACE_USER": "u"})
    assert str(info.value) == ("invalid settings: RUNPOD_HUGGINGFACE_TOKEN holds a space, a control character or "
                               "a non-ASCII character: a token is printable ASCII (the value is not shown)")
    with pytest.raises(ConfigError) as info:
        load({}, {"token": token})
    assert str(info.value).startswith("invalid settings: --token holds a space")


def _token_file_cases(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"hf_" + b"a" * 5000)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00\x01token")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return [
        (tmp_path, "the token file is a directory, not a regular file"),
        ("/dev/zero", "the token file is a character device, not a regular file"),
        (fifo, "the token file is a FIFO, not a regular file"),  # opened O_NONBLOCK: no writer, no hang
        (big, "the token file is larger than 4 KiB: not a token file"),
        (binary, "the token file is not text"),
        (empty, "the token file is empty"),
    ]


def test_a_token_file_that_is_not_a_small_regular_text_file_is_78(tmp_path):
    for path, problem in _token_file_cases(tmp_path):
        with pytest.raises(ConfigError) as info:
            load({"PRELOADER_TOKEN_FILE": str(path), "RUNPOD_HUGGINGFACE_USER": "alice"})
        assert str(info.value) == f"invalid settings: PRELOADER_TOKEN_FILE={str(path)!r}: {problem}"


def test_a_token_file_with_a_newline_inside_is_78_unshown(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("hf_first-line\nhf_second-line\n")
    with pytest.raises(ConfigError) as info:
        load({"PRELOADER_TOKEN_FILE": str(secret)})
    assert "PRELOADER_TOKEN_FILE holds a space, a control character" in str(info.value)
    assert "first-line" not in str(info.value)


# -- the Python API's keywords go through the same parsing, named by the keyword --

@pytest.mark.parametrize("keywords, message", [
    ({"timeout": -1}, "timeout=-1: expected a duration from 0 to 365d (seconds, or like 90s, 10m, 1h)"),
    ({"timeout": float("nan")}, "timeout=nan: expected a duration from 0 to 365d (seconds, or like 90s, 10m, 1h)"),
    ({"timeout": "10x"}, "timeout='10x': expected a duration from 0 to 365d (seconds, or like 90s, 10m, 1h)"),
    ({"retries": True}, "retries=True: expected a whole number from 1 to 100"),
    ({"workers": 2.5}, "workers=2.5: expected a whole number from 1 to 256"),
    ({"endpoint": "ftp://x"}, "endpoint='ftp://x': expected an http:// or https:// URL"),
    ({"token": 12345678}, "token=<not shown>: expected a string"),
    ({"user": "alice"}, "user is set but token is missing; set both or neither"),
    ({"nope": 1}, "unknown keyword nope: the keywords are the names of the settings, e.g. cache_dir, token, timeout"),
])
def test_keywords_are_parsed_like_flags_and_named_as_keywords(keywords, message):
    with pytest.raises(ConfigError) as info:
        Settings.load({}, keywords=keywords)
    assert str(info.value) == f"invalid settings: {message}"


def test_keywords_take_the_cli_forms_and_python_values():
    s = Settings.load({}, keywords={"timeout": "10s", "lock_timeout": 1e-9, "max_cache_size": "2G", "offline": True,
                                    "models": ["org/a", RepoSpec("model", "org/b", "A" * 40)], "include": ["*.json"]})
    assert (s.timeout, s.max_cache_size, s.offline, s.offline_source, s.include) == (
        10.0, 2 * 1024**3, True, "offline", ("*.json",))
    assert s.lock_timeout > 0  # 1e-9 s stays above zero: it is not "no limit"
    assert s.models == (RepoSpec("model", "org/a"), RepoSpec("model", "org/b", "a" * 40))
