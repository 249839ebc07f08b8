"""Read-only tiers (PRELOADER_READ_CACHES): caches used where they are, never written, nothing downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env, run_preloader
from test_readonly import needs_root, read_only, tree  # noqa: F401 - a fixture and helpers shared

MODEL = "org/tiny-model"
LOAD = ("import os; from transformers import AutoModel; "
        "AutoModel.from_pretrained(os.environ['PRELOADER_MODEL_PATH'], local_files_only=True); "
        "AutoModel.from_pretrained('org/tiny-model', revision=os.path.basename(os.environ['PRELOADER_MODEL_PATH']), "
        "local_files_only=True); print('loaded')")


def tier_by(kind: str, hub, mirrors, path):
    """A tier the preloader filled (its records beside it), or one only huggingface_hub wrote."""
    if kind == "preloader":
        assert run_preloader(["run"], preloader_env(hub, path / "hub", RUNPOD_HUGGINGFACE_MODEL=MODEL)).returncode == 0
    else:
        code = "import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], cache_dir=sys.argv[2])"
        env = preloader_env(hub, path / "hub") | {"HF_ENDPOINT": hub.url}
        subprocess.run([sys.executable, "-c", code, MODEL, str(path / "hub")], env=env, check=True, cwd=ROOT)
    return path


@needs_root
@pytest.mark.parametrize("kind", ["preloader", "huggingface_hub"])
def test_a_snapshot_in_a_read_only_tier_is_linked_not_downloaded(hub, mirrors, tmp_path, read_only, kind):  # noqa: F811
    source = tier_by(kind, hub, mirrors, tmp_path / "tier")
    before = tree(source)
    tier = read_only(source)
    commit = mirrors.sha("model", MODEL, "main")
    hub.reset()
    for n, spec in enumerate((f"{MODEL}:{commit}", MODEL)):  # pinned: no network; by branch: one lookup
        writable = tmp_path / f"volume{n}" / "hub"
        env = preloader_env(hub, writable, PRELOADER_READ_CACHES=f"/nonexistent:{tier / 'hub'}")
        proc = run_preloader(["run", "--model", spec, "--", sys.executable, "-c", LOAD], env)
        assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr
        assert "source=tier" in proc.stderr
    assert not [r for r in hub.requests() if "/resolve/" in r.path]  # no file came from the hub
    blob = (writable / "models--org--tiny-model" / "snapshots" / commit / "model.safetensors")
    assert os.path.realpath(blob).startswith(str(tier))  # the tier's file, used where it is
    assert run_preloader(["verify"], env).returncode == 0
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "hf"), "cache", "verify", MODEL, "--cache-dir",
                           str(writable)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree(source) == before  # never written
    # The tier's tree listing, as the download wrote it: huggingface_hub's readers tell complete from partial.
    listing = Path("models--org--tiny-model") / "trees" / f"{commit}.json"
    assert (writable / listing).read_bytes() == (source / "hub" / listing).read_bytes()
    (writable / "models--org--tiny-model" / "snapshots" / commit / "README.md").unlink()
    offline = env | {"HF_HUB_CACHE": str(writable), "HF_HUB_OFFLINE": "1"}
    code = "import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], local_files_only=True)"
    proc = subprocess.run([sys.executable, "-c", code, MODEL], env=offline, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "IncompleteSnapshotError" in proc.stderr and "README.md" in proc.stderr


@needs_root
def test_with_no_writable_cache_the_service_starts_on_the_tier(hub, mirrors, tmp_path, read_only):  # noqa: F811
    source = tier_by("preloader", hub, mirrors, tmp_path / "tier")
    tier = read_only(source)
    commit = mirrors.sha("model", MODEL, "main")
    (tmp_path / "empty").mkdir()
    nowhere = read_only(tmp_path / "empty")  # the writable cache is not writable: no volume for it
    hub.reset()
    env = preloader_env(hub, nowhere / "hub", PRELOADER_READ_CACHES=str(tier / "hub"),
                        RUNPOD_HUGGINGFACE_MODEL=f"{MODEL}:{commit}")
    show = ["--", "sh", "-c", 'echo "$HF_HUB_CACHE $PRELOADER_MODEL_PATH"']
    for command in (["run"], ["wait"]):
        proc = run_preloader([*command, *show], env)
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr  # nothing to record, nothing tried
        assert proc.stdout.split() == [str(tier / "hub"), str(tier / "hub" / "models--org--tiny-model" / "snapshots" / commit)]
    proc = run_preloader(["run", "--", sys.executable, "-c", LOAD], env)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr
    assert hub.count() == 0


@needs_root
def test_a_blob_a_tier_holds_is_copied_and_checked_not_downloaded(hub, mirrors, tmp_path, read_only):  # noqa: F811
    """tiny-model in a tier; its fork (same weights) preloaded into the writable cache: the weights come from
    the tier (a checked copy: another filesystem here), only the fork's own README from the hub."""
    source = tier_by("preloader", hub, mirrors, tmp_path / "tier")
    tier = read_only(source)
    hub.reset()
    env = preloader_env(hub, tmp_path / "volume" / "hub", PRELOADER_READ_CACHES=str(tier / "hub"),
                        RUNPOD_HUGGINGFACE_MODEL="org/tiny-model-fork")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    fetched = sorted(r.path.rsplit("/", 1)[1] for r in hub.requests(method="GET") if "/resolve/" in r.path)
    assert fetched == ["README.md"]
    assert "dedup.linked" in proc.stderr
    assert run_preloader(["verify"], env).returncode == 0
