"""The service's environment, as a pure function of ours, the settings and the results."""

from __future__ import annotations

from pathlib import Path

import pytest

from preloader.config import Settings
from preloader.preloading.handoff import manifest_path, service_env
from preloader.preloading.results import PreloadResult

COMMIT = "a" * 40


def result(repo_type: str, repo_id: str) -> PreloadResult:
    return PreloadResult(repo_type=repo_type, repo_id=repo_id, revision="main", commit=COMMIT,
                         path=Path(f"/v/hub/{repo_type}/{repo_id}"), alias=None, files=1, bytes_fetched=0,
                         bytes_reused=1, seconds=0.0, source="cache")


INHERITED = {"PATH": "/bin", "RUNPOD_HUGGINGFACE_TOKEN": "hf_rp", "HF_TOKEN": "hf_env",
             "HUGGING_FACE_HUB_TOKEN": "hf_old", "HF_HUB_OFFLINE": "0"}


def test_tokens_are_removed_and_the_cache_is_named():
    settings = Settings.load({"PRELOADER_CACHE_DIR": "/v/hub", "HF_ENDPOINT": "http://mirror:8090/"})
    env = service_env(INHERITED, settings, [result("model", "org/a"), result("model", "org/b"),
                                            result("dataset", "org/d")], Path("/m.json"))
    assert env == {"PATH": "/bin", "HF_HUB_CACHE": "/v/hub", "HF_HOME": "/v", "HF_HUB_OFFLINE": "1",
                   "HF_ENDPOINT": "http://mirror:8090", "PRELOADER_MODEL_PATH": "/v/hub/model/org/a",
                   "PRELOADER_DATASET_PATH": "/v/hub/dataset/org/d", "PRELOADER_MANIFEST": "/m.json"}


def test_a_cache_not_named_hub_sets_no_hf_home():
    env = service_env({}, Settings.load({"PRELOADER_CACHE_DIR": "/cache"}), [], None)
    assert env["HF_HUB_CACHE"] == "/cache" and "HF_HOME" not in env and "PRELOADER_MANIFEST" not in env


@pytest.mark.parametrize("flags, token", [({"export_token": True}, "hf_rp"), ({}, None)])
def test_the_token_goes_to_the_service_only_when_exported(flags, token):
    settings = Settings.load({"RUNPOD_HUGGINGFACE_USER": "u", "RUNPOD_HUGGINGFACE_TOKEN": "hf_rp",
                              "PRELOADER_CACHE_DIR": "/v/hub"}, flags)
    env = service_env(INHERITED, settings, [], None)
    assert env.get("HF_TOKEN") == token
    assert "RUNPOD_HUGGINGFACE_TOKEN" not in env and "HUGGING_FACE_HUB_TOKEN" not in env


def test_service_offline_off_drops_the_inherited_switch():
    env = service_env(INHERITED, Settings.load({"PRELOADER_SERVICE_OFFLINE": "0"}), [], None)
    assert "HF_HUB_OFFLINE" not in env


def test_manifest_path_is_per_plan_unless_given():
    one = Settings.load({"PRELOADER_CACHE_DIR": "/v/hub", "RUNPOD_HUGGINGFACE_MODEL": "org/a"})
    again = Settings.load({"PRELOADER_CACHE_DIR": "/v/hub", "RUNPOD_HUGGINGFACE_MODEL": " org/a "})
    other = Settings.load({"PRELOADER_CACHE_DIR": "/v/hub", "RUNPOD_HUGGINGFACE_MODEL": "org/b"})
    assert manifest_path(one) == manifest_path(again) != manifest_path(other)
    assert manifest_path(one).parent == Path("/v/preloader/manifests")
    given = Settings.load({"PRELOADER_MANIFEST": "/run/m.json"})
    assert manifest_path(given) == Path("/run/m.json")
