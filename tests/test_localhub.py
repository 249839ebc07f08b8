"""Tests of the localhub test harness: mirrors, olah, the counting proxy, the CLI."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # localhub is not installed; it lives at the repo root
    sys.path.insert(0, str(ROOT))

from huggingface_hub import snapshot_download  # noqa: E402
from huggingface_hub.errors import RepositoryNotFoundError  # noqa: E402

from localhub import Action, HubProxy, Stall, Status, build_mirrors, free_port, parse_resolve, start_olah  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(mirrors, olah, proxy) shared by the module; the proxy is reset per use."""
    base = tmp_path_factory.mktemp("localhub")
    mirrors = build_mirrors(base)
    with start_olah(mirrors.mirrors_dir, base / "olah") as olah, HubProxy(olah.url) as proxy:
        yield mirrors, olah, proxy


@pytest.fixture
def proxy(hub):
    proxy = hub[2]
    proxy.reset()
    proxy.clear_rules()
    yield proxy
    proxy.clear_rules()


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy env vars


def _get(url: str, method: str = "GET", timeout: float = 10):
    """(status, headers, body) without raising on HTTP errors."""
    try:
        with _DIRECT.open(urllib.request.Request(url, method=method), timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_mirror_refs_are_distinct_and_deterministic(hub, tmp_path):
    mirrors = hub[0]
    sha = mirrors.sha
    assert len({sha("model", "org/tiny-model", r) for r in ("main", "dev", "v1.0")}) == 3
    assert len({sha("dataset", "org/tiny-data", r) for r in ("main", "dev", "v1.0")}) == 3
    v1, dev = (mirrors.files("model", "org/tiny-model", r) for r in ("v1.0", "dev"))
    assert v1["model.safetensors"] != dev["model.safetensors"]
    assert v1["config.json"] != dev["config.json"]
    assert {"sub/extra.txt", "pytorch_model.bin", "model.safetensors"} <= set(
        mirrors.filenames("model", "org/second-model", "main")
    )
    # The signed repos carry signatures made with keys generated for each build (localhub/signed.py): only
    # they may differ from one build to the next.
    from localhub.signed import CERT_SIGNED, EXTRA, SHARDED, SIGNED, TAMPERED

    fresh = {SIGNED, TAMPERED, EXTRA, CERT_SIGNED, SHARDED}

    def stable(commits: dict) -> dict:
        return {key: sha for key, sha in commits.items() if key[1] not in fresh}

    again = build_mirrors(tmp_path).commits
    assert stable(again) == stable(mirrors.commits)
    assert {key[:2] for key in again} == {key[:2] for key in mirrors.commits}


@pytest.mark.parametrize(
    "repo_type,repo_id,revision",
    [
        ("model", "org/tiny-model", "main"),
        ("model", "org/tiny-model", "dev"),
        ("model", "org/tiny-model", "v1.0"),
        ("dataset", "org/tiny-data", "v1.0"),
    ],
)
def test_snapshot_download_through_proxy(hub, proxy, tmp_path, repo_type, repo_id, revision):
    mirrors = hub[0]
    path = Path(
        snapshot_download(
            repo_id, repo_type=repo_type, revision=revision, cache_dir=tmp_path, token=False, endpoint=proxy.url
        )
    )
    expected = mirrors.files(repo_type, repo_id, revision)
    assert path.name == mirrors.sha(repo_type, repo_id, revision)
    got = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert got == expected
    # A cold cache fetches every file exactly once (LFS files are not re-fetched).
    assert proxy.file_gets() == Counter({(repo_id, name): 1 for name in expected})
    assert proxy.body_bytes("GET", "/resolve/") == sum(map(len, expected.values()))


def test_unknown_repo_is_repository_not_found(proxy, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/no-such-model", cache_dir=tmp_path, token=False, endpoint=proxy.url)


def test_head_passes_etag_and_commit(hub, proxy):
    mirrors = hub[0]
    status, headers, _ = _get(proxy.url + "/org/tiny-model/resolve/v1.0/model.safetensors", "HEAD")
    assert status == 200
    assert headers["x-repo-commit"] == mirrors.sha("model", "org/tiny-model", "v1.0")
    assert len(headers["etag"].strip('"')) == 64  # LFS file: sha256, as on the Hub
    assert int(headers["content-length"]) == len(mirrors.files("model", "org/tiny-model", "v1.0")["model.safetensors"])


def test_status_rule_fires_then_passes_through(proxy):
    proxy.add_rule(
        lambda method, path: path.endswith("/config.json"), Status(503, times=1, headers={"Retry-After": "1"})
    )
    url = proxy.url + "/org/tiny-model/resolve/main/config.json"
    status, headers, _ = _get(url)
    assert (status, headers["Retry-After"]) == (503, "1")
    status, _, body = _get(url)
    assert status == 200 and b'"model_type": "bert"' in body
    assert [r.status for r in proxy.requests("GET", "config.json")] == [503, 200]
    assert proxy.requests()[0].fault.startswith("Status(503")


def test_stall_closes_without_answer(proxy):
    proxy.add_rule("revision/main", Stall(0.3))
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _DIRECT.open(proxy.url + "/api/models/org/tiny-model/revision/main", timeout=5)
    assert time.monotonic() - t0 >= 0.3
    assert proxy.requests()[0].status is None
    assert _get(proxy.url + "/api/models/org/tiny-model/revision/main")[0] == 200


def test_upstream_down_gives_502_and_stop_cuts_keepalive():
    with HubProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.request("GET", "/api/models/org/tiny-model/revision/main")
        resp = conn.getresponse()
        assert resp.status == 502
        resp.read()
        t0 = time.monotonic()
        proxy.stop()  # the client still holds a kept-alive connection
        assert time.monotonic() - t0 < 2
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/x")
        conn.getresponse()


def test_action_that_stops_body_early_cuts_the_connection(proxy):
    class Cut(Action):  # how later body faults plug in
        def body(self, ex, chunks):
            yield next(chunks)[:10]

    proxy.add_rule("model.safetensors", Cut(times=1))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/org/tiny-model/resolve/main/model.safetensors")
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    assert (proxy.requests()[0].status, proxy.body_bytes()) == (200, 10)


def test_olah_restart_behind_proxy(hub, proxy):
    olah = hub[1]
    assert _get(proxy.url + "/api/datasets/org/tiny-data/revision/dev")[0] == 200
    olah.restart()  # the proxy's kept-alive upstream connection is now stale
    assert _get(proxy.url + "/api/datasets/org/tiny-data/revision/dev")[0] == 200


def test_parse_resolve():
    assert parse_resolve("/org/m/resolve/main/a/b.txt") == ("org/m", "main", "a/b.txt")
    assert parse_resolve("/datasets/org/d/resolve/v1.0/data/x.jsonl") == ("org/d", "v1.0", "data/x.jsonl")
    assert parse_resolve("/gpt2/resolve/abc/config.json") == ("gpt2", "abc", "config.json")
    assert parse_resolve("/api/models/org/m/revision/main") is None


def test_cli_serve(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "localhub", "serve", "--root", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("localhub: serving http://127.0.0.1:")
        url = line.split()[-1]
        assert _get(url + "/api/models/org/second-model/revision/main")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_tiny_model_loads_with_transformers(hub, tmp_path):
    transformers = pytest.importorskip("transformers")
    mirrors = hub[0]
    for revision, layers in (("main", 1), ("dev", 2)):
        # Load the served bytes, not the checkout (which holds LFS pointers).
        target = tmp_path / revision
        for name, data in mirrors.files("model", "org/tiny-model", revision).items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
        model, info = transformers.BertModel.from_pretrained(target, output_loading_info=True)
        assert model.config.num_hidden_layers == layers
        assert not any(info.values()), info  # no missing/unexpected/mismatched keys
