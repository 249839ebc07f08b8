"""Model signatures (PRELOADER_SIGNATURE): real signed repos in the local hub (localhub/signed.py, keys made
for this session), real `preloader run/pull/wait` subprocesses, the exit code, the service's marker, the
completion record's verification claim."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env, run_preloader

from localhub import signed
from localhub.signed import CERT_SIGNED, EXTRA, SHARDED, SIGNED, TAMPERED, UNSIGNED

SIGNATURE_CODE = 65


@pytest.fixture(scope="session")
def keys(mirrors):
    return signed.keys(mirrors.root)


def folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def record(cache: Path, repo: str, commit: str) -> dict:
    return json.loads((cache.parent / "preloader" / "complete" / folder(repo) / f"{commit}.json").read_text())


def start(hub, cache, tmp_path, repo, *, command="run", **settings) -> tuple[subprocess.CompletedProcess, Path]:
    """`preloader run -- sh -c 'echo started > marker'` (or pull / wait); (the process, the marker)."""
    marker = tmp_path / f"started-{len(list(tmp_path.glob('started-*')))}"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=repo, **settings)
    args = [command] + (["--", "sh", "-c", f"echo started > {marker}"] if command in ("run", "wait") else [repo])
    return run_preloader(args, env), marker


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("preloader: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def refused(proc, marker, cache, mirrors, repo, *, said: str) -> None:
    """Exit 65, one line naming the repo and `said`, no service, the bytes still in the cache, no claim."""
    commit = mirrors.sha("model", repo, "main")
    assert proc.returncode == SIGNATURE_CODE, proc.stderr[-3000:]
    line = error_line(proc)
    assert f"signature refused for model {repo}@{commit[:12]}: " in line and said in line, line
    assert line.endswith("; the service was not started and nothing was deleted")
    assert not marker.exists()
    snapshot = cache / folder(repo) / "snapshots" / commit
    for name, data in mirrors.files("model", repo, "main").items():
        if name == "model.sig" and "model.sig" in said and "leaves it out" in said:
            continue
        assert (snapshot / name).read_bytes() == data  # nothing deleted: the bytes may be evidence
    assert "verification" not in record(cache, repo, commit)


def test_required_with_the_good_key_starts_and_records_the_verification(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text() == "started\n"
    commit = mirrors.sha("model", SIGNED, "main")
    claim = record(cache, SIGNED, commit)["verification"]
    files = mirrors.files("model", SIGNED, "main")
    import hashlib

    assert claim["signature"] == hashlib.sha256(files["model.sig"]).hexdigest()
    assert claim["signer"] == "key sha256:" + hashlib.sha256(keys.public.read_bytes()).hexdigest()
    assert claim["files"] == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()
                              if name not in ("model.sig", ".gitattributes")}
    # Only the small non-LFS files were read to hash: the weights' sha256 is their blob's name.
    assert re.search(r"signature\.verified repo=org/signed-model .*files=3 hashed=2 ", proc.stderr), proc.stderr


def test_a_cached_start_with_the_same_signature_and_key_reads_the_record(hub, mirrors, cache, tmp_path, keys):
    """Pinned and cached: no network call, no model_signing import, the claim reused."""
    commit = mirrors.sha("model", SIGNED, "main")
    settings = {"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_KEY": keys.public}
    assert start(hub, cache, tmp_path, f"{SIGNED}:{commit}", **settings)[0].returncode == 0
    hub.reset()
    marker = tmp_path / "cached"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{SIGNED}:{commit}", **settings)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "preloader", "run", "--", "sh", "-c",
                           f"echo started > {marker}"], env=env, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists() and hub.count() == 0
    imported = {name.split(".")[0] for name in
                re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", proc.stderr, re.M)}
    assert "preloader" in imported and not imported & {"model_signing", "sigstore", "OpenSSL"}
    assert re.search(r"signature\.cached repo=org/signed-model .*hashed=0 ", proc.stderr)


def test_a_signature_over_other_bytes_refuses(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, TAMPERED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    refused(proc, marker, cache, mirrors, TAMPERED, said="model.safetensors: digest differs from model.sig's")


def test_a_wrong_key_refuses_and_keeps_the_good_claim(hub, mirrors, cache, tmp_path, keys):
    good = {"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_KEY": keys.public}
    assert start(hub, cache, tmp_path, SIGNED, **good)[0].returncode == 0
    commit = mirrors.sha("model", SIGNED, "main")
    before = record(cache, SIGNED, commit)["verification"]
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.other_public)
    assert proc.returncode == SIGNATURE_CODE
    line = error_line(proc)
    assert f"model.sig does not verify with PRELOADER_SIGNATURE_KEY='{keys.other_public}'" in line, line
    assert not marker.exists()
    assert record(cache, SIGNED, commit)["verification"] == before  # the claim is the good key's, untouched


def test_a_wrong_key_on_a_fresh_cache_writes_no_claim(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.other_public)
    refused(proc, marker, cache, mirrors, SIGNED, said="model.sig does not verify with PRELOADER_SIGNATURE_KEY=")


def test_required_without_a_signature_refuses(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, UNSIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    refused(proc, marker, cache, mirrors, UNSIGNED, said="no model.sig in the commit (PRELOADER_SIGNATURE=required)")


def test_an_unlisted_selected_file_refuses(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, EXTRA, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    refused(proc, marker, cache, mirrors, EXTRA, said="extra.py: not listed in model.sig")


def test_an_unlisted_file_the_plan_leaves_out_is_not_required(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, EXTRA, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public, PRELOADER_EXCLUDE="*.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()
    assert set(record(cache, EXTRA, mirrors.sha("model", EXTRA, "main"))["verification"]["files"]) == {
        "README.md", "config.json", "model.safetensors"}


def test_a_selection_without_the_signature_file_refuses_with_the_fix(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="if-present",
                         PRELOADER_SIGNATURE_KEY=keys.public, PRELOADER_INCLUDE="*.json,*.safetensors")
    assert proc.returncode == SIGNATURE_CODE
    assert "model.sig is in the commit but the plan's selection leaves it out; add it to PRELOADER_INCLUDE" \
        in error_line(proc)
    assert not marker.exists()


def test_if_present_on_an_unsigned_repo_starts_without_a_claim(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, UNSIGNED, PRELOADER_SIGNATURE="if-present",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()
    assert "signature.absent repo=org/unsigned-model" in proc.stderr
    assert "verification" not in record(cache, UNSIGNED, mirrors.sha("model", UNSIGNED, "main"))


def test_if_present_still_refuses_a_bad_signature(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, TAMPERED, PRELOADER_SIGNATURE="if-present",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    refused(proc, marker, cache, mirrors, TAMPERED, said="model.safetensors: digest differs")


def test_a_certificate_signed_model_verifies_against_the_test_ca(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, CERT_SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_CERT=keys.ca)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()
    claim = record(cache, CERT_SIGNED, mirrors.sha("model", CERT_SIGNED, "main"))["verification"]
    assert claim["signer"].startswith("certificate sha256:")


def test_a_certificate_from_another_ca_refuses(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, CERT_SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_CERT=keys.other_ca)
    refused(proc, marker, cache, mirrors, CERT_SIGNED, said="model.sig does not verify with PRELOADER_SIGNATURE_CERT=")


def test_a_shard_signed_model_is_hashed_as_its_signature_says(hub, mirrors, cache, tmp_path, keys):
    proc, marker = start(hub, cache, tmp_path, SHARDED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()
    assert re.search(r"signature\.verified repo=org/shard-signed .*files=3 hashed=3 ", proc.stderr)


def test_pull_refuses_with_the_same_code(hub, mirrors, cache, tmp_path, keys):
    proc, _ = start(hub, cache, tmp_path, TAMPERED, command="pull", PRELOADER_SIGNATURE="required",
                    PRELOADER_SIGNATURE_KEY=keys.public)
    assert proc.returncode == SIGNATURE_CODE
    assert "model.safetensors: digest differs" in error_line(proc)


def test_wait_checks_the_signature_before_the_hand_off(hub, mirrors, cache, tmp_path, keys):
    assert start(hub, cache, tmp_path, SIGNED, command="pull")[0].returncode == 0  # signature off: no claim
    proc, marker = start(hub, cache, tmp_path, SIGNED, command="wait", PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.other_public)
    assert proc.returncode == SIGNATURE_CODE and not marker.exists()
    assert "model.sig does not verify" in error_line(proc)
    proc, marker = start(hub, cache, tmp_path, SIGNED, command="wait", PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()
    assert "verification" in record(cache, SIGNED, mirrors.sha("model", SIGNED, "main"))


def test_keyless_offline_uses_the_shipped_trust_root_and_refuses_a_key_signed_bundle(hub, mirrors, cache, tmp_path,
                                                                                     keys):
    """Sigstore keyless, offline: the trust root shipped with sigstore loads with no network; a bundle that
    carries no Fulcio certificate (this one is key-signed) is refused with the signature code."""
    assert start(hub, cache, tmp_path, SIGNED, command="pull")[0].returncode == 0
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required", PRELOADER_OFFLINE="1",
                         PRELOADER_SIGNATURE_IDENTITY="models@example.com",
                         PRELOADER_SIGNATURE_ISSUER="https://accounts.google.com")
    assert proc.returncode == SIGNATURE_CODE, proc.stderr[-3000:]
    assert "model.sig does not verify with PRELOADER_SIGNATURE_IDENTITY='models@example.com' (issuer " \
           "https://accounts.google.com): " in error_line(proc)
    assert not marker.exists()


def test_keyless_online_without_network_refuses_with_the_fix(hub, mirrors, cache, tmp_path):
    """Online, the first check refreshes sigstore's trust root (TUF); this machine has no network: 65, saying
    how to use the shipped one."""
    assert start(hub, cache, tmp_path, SIGNED, command="pull")[0].returncode == 0
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_IDENTITY="models@example.com",
                         PRELOADER_SIGNATURE_ISSUER="https://accounts.google.com",
                         HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
    assert proc.returncode == SIGNATURE_CODE, proc.stderr[-3000:]
    assert error_line(proc).startswith("preloader: error: cannot load the sigstore trust root (TUF, "
                                       "https://tuf-repo-cdn.sigstore.dev): ")
    assert error_line(proc).endswith("without network, set PRELOADER_OFFLINE=1 to use the one shipped with sigstore")
    assert not marker.exists()
    assert "verification" not in record(cache, SIGNED, mirrors.sha("model", SIGNED, "main"))


def test_api_keywords(hub, mirrors, cache, keys, monkeypatch):
    import preloader
    from preloader.errors import SignatureError

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    results = preloader.preload(SIGNED, cache_dir=cache, signature="required", signature_key=keys.public)
    assert results[0].repo_id == SIGNED
    with pytest.raises(SignatureError, match="digest differs") as raised:
        preloader.preload(TAMPERED, cache_dir=cache, signature="required", signature_key=keys.public)
    assert raised.value.exit_code == SIGNATURE_CODE
    with pytest.raises(preloader.ConfigError, match="signature_key=.*: no such file"):
        preloader.preload(SIGNED, cache_dir=cache, signature="required", signature_key=cache / "nope.pub")


@pytest.mark.parametrize("settings, message", [
    ({"PRELOADER_SIGNATURE": "required"},
     "PRELOADER_SIGNATURE=required needs PRELOADER_SIGNATURE_KEY, PRELOADER_SIGNATURE_CERT or "
     "PRELOADER_SIGNATURE_IDENTITY + PRELOADER_SIGNATURE_ISSUER"),
    ({"PRELOADER_SIGNATURE": "always", "PRELOADER_SIGNATURE_KEY": "KEY"},
     "PRELOADER_SIGNATURE='always': expected one of off, if-present, required"),
    ({"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_KEY": "/nonexistent/key.pub"},
     "PRELOADER_SIGNATURE_KEY='/nonexistent/key.pub': no such file"),
    ({"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_IDENTITY": "me@example.com"},
     "PRELOADER_SIGNATURE_IDENTITY is set but PRELOADER_SIGNATURE_ISSUER is missing; sigstore keyless needs both"),
    ({"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_KEY": "KEY", "PRELOADER_SIGNATURE_CERT": "KEY"},
     "give one way to trust signatures: PRELOADER_SIGNATURE_KEY or PRELOADER_SIGNATURE_CERT"),
    ({"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_KEY": "KEY", "PRELOADER_SIGNATURE_FILE": "../x.sig"},
     "PRELOADER_SIGNATURE_FILE='../x.sig': '.', '..' or empty path component"),
])
def test_bad_settings_are_78_before_any_download(hub, cache, keys, settings, message):
    settings = {k: str(keys.public) if v == "KEY" else v for k, v in settings.items()}
    proc = run_preloader(["run", "--", "true"], preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=SIGNED, **settings))
    assert proc.returncode == 78
    assert message in error_line(proc)
    assert hub.count() == 0 and not cache.exists()


def test_verify_signature_rehashes_every_byte(hub, mirrors, cache, tmp_path, keys):
    """A cached claim trusts the blobs' names; `verify --signature` reads every byte: bytes changed on the
    volume after the check (same size, same blob name) pass a cached start and fail verify."""
    assert start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required",
                 PRELOADER_SIGNATURE_KEY=keys.public)[0].returncode == 0
    assert start(hub, cache, tmp_path, TAMPERED, command="pull")[0].returncode == 0
    env = preloader_env(hub, cache, PRELOADER_SIGNATURE_KEY=keys.public)
    proc = run_preloader(["verify", "--signature", "--json", SIGNED], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    document = json.loads(proc.stdout)
    check = document["snapshots"][0]["signature"]
    assert check["ok"] and check["status"] == "verified" and check["hashed"] == check["files"] == 3
    import jsonschema

    jsonschema.validate(document, json.loads((ROOT / "docs" / "schemas" / "verify.schema.json").read_text()))

    proc = run_preloader(["verify", "--signature", "--json", TAMPERED], env)
    assert proc.returncode == 1
    check = json.loads(proc.stdout)["snapshots"][0]
    assert check["ok"]  # the etags agree with the bytes: only the signature tells
    assert check["signature"]["problems"] == ["model.safetensors: digest differs from model.sig's"]

    snapshot = cache / folder(SIGNED) / "snapshots" / mirrors.sha("model", SIGNED, "main")
    config = (snapshot / "config.json").resolve()
    config.write_bytes(config.read_bytes().replace(b"bert", b"BERT"))  # on the volume, after the check
    proc, marker = start(hub, cache, tmp_path, SIGNED, PRELOADER_SIGNATURE="required",
                         PRELOADER_SIGNATURE_KEY=keys.public)
    assert proc.returncode == 0 and marker.exists()  # the trust model: the claim covers what was downloaded
    proc = run_preloader(["verify", "--signature", SIGNED], env)
    assert proc.returncode == 1
    assert f"REFUSED  model {SIGNED}@" in proc.stdout and "config.json: digest differs from model.sig's" in proc.stdout


def test_verify_signature_needs_a_trust_setting(hub, cache):
    proc = run_preloader(["verify", "--signature"], preloader_env(hub, cache))
    assert proc.returncode == 78
    assert "verify --signature needs PRELOADER_SIGNATURE_KEY" in error_line(proc)


def test_doctor_says_signing_support_is_installed(hub, cache):
    proc = run_preloader(["doctor", "--json"], preloader_env(hub, cache))
    check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "signing")
    assert check["status"] == "ok" and check["detail"].startswith("signing support installed (model-signing 1.")


def test_without_the_signing_extra_a_signature_setting_is_78(monkeypatch, keys):
    from preloader.config import Settings
    from preloader.errors import ConfigError

    monkeypatch.setitem(sys.modules, "model_signing", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"PRELOADER_SIGNATURE=required needs the model-signing package: "
                                          r"pip install 'hf-preloader\[signing\]'"):
        Settings.load({"PRELOADER_SIGNATURE": "required", "PRELOADER_SIGNATURE_KEY": str(keys.public)})
    assert Settings.load({"PRELOADER_SIGNATURE_KEY": str(keys.public)}).signature == "off"  # off needs nothing


@pytest.mark.parametrize("content", [b"", b"not json", b'{"mediaType": "x"}', b"\xff" * 64])
def test_a_garbled_signature_is_refused_not_a_bug(tmp_path, keys, content):
    from preloader.preloading.signatures import Trust, check_snapshot
    from preloader.spec import RepoSpec

    (tmp_path / "model.sig").write_bytes(content)
    (tmp_path / "config.json").write_bytes(b"{}")
    check, claim = check_snapshot(RepoSpec("model", "org/x", "main"), "0" * 40, tmp_path, ["config.json", "model.sig"],
                                  Trust("key", keys.public), signature_file="model.sig", required=True)
    assert (check.status, claim) == ("refused", None)
    assert len(check.problems) == 1
    assert check.problems[0].startswith(f"model.sig does not verify with PRELOADER_SIGNATURE_KEY='{keys.public}': ")


def test_a_file_gone_from_the_snapshot_is_named(tmp_path, keys, mirrors):
    """verify --signature on a snapshot missing a file the signature lists: named, not a traceback."""
    from preloader.preloading.signatures import Trust, check_snapshot
    from preloader.spec import RepoSpec

    files = mirrors.files("model", SIGNED, "main")
    (tmp_path / "model.sig").write_bytes(files["model.sig"])
    (tmp_path / "config.json").write_bytes(files["config.json"])
    check, claim = check_snapshot(RepoSpec("model", SIGNED, "main"), "0" * 40, tmp_path,
                                  ["config.json", "model.safetensors"], Trust("key", keys.public),
                                  signature_file="model.sig", required=True, rehash=True)
    assert claim is None
    assert check.problems == ["model.safetensors: cannot read it (No such file or directory)"]


def test_the_sha256_comes_from_the_repo_blob_name_not_the_shared_store_entry(tmp_path):
    """snapshot -> blobs/<sha256> -> the shared store's entry, named by its Xet hash (64 hex too): the sha256
    is the repo blob's name; a non-LFS blob (a git blob id) or a plain file is hashed."""
    import hashlib

    from preloader.cache import digests

    data = b"weights"
    sha, xet = hashlib.sha256(data).hexdigest(), "ab" * 32
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / xet).write_bytes(data)
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / sha).symlink_to(f"../store/{xet}")
    (tmp_path / "blobs" / ("1" * 40)).write_bytes(b"{}")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "model.safetensors").symlink_to(f"../blobs/{sha}")
    (snapshot / "config.json").symlink_to(f"../blobs/{'1' * 40}")
    (snapshot / "plain.txt").write_bytes(b"plain")
    assert digests.sha256_of(snapshot, "model.safetensors") == (sha, False)
    assert digests.sha256_of(snapshot, "model.safetensors", rehash=True) == (sha, True)
    assert digests.sha256_of(snapshot, "config.json") == (hashlib.sha256(b"{}").hexdigest(), True)
    assert digests.sha256_of(snapshot, "plain.txt") == (hashlib.sha256(b"plain").hexdigest(), True)
