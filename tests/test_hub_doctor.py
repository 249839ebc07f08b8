"""`preloader doctor` reaches the hub through the transfer's own client: its certificates, proxy, token and
user agent, so that what doctor says is what a download will meet."""

from __future__ import annotations

import json

from conftest import preloader_env, run_preloader
from test_proxy_tunnel import tinyproxy  # noqa: F401 (a fixture)
from test_transfer import tls_hub  # noqa: F401 (a fixture)

TOKEN = "hf_doctorprobe123"


def doctor(env) -> dict:
    proc = run_preloader(["doctor", "--json"], env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def probes(hub) -> list:
    return hub.requests(method="GET", path_contains="/api/models")


def test_doctor_trusts_a_private_ca_from_ssl_cert_file_and_sends_the_token(tls_hub, cache):  # noqa: F811
    env = preloader_env(tls_hub, cache, SSL_CERT_FILE=str(tls_hub.cert), HF_TOKEN=TOKEN)
    checks = doctor(env)
    assert checks["hub reachable"]["status"] == "ok", checks["hub reachable"]
    assert checks["hub reachable"]["detail"] == f"{tls_hub.url} answered HTTP 200"
    [probe] = probes(tls_hub)
    # The transfer's client: its user agent and the token (urllib sent neither).
    assert probe.request_headers["user-agent"].startswith("preloader/")
    assert probe.request_headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in json.dumps(checks)


def test_doctor_names_an_untrusted_certificate_and_its_fix(tls_hub, cache):  # noqa: F811
    env = preloader_env(tls_hub, cache)
    env.pop("SSL_CERT_FILE", None)
    check = doctor(env)["hub reachable"]
    assert check["status"] == "fail"
    assert "certificate of 127.0.0.1" in check["detail"] and "not trusted" in check["detail"]
    assert check["fix"] == "point SSL_CERT_FILE at a bundle with its CA"
    assert probes(tls_hub) == []  # nothing got through the handshake


def test_doctor_goes_through_the_https_proxy(tls_hub, tinyproxy, cache):  # noqa: F811
    proxy, log = tinyproxy
    env = preloader_env(tls_hub, cache, SSL_CERT_FILE=str(tls_hub.cert), HTTPS_PROXY=proxy, NO_PROXY="",
                        no_proxy="")
    check = doctor(env)["hub reachable"]
    assert check["status"] == "ok", check
    assert len(probes(tls_hub)) == 1
    tunnels = [line for line in log.read_text().splitlines() if "CONNECT" in line and f":{tls_hub.port}" in line]
    assert tunnels, log.read_text()[-2000:]


def test_doctor_reports_an_unreachable_hub(cache):
    class Nowhere:
        url = "http://127.0.0.1:9"  # discard: nothing listens

    check = doctor(preloader_env(Nowhere, cache, PRELOADER_READ_TIMEOUT="5"))["hub reachable"]
    assert check["status"] == "fail" and check["detail"].startswith("http://127.0.0.1:9: cannot reach 127.0.0.1:9")
    assert "HTTPS_PROXY" in check["fix"]
