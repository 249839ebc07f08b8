"""An https hub reached only through a real CONNECT proxy (Debian's tinyproxy), as behind a corporate one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from conftest import preloader_env, run_preloader
from test_transfer import BIG, PARALLEL, big_blob, tls_hub, weight_gets  # noqa: F401 (tls_hub: a fixture)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tinyproxy(tmp_path):
    """tinyproxy on a free loopback port, logging every CONNECT it tunnels."""
    if shutil.which("tinyproxy") is None:
        pytest.fail("tinyproxy is not installed: scripts/install-system-deps.sh installs it")
    port, log = free_port(), tmp_path / "tinyproxy.log"
    conf = tmp_path / "tinyproxy.conf"
    # No ConnectPort line: CONNECT to any port (the test hub's is random). No User line: it stays this
    # user, who can write the log in tmp_path.
    conf.write_text(f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nLogFile \"{log}\"\n"
                    "LogLevel Connect\nMaxClients 100\n")
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"tinyproxy did not start: {log.read_text()}")
            time.sleep(0.05)  # polling for the port, not ordering events
    yield f"http://127.0.0.1:{port}", log
    proc.terminate()
    proc.communicate(timeout=10)


def test_an_https_hub_through_a_connect_proxy(tls_hub, tinyproxy, mirrors, cache):  # noqa: F811
    proxy, log = tinyproxy
    # The hub's address is not reachable except through the tunnel's CONNECT: the proxy must be used.
    env = preloader_env(tls_hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, SSL_CERT_FILE=str(tls_hub.cert),
                        HTTPS_PROXY=proxy, NO_PROXY="", no_proxy="", **PARALLEL)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    gets = weight_gets(tls_hub)
    assert len(gets) > 4 and {r.status for r in gets} == {206}
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]
    tunnels = [line for line in log.read_text().splitlines() if "CONNECT" in line and f":{tls_hub.port}" in line]
    assert tunnels, log.read_text()[-2000:]
