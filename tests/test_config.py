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
