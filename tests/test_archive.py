"""Snapshots that travel: `preloader export` and `preloader import`, every byte checked on the way in."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT, preloader_env, run_preloader

MODEL, FORK, DATA = "org/tiny-model", "org/tiny-model-fork", "org/tiny-data"


@pytest.fixture
def exported(hub, cache, tmp_path):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{MODEL},{MODEL}:dev,{FORK}",
                        RUNPOD_HUGGINGFACE_DATASET=f"{DATA}:v1.0")
    assert run_preloader(["run"], env).returncode == 0
    archive = tmp_path / "models.tar"
    proc = run_preloader(["export", "--all", "-o", str(archive)], env)
    assert proc.returncode == 0, proc.stderr
    return archive, env


def other_cache(tmp_path, hub, name="other"):
    return preloader_env(hub, tmp_path / name / "hub")


def test_export_then_import_into_an_empty_cache_verifies_and_starts_offline(exported, tmp_path, hub, mirrors):
    archive, _ = exported
    names = tarfile.open(archive).getnames()
    assert names[0] == "manifest.json" and all(n.startswith("blobs/") for n in names[1:])
    assert len(names[1:]) == len(set(names[1:]))  # each blob once (the fork shares tiny-model's weights)
    env = other_cache(tmp_path, hub)
    hub.reset()
    proc = run_preloader(["import", str(archive), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["snapshots"]) == 4 and report["blobs_present"] == 0
    assert run_preloader(["verify"], env).returncode == 0
    assert run_preloader(["status", MODEL, f"{MODEL}:dev", FORK], env).returncode == 0
    code = ("import sys; from transformers import AutoModel; "
            "AutoModel.from_pretrained(sys.argv[1], local_files_only=True); print('loaded')")
    offline = env | {"HF_HUB_CACHE": env["PRELOADER_CACHE_DIR"], "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, MODEL], env=offline, capture_output=True, text=True)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr
    pinned = run_preloader(["run", "--model", f"{MODEL}:{mirrors.sha('model', MODEL, 'main')}", "--", "true"],
                           env | {"PRELOADER_OFFLINE": "1"})
    assert pinned.returncode == 0, pinned.stderr
    assert hub.count() == 0  # nothing came from the hub


INCOMPLETE = ("import sys; from huggingface_hub import snapshot_download; "
              "print(snapshot_download(sys.argv[1], local_files_only=True))")


def test_an_import_writes_each_tree_listing_as_the_download_did(exported, tmp_path, hub, cache, mirrors):
    """huggingface_hub's `trees/<commit>.json` of every imported snapshot, byte for byte what the download
    wrote, so its readers tell a complete snapshot from a partial one in the imported cache too."""
    archive, _ = exported
    env = other_cache(tmp_path, hub)
    assert run_preloader(["import", str(archive)], env).returncode == 0, "import"
    imported = tmp_path / "other" / "hub"
    listings = sorted(p.relative_to(cache) for p in cache.glob("*/trees/*.json"))
    assert len(listings) == 4  # main and dev of the model, the fork, the dataset
    for listing in listings:
        assert (imported / listing).read_bytes() == (cache / listing).read_bytes(), listing
    offline = env | {"HF_HUB_CACHE": str(imported), "HF_HUB_OFFLINE": "1"}
    commit = mirrors.sha("model", MODEL, "main")
    (imported / "models--org--tiny-model" / "snapshots" / commit / "README.md").unlink()
    proc = subprocess.run([sys.executable, "-c", INCOMPLETE, MODEL], env=offline, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "IncompleteSnapshotError" in proc.stderr and "README.md" in proc.stderr


def test_import_over_a_cache_that_holds_some_blobs_writes_only_the_rest(exported, tmp_path, hub):
    archive, _ = exported
    env = other_cache(tmp_path, hub) | {"RUNPOD_HUGGINGFACE_MODEL": MODEL}
    assert run_preloader(["run"], env).returncode == 0
    proc = run_preloader(["import", str(archive), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["blobs_present"] > 0
    total = len(json.loads(tarfile.open(archive).extractfile("manifest.json").read())["blobs"])
    assert report["blobs_written"] == total - report["blobs_present"]
    assert run_preloader(["verify"], env).returncode == 0


def test_a_pipe_with_zstd_works(exported, tmp_path, hub):
    pytest.importorskip("zstandard")
    _, env = exported
    target = other_cache(tmp_path, hub)
    producer = subprocess.Popen([sys.executable, "-m", "preloader", "export", MODEL, "-o", "-"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE)
    consumer = subprocess.run([sys.executable, "-m", "preloader", "import", "-"], env=target, cwd=ROOT,
                              stdin=producer.stdout, capture_output=True, text=True)
    producer.stdout.close()
    assert producer.wait() == 0 and consumer.returncode == 0, consumer.stderr
    compressed = tmp_path / "m.tar.zst"
    assert run_preloader(["export", MODEL, "-o", str(compressed)], env).returncode == 0
    assert compressed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    again = other_cache(tmp_path, hub, "third")
    assert run_preloader(["import", str(compressed)], again).returncode == 0
    assert run_preloader(["status", MODEL], again).returncode == 0


def rewrite(archive, tmp_path, change) -> str:
    """A copy of the archive with `change(members) -> members` applied to (TarInfo, bytes) pairs."""
    members = [(m, tarfile.open(archive).extractfile(m).read() if m.isfile() else b"")
               for m in tarfile.open(archive).getmembers()]
    out = tmp_path / "tampered.tar"
    with tarfile.open(out, "w") as tar:
        for info, data in change(members):
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return str(out)


def flip_a_byte(members):
    info, data = members[-1]
    return members[:-1] + [(info, data[:10] + bytes([data[10] ^ 1]) + data[11:])]


def add_dotdot(members):
    info = tarfile.TarInfo("blobs/../../../escaped")
    info.size = 4
    return members[:1] + [(info, b"evil")] + members[1:]


def add_symlink(members):
    info = tarfile.TarInfo("blobs/" + members[1][0].name.split("/")[1])
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return members[:1] + [(info, b"")] + members[2:]


def add_device(members):
    info = tarfile.TarInfo("blobs/dev")
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return members[:1] + [(info, b"")] + members[1:]


def clash_names(members):
    """The manifest names `README.md` a file and `README.md/inner` a file too: no import can publish both."""
    info, data = members[0]
    manifest = json.loads(data)
    files = manifest["snapshots"][0]["files"]
    files["README.md/inner"] = dict(files["README.md"])
    data = json.dumps(manifest).encode()
    info.size = len(data)
    return [(info, data)] + members[1:]


def lying_tree(members):
    """The manifest's tree listing gives a file another size than the snapshot's listing does."""
    info, data = members[0]
    manifest = json.loads(data)
    tree = manifest["snapshots"][0]["tree"]
    tree["README.md"]["size"] += 1
    data = json.dumps(manifest).encode()
    info.size = len(data)
    return [(info, data)] + members[1:]


@pytest.mark.parametrize("change, message", [
    (lying_tree, "tree listing does not match the snapshot's listing"),
    (clash_names, "file 'README.md' is also a folder of 'README.md/inner'"),
    (flip_a_byte, "does not match its etag"),
    (add_dotdot, "is not a blob the manifest lists"),
    (add_symlink, "is a link"),
    (add_device, "is a device"),
    (lambda members: members[1:], "does not begin with manifest.json"),
    (lambda members: members[:-1], "the archive ends before"),
])
def test_a_tampered_archive_is_refused_and_nothing_is_written(exported, tmp_path, hub, change, message):
    archive, _ = exported
    env = other_cache(tmp_path, hub)
    proc = run_preloader(["import", rewrite(archive, tmp_path, change)], env)
    assert proc.returncode == 76, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    hub_dir = tmp_path / "other" / "hub"
    written = [p for p in hub_dir.rglob("*") if p.is_file()] if hub_dir.exists() else []
    assert written == []  # no blob, link, ref or record
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("escaped"))
    assert not (tmp_path / "other" / "preloader" / "complete").exists()


def test_export_of_what_is_not_complete_is_refused(hub, cache, tmp_path):
    env = preloader_env(hub, cache)
    proc = run_preloader(["export", MODEL, "-o", str(tmp_path / "x.tar")], env)
    assert proc.returncode == 66 and not (tmp_path / "x.tar").exists()
    assert not os.listdir(tmp_path) or all(not n.endswith(".tar") for n in os.listdir(tmp_path))


def test_bad_paths_are_one_line_errors(hub, cache, tmp_path, exported):
    _, env = exported
    proc = run_preloader(["import", str(tmp_path / "absent.tar")], env)
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (66, [
        f"preloader: error: cannot read the archive {tmp_path / 'absent.tar'}: No such file or directory"])
    proc = run_preloader(["export", "--all", "-o", str(tmp_path / "no" / "dir" / "x.tar")], env)
    assert proc.returncode == 74 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()
