"""PRELOADER_PICKLE=refuse: pickle weights are refused by name before any byte is fetched, and by content
where the bytes are at hand (files already in the cache before the download, every selected file before the
hand-off). Real subprocesses against the local hub; the proxy counts what it sent."""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import zipfile

import pytest
from conftest import preloader_env, run_preloader

from localhub.locked import HIDDEN, PICKLED, torch_zip
from preloader.preloading import pickles

SECOND = "org/second-model"
SHOW_PATH = [sys.executable, "-c", "import os; print(os.environ['PRELOADER_MODEL_PATH'])"]


def error_line(proc) -> str:
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    return line


def test_refuse_stops_a_pickle_only_repo_before_any_byte_is_fetched(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=PICKLED, PRELOADER_PICKLE="refuse")
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 79 and proc.stdout == ""
    assert error_line(proc) == (
        f"preloader: error: model:{PICKLED}@main selects pickle-format weights and PRELOADER_PICKLE is refuse: "
        "pytorch_model.bin (by name); nothing was downloaded; exclude them (PRELOADER_EXCLUDE) or pick a revision "
        "with safetensors")
    assert hub.count("GET", "/resolve/") == 0 and hub.body_bytes("GET", "/resolve/") == 0
    assert not (cache / "models--org--pickle-model" / "blobs").exists()


def test_allow_is_the_default_and_fetches_them(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=PICKLED)
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 0, proc.stderr
    snapshot = cache / "models--org--pickle-model" / "snapshots" / mirrors.sha("model", PICKLED, "main")
    assert proc.stdout.splitlines()[-1] == str(snapshot)
    assert (snapshot / "pytorch_model.bin").read_bytes() == mirrors.files("model", PICKLED, "main")["pytorch_model.bin"]


def test_refuse_with_the_pickles_left_out_starts(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SECOND, PRELOADER_PICKLE="refuse",
                        PRELOADER_EXCLUDE="*.bin")
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 0, proc.stderr
    assert hub.count(path_contains="pytorch_model.bin") == 0


def test_a_pickle_under_another_name_is_refused_by_content_before_the_hand_off(hub, mirrors, cache):
    commit = mirrors.sha("model", HIDDEN, "main")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{HIDDEN}:{commit}", PRELOADER_PICKLE="refuse")
    proc = run_preloader(["run", "--", *SHOW_PATH], env)
    assert proc.returncode == 79 and proc.stdout == ""  # fetched (its name says nothing), never handed over
    assert error_line(proc) == (
        f"preloader: error: model:{HIDDEN}@{commit} selects pickle-format weights and PRELOADER_PICKLE is refuse: "
        "weights.data (pickle protocol 4 header); nothing was started; the files stay in the cache; exclude them "
        "(PRELOADER_EXCLUDE) or pick a revision with safetensors")
    snapshot = cache / "models--org--hidden-pickle" / "snapshots" / commit
    assert (snapshot / "weights.data").read_bytes() == mirrors.files("model", HIDDEN, "main")["weights.data"]

    # Now the bytes are here: the next start refuses before anything, with no network call.
    hub.reset()
    again = run_preloader(["run", "--", *SHOW_PATH], env)
    assert again.returncode == 79 and "weights.data (pickle protocol 4 header); nothing was downloaded" \
        in error_line(again)
    assert hub.count() == 0

    # The pull form and the wait form refuse it too; allow hands it over.
    assert run_preloader(["pull", f"{HIDDEN}:{commit}"], env).returncode == 79
    assert run_preloader(["wait", "--", "true"], env).returncode == 79
    allowed = run_preloader(["run", "--", *SHOW_PATH], {**env, "PRELOADER_PICKLE": "allow"})
    assert allowed.returncode == 0 and allowed.stdout.splitlines()[-1] == str(snapshot)


def test_a_pickle_already_in_the_cache_is_refused_before_downloading_the_rest(hub, mirrors, cache):
    """The blob a pending download would link is here already: its content is known before any byte."""
    commit = mirrors.sha("model", HIDDEN, "main")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{HIDDEN}:{commit}",
                        PRELOADER_INCLUDE="weights.data")
    assert run_preloader(["run"], env).returncode == 0
    hub.reset()
    proc = run_preloader(["run"], {**env, "PRELOADER_INCLUDE": "", "PRELOADER_PICKLE": "refuse"})
    assert proc.returncode == 79
    assert "weights.data (pickle protocol 4 header); nothing was downloaded" in error_line(proc)
    assert hub.count("GET", "/resolve/") == 0


def test_the_api_keyword(hub, cache):
    import preloader
    from preloader.errors import PickleRefusedError

    with pytest.raises(PickleRefusedError) as raised:
        preloader.preload(PICKLED, pickle="refuse", cache_dir=cache, endpoint=hub.url)
    assert raised.value.exit_code == 79 and "pytorch_model.bin (by name)" in str(raised.value)
    assert hub.count("GET", "/resolve/") == 0


def safetensors_with_header_length(length: int) -> bytes:
    header = json.dumps({"__metadata__": {"pad": "x" * (length - 30)}}).encode().ljust(length)
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("data, why", [
    (torch_zip({"w": 1}), "zip holding archive/data.pkl"),
    *[(pickle.dumps({"w": 1}, protocol=p), f"pickle protocol {p} header") for p in (2, 3, 4, 5)],
    (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "pickle protocol 2 header"),  # legacy torch.save's start
    (safetensors_with_header_length(0x280), None),  # starts 0x80 0x02 like a pickle: a safetensors header
    (b"GGUF\x03\x00\x00\x00", None),
    (b'{"model_type": "bert"}\n', None),
    (b"", None),
    (pickle.dumps({"w": 1}, protocol=0), None),  # protocol 0 has no header: documented as not recognised
])
def test_by_content(tmp_path, data, why):
    path = tmp_path / "f"
    path.write_bytes(data)
    assert pickles.by_content(path) == why


def test_by_content_a_zip_without_a_pickle_and_a_broken_zip(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights.npy", b"\x93NUMPY")
    (tmp_path / "plain.zip").write_bytes(buffer.getvalue())
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    assert pickles.by_content(tmp_path / "plain.zip") is None
    assert pickles.by_content(tmp_path / "broken.zip") is None
    assert pickles.by_content(tmp_path / "absent") is None


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.PT", "x/y.pth", "last.ckpt", "a.pkl", "b.pickle",
                                  "c.joblib", "training_args.bin"])
def test_by_name(name):
    assert pickles.by_name(name)
    assert not pickles.by_name(name + ".json") and not pickles.by_name("model.safetensors")
