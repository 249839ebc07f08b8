"""What the real-container tests share (test_containers.py, test_kubernetes.py): podman with the project's own
configuration, the images, and helpers to run and inspect containers.

Podman's configuration is the project's own, .containers/containers.conf (scripts/containers-conf.sh writes
it), passed to every podman and docker-compose process in CONTAINERS_CONF: the tests never read or change
the machine's /etc/containers/containers.conf.

On CI (CI set, not "false") a missing tool fails the tests that need it: `make test` installs them with
scripts/install-system-deps.sh. Elsewhere, without root or podman, they skip and say why.

Each test module has its own two session fixtures, `podman` and `images`, that call `podman_ready()`
and `build_images()` here: those remember their result, so the images are built once per session,
whichever module asks first.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time

import pytest
from conftest import ROOT

MODEL = "org/tiny-model"
COMPOSE_DIR = ROOT / "compose"
BASE_IMAGE = "localhost/preloader-base:bookworm"
IMAGE = "localhost/preloader-test:latest"
APP_IMAGE = "localhost/preloader-test-app:latest"
TOOLS = ("podman", "runc", "debootstrap")  # what every container test needs; compose tests need docker-compose too
CONTAINERS_CONF = ROOT / ".containers" / "containers.conf"  # git-ignored; scripts/containers-conf.sh writes it


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def cannot_run(reason: str):
    """Fail on CI, where these tests must run; skip elsewhere, saying why."""
    reason += "; install with `sudo scripts/install-system-deps.sh` (make test does it as root)"
    if on_ci():
        pytest.fail(f"container tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def podman_env(env: dict | None = None) -> dict:
    """`env` (default: this process's) with CONTAINERS_CONF: podman reads our file, not /etc/containers/'s."""
    return {**(os.environ if env is None else env), "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def sh(*args, check=True, timeout=300, env=None, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=podman_env(env), **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def pip_index_args() -> list[str]:
    """This machine's package index, if it is not the default, as build args of the build stage only.

    Only http(s) URLs: the host's file:// indexes and find-links do not exist inside the build.
    """
    args = []
    for name, key in (("PIP_INDEX_URL", "global.index-url"), ("PIP_EXTRA_INDEX_URL", "global.extra-index-url")):
        value = os.environ.get(name) or sh(shutil.which("pip") or "pip", "config", "get", key, check=False).stdout
        urls = [u for u in value.split() if u.startswith(("http://", "https://"))]
        if urls:
            args += ["--build-arg", f"{name}={' '.join(urls)}"]
    return args


# -- what the session fixtures call: tools, images -------------------------------------------------------------


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        cannot_run(f"missing {', '.join(missing)}")


@functools.cache
def podman_ready() -> str:
    """podman's path, once it works with our configuration; else skip (fail on CI). A skip is not cached."""
    require_tools(*TOOLS)
    if os.geteuid() != 0:
        cannot_run("rootful podman needs root")
    sh(ROOT / "scripts" / "containers-conf.sh", CONTAINERS_CONF)
    info = sh("podman", "info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        cannot_run(f"podman does not work here: {info.stderr.strip()}")
    return shutil.which("podman")


@functools.cache
def build_images() -> dict[str, str]:
    """Build the base, preloader and example app images, once per session; return their names."""
    podman_ready()
    sh(ROOT / "scripts" / "base-image.sh", BASE_IMAGE, timeout=600)
    build = ["podman", "build", "--pull=never", "--network=host", "--quiet"]
    sh(*build, "-f", ROOT / "docker" / "Dockerfile", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
       *pip_index_args(), "-t", IMAGE, ROOT, timeout=900)
    sh(*build, "--build-arg", f"PRELOADER_IMAGE={IMAGE}", "-t", APP_IMAGE, COMPOSE_DIR / "app")
    return {"preloader": IMAGE, "app": APP_IMAGE}


# -- helpers -------------------------------------------------------------------------------------------------


def inspect(container: str) -> dict:
    return json.loads(sh("podman", "inspect", container).stdout)[0]


def logs(container: str) -> str:
    proc = sh("podman", "logs", container)
    return proc.stdout + proc.stderr


def wait_for_line(container: str, prefix: str, timeout: float = 60) -> str:
    """The first line of the container's output that starts with `prefix`."""
    deadline = time.monotonic() + timeout
    while True:
        text = logs(container)
        found = [line for line in text.splitlines() if line.startswith(prefix)]
        if found:
            return found[0]
        state = inspect(container)["State"]
        if not state["Running"] or time.monotonic() > deadline:
            raise AssertionError(f"no {prefix!r} line from {container} (running={state['Running']}):\n{text}")
        time.sleep(0.2)


def wait_until_running(container: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not inspect(container)["State"]["Running"]:
        assert time.monotonic() < deadline, f"{container} never ran"
        time.sleep(0.1)


def loaded(line: str) -> dict:
    """The JSON of the example app's `app: loaded {...}` line."""
    return json.loads(line.removeprefix("app: loaded "))
