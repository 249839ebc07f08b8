"""deploy/kubernetes: every manifest valid for Kubernetes, and run for real where podman can run it.

Offline, always: each manifest against the schemas of Kubernetes 1.29 (the oldest the manifests are for)
and of the newest kubernetes-validate knows, strict (a misspelled or unknown field fails); kustomization.yaml
lists every file; the token is only ever a mounted Secret file; every readiness probe is `preloader status`.

With rootful podman (`make test` installs it), `podman kube play` runs variants of the real files, made
here with PyYAML: the images as kustomize `images:` would rewrite them, the ConfigMap pointed at the local
hub (and at org/tiny-model), host networking (the hub listens on 127.0.0.1 only), names made unique, and a
Secret with a test token (a cluster's user creates that one with kubectl). What podman 4.3 cannot run:
- Jobs and DaemonSets ("does not contain any supported kube kind"): their pod templates run as Pods;
- a Deployment's replicas (it makes one pod) and readiness probes (ignored): the tests run the probe's
  command themselves, with `podman exec`;
- init containers under `restartPolicy: Always`: it starts them again when they exit, then fails to remove
  them, so pods with init containers run with `OnFailure` here. Their init containers are kept after they
  exit (podman's `always` init type) so that the tests can read their exit code and logs.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml  # PyYAML: kubernetes-validate's dependency
from conftest import ROOT
from containers_support import (
    MODEL,
    build_images,
    inspect,
    loaded,
    logs,
    podman_ready,
    require_tools,
    sh,
    wait_for_line,
)

MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
OLDEST_KUBERNETES = "1.29"  # deploy/kubernetes/README.md says so; podFailurePolicy's schema needs it
CONFIG_MAP = "preloader-config"
TOKEN_SECRET = "hf-token"
TOKEN_FILE = "/var/run/secrets/huggingface/token"
PROBE = ["preloader", "status"]
# Kustomize `images:` names (no tag) -> the key of the test image that stands in for it.
TEST_IMAGES = {"localhost/preloader": "preloader", "your-registry/your-app": "app"}
INIT_TYPE = "io.podman.annotations.init.container.type"  # podman's: "always" keeps an exited init container
TOKEN = "hf_" + "k8sTestToken" * 3


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p != KUSTOMIZATION)


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kind_named(kind: str, name: str) -> dict:
    found = [doc for path in manifest_files() for doc in load(path) if identity(doc) == (kind, name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in {MANIFESTS}"
    return found[0]


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] in ("Deployment", "DaemonSet", "Job", "StatefulSet", "ReplicaSet"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads() -> list[dict]:
    return [doc for path in manifest_files() for doc in load(path) if pod_spec(doc)]


def identity(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def image_name(image: str) -> str:
    """The name kustomize `images:` matches: the reference without its tag."""
    return image.rsplit(":", 1)[0]


# -- the files, offline ------------------------------------------------------------------------------------------


def kubernetes_versions() -> list[str]:
    return [OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version()]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes_strictly(path):
    docs = load(path)
    assert docs
    for version in kubernetes_versions():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} is not valid for Kubernetes "
                            f"{version}: {error.message} at {'.'.join(map(str, error.path))}")


def test_strict_validation_catches_a_misspelled_field():
    """The check above can fail: a misspelled field of a container is refused."""
    doc = copy.deepcopy(kind_named("Deployment", "hf-app-init"))
    doc["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, kubernetes_versions()[-1], strict=True)


def test_kustomization_lists_every_file_and_every_image():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert (kustomization["apiVersion"], kustomization["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    # Every image of every container is one the kustomization's `images:` can point elsewhere.
    overridable = {entry["name"] for entry in kustomization["images"]}
    used = {image_name(c["image"]) for doc in workloads() for c in containers(pod_spec(doc))}
    assert used == overridable == set(TEST_IMAGES)


def test_every_file_says_first_what_it_is_for():
    for path in [KUSTOMIZATION, *manifest_files()]:
        head = path.read_text().splitlines()[:2]
        assert head[0].startswith("# ") and len(head[0]) > 40, f"{path.name} does not start with what it is for"


def test_the_three_patterns_are_there():
    init = pod_spec(kind_named("Deployment", "hf-app-init"))
    assert [c["image"] for c in init["initContainers"]] == ["localhost/preloader:latest"]
    assert "command" not in init["initContainers"][0] and "args" not in init["initContainers"][0]  # `preloader run`
    assert "emptyDir" in volume(init, "hf-cache")

    prewarm = pod_spec(kind_named("DaemonSet", "hf-cache-prewarm"))
    assert volume(prewarm, "hf-cache")["hostPath"]["type"] == "DirectoryOrCreate"
    (main,) = prewarm["containers"]
    assert "args" not in main and "command" not in main  # the image's `tini -- preloader run --`, no command
    assert {"name": "PRELOADER_REFRESH", "value": "1h"} in main["env"]  # which keeps it up, refreshing

    claim = kind_named("PersistentVolumeClaim", "hf-cache-shared")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    fill = pod_spec(kind_named("Job", "hf-cache-fill"))
    assert volume(fill, "hf-cache")["persistentVolumeClaim"]["claimName"] == "hf-cache-shared"
    shared = pod_spec(kind_named("Deployment", "hf-app-shared"))
    assert volume(shared, "hf-cache")["persistentVolumeClaim"]["claimName"] == "hf-cache-shared"
    (app,) = shared["containers"]
    assert app["command"] == ["tini", "--", "preloader", "wait", "--"]


def volume(spec: dict, name: str) -> dict:
    (found,) = [v for v in spec["volumes"] if v["name"] == name]
    return found


def test_the_token_is_only_ever_a_mounted_secret_file():
    assert not [doc for path in manifest_files() for doc in load(path) if doc["kind"] == "Secret"]
    for doc in workloads():
        spec = pod_spec(doc)
        token_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
        for v in spec["volumes"]:
            if "secret" in v:
                # optional: false is Kubernetes' default; podman kube play 4.3 crashes when it is left out.
                assert v["secret"] == {"secretName": TOKEN_SECRET, "optional": False}
        for c in containers(spec):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert not [name for name in env if "TOKEN" in name and name != "PRELOADER_TOKEN_FILE"], c["name"]
            assert not [e for e in c.get("env", []) if "valueFrom" in e], c["name"]
            mounts = [(m["mountPath"], m.get("readOnly")) for m in c.get("volumeMounts", []) if m["name"] in token_volumes]
            if "PRELOADER_TOKEN_FILE" in env:  # a preloader that may download: the file is there, read-only
                assert env["PRELOADER_TOKEN_FILE"] == TOKEN_FILE
                assert mounts == [(str(Path(TOKEN_FILE).parent), True)], c["name"]
            else:
                assert not mounts, f"{c['name']} mounts the token but does not use it"
    config = kind_named("ConfigMap", CONFIG_MAP)
    assert not [key for key in config["data"] if "TOKEN" in key or "USER" in key]


def test_every_container_reads_the_one_config_map():
    for doc in workloads():
        for c in containers(pod_spec(doc)):
            if c["name"] == "cache-owner":  # chown, nothing to preload
                continue
            assert c["envFrom"] == [{"configMapRef": {"name": CONFIG_MAP}}], c["name"]
            assert not {e["name"] for e in c.get("env", [])} & {"RUNPOD_HUGGINGFACE_MODEL", "RUNPOD_HUGGINGFACE_DATASET"}


def test_long_running_containers_are_ready_by_preloader_status_and_apps_are_offline():
    for doc in workloads():
        spec = pod_spec(doc)
        for c in spec["containers"]:
            if doc["kind"] == "Job":
                assert "readinessProbe" not in c  # a Job's pod is never Ready: it is done
                continue
            assert c["readinessProbe"]["exec"]["command"] == PROBE, c["name"]
            if c["image"].startswith("your-registry/"):
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"] == "/cache/hub"
                assert [m.get("readOnly") for m in c["volumeMounts"] if m["name"] == "hf-cache"] == [True]


def test_kustomize_renders_every_object_and_points_the_images_elsewhere(tmp_path):
    """kustomize, as a user runs it: kubectl is a system dependency (Debian's kubernetes-client where none is)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: scripts/install-system-deps.sh installs it"
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    overlay.joinpath("kustomization.yaml").write_text(yaml.safe_dump({
        # `bases`, not `resources`: Debian's kubectl 1.20 (kustomize 2) takes a directory only there; newer
        # ones still accept it. kustomize takes no absolute path.
        "bases": [os.path.relpath(MANIFESTS, overlay)],
        "images": [{"name": "localhost/preloader", "newName": "registry.example.com/ml/preloader", "newTag": "1.2.3"},
                   {"name": "your-registry/your-app", "newName": "registry.example.com/ml/app", "newTag": "7"}],
    }))
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    expected = [doc for path in manifest_files() for doc in load(path)]
    assert sorted(map(identity, rendered)) == sorted(map(identity, expected))
    images = {c["image"] for doc in rendered if pod_spec(doc) for c in containers(pod_spec(doc))}
    assert images == {"registry.example.com/ml/preloader:1.2.3", "registry.example.com/ml/app:7"}
    # And what the base renders is exactly the files.
    proc = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted((d for d in yaml.safe_load_all(proc.stdout) if d), key=identity) == sorted(expected, key=identity)


# -- podman kube play ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def podman():
    path = podman_ready()
    # Podman builds the image of a pod's infra container from catatonit (Debian's package); without it,
    # every `podman kube play` fails.
    require_tools("catatonit")
    return path


@pytest.fixture(scope="session")
def images(podman):
    return build_images()


def for_podman(docs: list[dict], *, suffix: str, images: dict, hub_url: str, host_path: Path | None = None) -> list[dict]:
    """The manifests as `podman kube play` can run them here; see the module's docstring."""
    docs = copy.deepcopy(docs)
    out = []
    for doc in docs:
        meta = doc["metadata"]
        meta["name"] += suffix
        if doc["kind"] == "ConfigMap":
            doc["data"].update(RUNPOD_HUGGINGFACE_MODEL=MODEL, HF_ENDPOINT=hub_url)
        if doc["kind"] in ("Job", "DaemonSet"):  # podman 4.3 runs neither: their pod template, as a Pod
            template = doc["spec"]["template"]
            doc = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": meta["name"], "labels": template["metadata"].get("labels", {})},
                   "spec": template["spec"]}
        spec = pod_spec(doc)
        if spec is not None:
            # Podman 4.3 takes a Deployment's pod annotations from the Deployment's own metadata.
            adapt_pod(spec, doc["metadata"], suffix=suffix, images=images, host_path=host_path)
        out.append(doc)
    return out


def adapt_pod(spec: dict, pod_meta: dict, *, suffix: str, images: dict, host_path: Path | None) -> None:
    spec["hostNetwork"] = True  # the local hub listens on 127.0.0.1
    if spec.get("initContainers"):
        if spec.get("restartPolicy", "Always") == "Always":
            spec["restartPolicy"] = "OnFailure"  # podman 4.3 restarts exited init containers under Always
        pod_meta.setdefault("annotations", {})[INIT_TYPE] = "always"  # keep them, to read their logs
    for v in spec.get("volumes", []):
        if "secret" in v:
            v["secret"]["secretName"] += suffix
        if "persistentVolumeClaim" in v:
            v["persistentVolumeClaim"]["claimName"] += suffix
        if "hostPath" in v:
            assert host_path is not None, "a hostPath volume needs a directory of the test"
            v["hostPath"]["path"] = str(host_path)
    for c in containers(spec):
        c["image"] = images[TEST_IMAGES[image_name(c["image"])]]  # what kustomize `images:` does
        for source in c.get("envFrom", []):
            source["configMapRef"]["name"] += suffix
        c.pop("ports", None)  # podman 4.3 refuses port mappings on the host's network, even unpublished ones
        for e in c.get("env", []):
            if e["name"] == "PRELOADER_METRICS_ADDR":
                e["value"] = "127.0.0.1:0"  # host networking: any free port, never one the machine uses
        if c["image"] == images["app"]:
            c.setdefault("env", []).append({"name": "APP_PORT", "value": "0"})  # host networking: any free port


def token_secret() -> dict:
    """What `kubectl create secret generic hf-token --from-file=token=...` makes."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": TOKEN_SECRET}, "type": "Opaque",
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()}}


def token_values() -> set[str]:
    # Podman 4.3 mounts a Secret's `data` as it is, base64 and all; Kubernetes decodes it. Either way, what
    # the hub gets must be the mounted file's content.
    return {TOKEN, base64.b64encode(TOKEN.encode()).decode()}


class Kube:
    """What one test played with `podman kube play`, all removed at its end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.suffix = f"-t{uuid.uuid4().hex[:6]}"
        self.files: list[Path] = []
        self.pods: list[str] = []
        self.volumes: list[str] = []
        self.secrets: list[str] = []

    def play(self, label: str, docs: list[dict]) -> None:
        path = self.workdir / f"{label}{self.suffix}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.files.append(path)
        for doc in docs:
            name = doc["metadata"]["name"]
            if doc["kind"] == "PersistentVolumeClaim":
                self.volumes.append(name)
            elif doc["kind"] == "Secret":
                self.secrets.append(name)
            elif pod_spec(doc):
                self.pods.append(pod_name(doc))
        sh("podman", "kube", "play", path, timeout=300)

    def down(self) -> None:
        for path in reversed(self.files):
            sh("podman", "kube", "down", path, check=False)
        for pod in self.pods:
            sh("podman", "pod", "rm", "-f", "--ignore", pod, check=False)
        for name in self.volumes:
            sh("podman", "volume", "rm", "-f", name, check=False)
        for name in self.secrets:
            sh("podman", "secret", "rm", name, check=False)
            sh("podman", "volume", "rm", "-f", name, check=False)  # podman 4.3 keeps the Secret's files in one


def pod_name(doc: dict) -> str:
    """The pod podman makes of a Pod, or of a Deployment (one pod, whatever the replicas)."""
    return doc["metadata"]["name"] + ("-pod-0" if doc["kind"] == "Deployment" else "")


def container(pod: str, name: str) -> str:
    return f"{pod}-{name}"


@pytest.fixture
def kube(images, tmp_path):
    played = Kube(tmp_path)
    yield played
    played.down()


def wait_exited(container_name: str, timeout: float = 120) -> int:
    proc = sh("podman", "wait", container_name, timeout=timeout)
    return int(proc.stdout.strip())


def probe(container_name: str, command: list[str]) -> subprocess.CompletedProcess:
    """A readiness probe's command, as the kubelet runs it: in the container, with its environment."""
    return sh("podman", "exec", container_name, *command, check=False, timeout=60)


def mount(container_name: str, destination: str) -> dict:
    (found,) = [m for m in inspect(container_name)["Mounts"] if m["Destination"] == destination]
    return found


def env_of(container_name: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in inspect(container_name)["Config"]["Env"])


def assert_token_only_reached_the_hub(hub, *container_names: str) -> None:
    seen = {r.request_headers.get("authorization") for r in hub.requests()}
    assert len(seen) == 1 and seen.pop() in {f"Bearer {t}" for t in token_values()}
    for name in container_names:
        text = logs(name) + "\n".join(inspect(name)["Config"]["Env"])
        assert not [t for t in token_values() if t in text], f"the token shows in {name}"


@pytest.mark.slow
def test_init_container_deployment_in_podman(kube, images, hub, mirrors):
    """(a): the init container preloads into the emptyDir; the app then starts on it, offline."""
    deployment = kind_named("Deployment", "hf-app-init")
    docs = for_podman([kind_named("ConfigMap", CONFIG_MAP), token_secret(), deployment],
                      suffix=kube.suffix, images=images, hub_url=hub.url)
    kube.play("init-container", docs)
    pod = pod_name(docs[-1])
    commit = mirrors.sha("model", MODEL, "main")

    preloader_box, app = container(pod, "preloader"), container(pod, "app")
    assert wait_exited(preloader_box) == 0
    assert "preloader: done " in logs(preloader_box)
    info = loaded(wait_for_line(app, "app: loaded "))
    assert info["commit"] == commit and info["offline"] is True
    assert info["snapshot"] == f"/cache/hub/models--org--tiny-model/snapshots/{commit}"
    assert info["model_type"] == "bert" and info["tensors"] > 0
    env = env_of(app)
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"] == "/cache/hub"
    assert "PRELOADER_TOKEN_FILE" not in env
    assert mount(app, "/cache")["RW"] is False
    # The readiness probe, as written in the manifest.
    command = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    proc = probe(app, command)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    fetched = hub.file_gets()
    assert fetched[(MODEL, "model.safetensors")] == 1 and fetched[(MODEL, "config.json")] == 1
    assert fetched[(MODEL, "README.md")] == 0  # the ConfigMap's PRELOADER_INCLUDE reached the preloader
    assert_token_only_reached_the_hub(hub, preloader_box, app)


@pytest.mark.slow
def test_shared_cache_job_and_read_only_consumers_in_podman(kube, images, hub, mirrors):
    """(c): the consumer starts first and waits; the Job (as a Pod) fills the volume; the consumer then
    starts its app on the volume, mounted read-only."""
    config = kind_named("ConfigMap", CONFIG_MAP)
    consumer = kind_named("Deployment", "hf-app-shared")
    first = for_podman([config, kind_named("PersistentVolumeClaim", "hf-cache-shared"), consumer],
                       suffix=kube.suffix, images=images, hub_url=hub.url)
    kube.play("shared-consumer", first)
    app = container(pod_name(first[-1]), "app")
    command = consumer["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]

    time.sleep(2)
    assert inspect(app)["State"]["Running"]
    assert mount(app, "/cache")["RW"] is False
    proc = probe(app, command)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # not ready: nothing in the volume yet
    assert "app: loaded" not in logs(app)
    assert hub.count() == 0  # `preloader wait` uses no network

    job = for_podman([config, token_secret(), kind_named("Job", "hf-cache-fill")],
                     suffix=kube.suffix, images=images, hub_url=hub.url)
    kube.play("shared-fill", job)
    fill = container(pod_name(job[-1]), "preloader")
    assert wait_exited(fill) == 0, logs(fill)
    assert "preloader: done " in logs(fill)

    commit = mirrors.sha("model", MODEL, "main")
    info = loaded(wait_for_line(app, "app: loaded "))
    assert info["commit"] == commit and info["offline"] is True
    assert info["snapshot"] == f"/cache/hub/models--org--tiny-model/snapshots/{commit}"
    assert inspect(app)["State"]["Running"]
    proc = probe(app, command)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in logs(app).splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "read-only" in warnings[0], logs(app)
    fetched = hub.file_gets()
    assert fetched[(MODEL, "model.safetensors")] == 1  # the Job alone downloaded
    assert_token_only_reached_the_hub(hub, fill, app)


@pytest.mark.slow
def test_node_prewarm_pod_template_in_podman(kube, images, hub, mirrors, tmp_path):
    """(b), as far as podman goes: the DaemonSet's pod template as a Pod, on a hostPath directory that is
    root's (as the kubelet makes it): the init container hands it to UID 1000, the preloader fills it and
    stays up (PRELOADER_REFRESH) serving /metrics, the readiness probe says ready, and a stop is exit 0 with
    the textfile written a last time."""
    daemonset = kind_named("DaemonSet", "hf-cache-prewarm")
    node_cache = tmp_path / "node-cache"
    node_cache.mkdir(mode=0o755)
    docs = for_podman([kind_named("ConfigMap", CONFIG_MAP), token_secret(), daemonset],
                      suffix=kube.suffix, images=images, hub_url=hub.url, host_path=node_cache)
    kube.play("node-prewarm", docs)
    pod = pod_name(docs[-1])
    assert wait_exited(container(pod, "cache-owner")) == 0
    main = container(pod, "preloader")
    command = daemonset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]

    deadline = time.monotonic() + 120
    while (proc := probe(main, command)).returncode != 0:
        assert time.monotonic() < deadline, f"never ready: {proc.stdout}{proc.stderr}\n{logs(main)}"
        assert inspect(main)["State"]["Running"], logs(main)
        time.sleep(1)
    commit = mirrors.sha("model", MODEL, "main")
    assert (node_cache / "hub" / "models--org--tiny-model" / "snapshots" / commit / "config.json").is_file()
    st = node_cache.stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (1000, 1000, "0o2775")
    # It stays up: tini, and the preloader itself, serving /metrics after its preload (host networking here).
    wait_for_line(main, "preloader: refresh.waiting every=3600s")
    assert inspect(main)["State"]["Running"]
    top = sh("podman", "top", main, "args").stdout.splitlines()[1:]
    assert [line.strip() for line in top][0] == "tini -- preloader run --"
    assert len(top) == 2 and top[1].strip().endswith("preloader run --")
    assert "preloader: done " in logs(main)
    addr = wait_for_line(main, "preloader: metrics.listen ").split("addr=")[1].split()[0]
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'preloader_repo_state{repo="org/tiny-model",state="complete",type="model"} 1.0' in text
    sh("podman", "stop", "--time=30", main)  # SIGTERM to tini, passed to the preloader
    assert inspect(main)["State"]["ExitCode"] == 0, logs(main)
    # Both hostPath volumes are the test's one directory here: the textfile lies beside the cache.
    assert "preloader_exit_code 0.0" in (node_cache / "hf-preloader.prom").read_text()
    assert_token_only_reached_the_hub(hub, main)


@pytest.mark.slow
def test_podman_cannot_run_jobs_or_daemonsets(podman, tmp_path):
    """Why the Job and the DaemonSet run as Pods above: said in deploy/kubernetes/README.md, checked here,
    so that the README and the tests learn when a podman upgrade can run them."""
    for kind, name in (("Job", "hf-cache-fill"), ("DaemonSet", "hf-cache-prewarm")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(kind_named(kind, name)))
        proc = sh("podman", "kube", "play", path, check=False)
        assert proc.returncode != 0 and "does not contain any supported kube kind" in proc.stderr, proc.stderr


# -- metrics ------------------------------------------------------------------------------------------------------

PODMONITOR = MANIFESTS / "monitoring" / "podmonitor.yaml"


def test_every_preloader_that_downloads_exposes_metrics_and_is_scraped():
    """The port named `metrics` (9400), PRELOADER_METRICS_ADDR on it, and the prometheus.io annotations."""
    scraped = set()
    for doc in workloads():
        spec = pod_spec(doc)
        for c in containers(spec):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "PRELOADER_TOKEN_FILE" not in env:  # not a preloader that downloads
                continue
            assert env["PRELOADER_METRICS_ADDR"] == ":9400", c["name"]
            assert {"name": "metrics", "containerPort": 9400} in c["ports"], c["name"]
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "9400",
                                   "prometheus.io/path": "/metrics"}
            scraped.add(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])
    assert scraped == {"hf-app-init", "hf-cache-fill", "hf-cache-prewarm"}
    (monitor,) = load(PODMONITOR)
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    (selector,) = monitor["spec"]["selector"]["matchExpressions"]
    assert (selector["key"], selector["operator"], set(selector["values"])) == ("app.kubernetes.io/name", "In", scraped)
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "10s"}]
    assert PODMONITOR.name not in yaml.safe_load(KUSTOMIZATION.read_text())["resources"]


def test_the_podmonitor_cannot_be_validated_by_kubernetes_validate():
    """It ships Kubernetes' own schemas only: the PodMonitor is documented as not validated. When a version
    can load the CRD's schema this fails, and the PodMonitor should be validated like the rest."""
    (monitor,) = load(PODMONITOR)
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        kubernetes_validate.validate(monitor, kubernetes_versions()[-1], strict=True)
    assert "not validated" in PODMONITOR.read_text()


def test_the_node_daemonset_writes_the_textfile_for_node_exporter():
    spec = pod_spec(kind_named("DaemonSet", "hf-cache-prewarm"))
    (main,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["PRELOADER_METRICS_FILE"] == "/textfile/hf-preloader.prom"
    assert {"name": "textfile", "mountPath": "/textfile"} in main["volumeMounts"]
    assert volume(spec, "textfile")["hostPath"] == {"path": "/var/lib/hf-preloader/textfile",
                                                    "type": "DirectoryOrCreate"}
    (owner,) = spec["initContainers"]
    assert "/textfile" in owner["command"][-1] and {"name": "textfile", "mountPath": "/textfile"} in owner["volumeMounts"]
