"""A token never shows: not when it is pasted into the wrong setting, not in any error or log line."""

from __future__ import annotations

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
