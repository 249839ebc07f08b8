"""Fast, resumable, checked transfers: real olah behind our proxy, which honours Range like the hub's CDN."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, preloader_env, run_preloader

BIG = "org/big-model"
SIZE = 12 * 1024 * 1024
PARALLEL = {"PRELOADER_PARALLEL_THRESHOLD": "1MiB", "PRELOADER_CONNECTIONS": "4"}


def big_blob(cache: Path, mirrors) -> bytes:
    commit = mirrors.sha("model", BIG, "main")
    return (cache / "models--org--big-model" / "snapshots" / commit / "model.safetensors").read_bytes()


def weight_gets(hub):
    return [r for r in hub.requests(method="GET", path_contains="/big-model/resolve/")
            if r.path.endswith("model.safetensors")]


def test_multi_connection_download_uses_ranges_and_lands_in_the_hub_layout(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, **PARALLEL)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    gets = weight_gets(hub)
    assert len(gets) > 4 and {r.status for r in gets} == {206}
    assert all(r.request_headers.get("range", "").startswith("bytes=") for r in gets)
    assert sum(r.body_bytes for r in gets) == SIZE  # every byte once
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]
    # The ordinary cache layout: a blob named by its sha256, a relative snapshot link.
    import hashlib

    data = mirrors.files("model", BIG, "main")["model.safetensors"]
    blob = cache / "models--org--big-model" / "blobs" / hashlib.sha256(data).hexdigest()
    assert blob.is_file()
    link = cache / "models--org--big-model" / "snapshots" / mirrors.sha("model", BIG, "main") / "model.safetensors"
    assert os.readlink(link) == f"../../blobs/{blob.name}"
    from huggingface_hub import hf_hub_download, scan_cache_dir

    assert scan_cache_dir(cache).warnings == []
    assert hf_hub_download(BIG, "model.safetensors", cache_dir=cache, local_files_only=True) == str(link)
    leftovers = [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]
    assert leftovers == [] and not list((cache.parent / "preloader" / "transfers").rglob("*.json"))


def test_server_ignoring_range_falls_back_to_one_stream(hub, mirrors, cache):
    from localhub import IgnoreRange

    hub.add_rule(lambda m, p: m == "GET" and "/big-model/resolve/" in p, IgnoreRange(times=None))
    proc = run_preloader(["run"], preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, **PARALLEL))
    assert proc.returncode == 0, proc.stderr
    gets = weight_gets(hub)
    assert [r.status for r in gets] == [200]
    assert gets[0].body_bytes == SIZE
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def on_disk(cache: Path) -> int:
    """Bytes of the big file the preloader's range map says are on disk (0 if no map yet)."""
    import json

    for state in (cache.parent / "preloader" / "transfers").rglob("*.json"):
        try:
            data = json.loads(state.read_text())
        except ValueError:
            continue
        if data["size"] == SIZE:
            return len(data["done"]) * data["chunk"] + sum(data["partial"].values())
    return 0


def test_kill_9_mid_file_then_resume_fetches_only_the_rest(hub, mirrors, cache):
    from localhub import Drip

    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, **PARALLEL)
    drip = hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith("model.safetensors"),
                        Drip(1_000_000))
    proc = subprocess.Popen([sys.executable, "-m", "preloader", "run"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while (recorded := on_disk(cache)) < SIZE // 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list((cache / "models--org--big-model" / "blobs").glob("*.incomplete"))
    assert len(partial) == 1
    assert not list((cache.parent / "preloader" / "complete").rglob("*.json"))  # never marked complete
    commit = mirrors.sha("model", BIG, "main")
    assert not (cache / "models--org--big-model" / "snapshots" / commit / "model.safetensors").exists()

    hub.remove_rule(drip)
    hub.reset()
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    second = sum(r.body_bytes for r in weight_gets(hub))
    assert second <= SIZE - recorded  # only what the range map did not have
    assert second < SIZE * 0.6
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]
    assert not list((cache / "models--org--big-model" / "blobs").glob("*.incomplete"))


@pytest.mark.parametrize("extra", [PARALLEL, {}], ids=["parallel", "single"])
def test_wrong_bytes_are_caught_retried_and_never_published(hub, mirrors, cache, extra):
    from localhub import WrongBytes

    rule = hub.add_rule(lambda m, p: m == "GET" and p.endswith("/config.json") or
                        (m == "GET" and p.endswith("model.safetensors") and "big-model" in p), WrongBytes(times=1))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_RETRIES="3", **extra)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    assert rule.action.fired == 1
    assert "do not match the etag" in proc.stderr and "warning: retry" in proc.stderr
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def test_wrong_bytes_every_time_fail_without_publishing(hub, mirrors, cache):
    from localhub import WrongBytes

    hub.add_rule(lambda m, p: m == "GET" and p.endswith("/config.json"), WrongBytes(times=None))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_RETRIES="2")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 75
    blobs = cache / "models--org--big-model" / "blobs"
    import hashlib

    good = mirrors.files("model", BIG, "main")["config.json"]
    git_id = hashlib.sha1(b"blob %d\0" % len(good) + good).hexdigest()
    assert not (blobs / git_id).exists()
    assert not list((cache.parent / "preloader" / "complete").rglob("*.json"))


def test_hub_transfer_mode_uses_huggingface_hub(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_TRANSFER="hub")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    assert hub.count(method="HEAD", path_contains="/big-model/resolve/") >= 2  # huggingface_hub's HEAD per file
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def test_disk_space_preflight_exits_74_before_writing(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_MIN_FREE="100000T")
    proc = run_preloader(["run", "--", "true"], env)
    assert proc.returncode == 74
    needed = sum(len(c) for c in mirrors.files("model", BIG, "main").values())
    assert "not enough space" in proc.stderr and f"needs {needed:,} bytes" in proc.stderr
    assert hub.file_gets() == {}
    assert not (cache / "models--org--big-model" / "blobs").exists() or not any(
        (cache / "models--org--big-model" / "blobs").iterdir())


def test_disk_full_on_a_small_tmpfs(hub, mirrors, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if rc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {rc.stderr.decode().strip()}")
    try:
        cache = mount / "hub"
        env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_MIN_FREE="1MiB")
        proc = run_preloader(["run", "--", "true"], env)
        assert proc.returncode == 74
        assert "not enough space" in proc.stderr
        assert hub.file_gets() == {}
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_progress_lines_off_a_tty(hub, mirrors, cache, monkeypatch):
    """Off a TTY each repo ends with one progress line, however fast its download beat the interval."""
    monkeypatch.setattr("preloader.preloading.progress.LOG_EVERY", 3600.0)  # the ticker never fires: only the end
    import logging

    import preloader
    from preloader import logs

    logs.setup()
    lines = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append((record.msg, getattr(record, "fields", {})))

    capture = Capture()
    logging.getLogger("preloader").addHandler(capture)
    try:
        preloader.preload(models=f"{BIG},org/tiny-model", cache_dir=cache, endpoint=hub.url, retries=1)
    finally:
        logging.getLogger("preloader").removeHandler(capture)
    progress = [fields for msg, fields in lines if msg == "progress"]
    assert [p["repo"] for p in progress] == [BIG, "org/tiny-model"]
    assert progress[0]["bytes"] == progress[0]["of"] > 0  # the end of the first repo, said as it ended
    assert 0 < progress[1]["bytes"] <= progress[1]["of"]  # a blob linked from the first one is not received
    assert {"bytes", "of", "rate", "eta"} <= set(progress[-1])


def test_hub_giving_out_keeps_the_ranges_for_the_next_run(hub, mirrors, cache):
    from localhub import CutAfter

    rule = hub.add_rule(lambda m, p: m == "GET" and "big-model/resolve" in p and p.endswith("model.safetensors"),
                        CutAfter(600_000, times=None))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_RETRIES="2", **PARALLEL)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 75, proc.stderr
    assert len(list((cache / "models--org--big-model" / "blobs").glob("*.incomplete"))) == 1
    kept = on_disk(cache)
    assert kept > SIZE // 4
    hub.remove_rule(rule)
    hub.reset()
    assert run_preloader(["run"], env).returncode == 0
    assert sum(r.body_bytes for r in weight_gets(hub)) <= SIZE - kept
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def test_a_chunk_saved_whole_in_the_partial_map_counts_as_done(tmp_path):
    """Its last read landed before it moved to `done`: resuming must not ask for zero bytes (a 416)."""
    import json

    from preloader.hub.rangemap import RangeMap

    size, chunk = 3 * 1024 * 1024 + 10, 1024 * 1024
    partial = tmp_path / "blob.incomplete"
    partial.write_bytes(b"\0" * size)
    ranges = RangeMap(tmp_path / "map.json", "a" * 64, size, chunk)
    ranges.path.write_text(json.dumps({"etag": "a" * 64, "size": size, "chunk": chunk, "done": [0],
                                       "partial": {"1": chunk, "2": 5, "3": 10}}))
    assert ranges.load(partial)
    assert ranges.done == {0, 1, 3} and ranges.partial[2] == 5
    assert ranges.bounds(2) == (2 * chunk + 5, 3 * chunk - 1)


def test_a_range_map_of_another_file_is_not_used(tmp_path):
    """A map left by another etag, size or chunk size, or beside a partial file of the wrong size, is ignored."""
    import json

    from preloader.hub.rangemap import RangeMap

    size, chunk = 2 * 1024 * 1024, 1024 * 1024
    partial = tmp_path / "blob.incomplete"
    partial.write_bytes(b"\0" * size)
    saved = {"etag": "b" * 64, "size": size, "chunk": chunk, "done": [0], "partial": {}}
    (tmp_path / "map.json").write_text(json.dumps(saved))
    assert not RangeMap(tmp_path / "map.json", "a" * 64, size, chunk).load(partial)
    (tmp_path / "map.json").write_text(json.dumps(saved | {"etag": "a" * 64}))
    assert RangeMap(tmp_path / "map.json", "a" * 64, size, chunk).load(partial)
    partial.write_bytes(b"\0" * (size - 1))
    assert not RangeMap(tmp_path / "map.json", "a" * 64, size, chunk).load(partial)


def test_chunks_go_straight_to_the_cdn_and_the_token_stays_with_the_hub(hub, mirrors, cache):
    """As the public hub does: a file GET answers 302 to a CDN on another origin. After the first
    request, chunks go to the CDN directly; an expired CDN URL (403) is asked for again through the hub."""
    import itertools

    from localhub import RedirectToCdn, Status

    token = "hf_cdnTestToken0123456789"
    cdn_gets = itertools.count()
    hub.add_rule(lambda m, p: m == "GET" and p.startswith("/cdn/") and p.endswith("model.safetensors")
                 and next(cdn_gets) == 3, Status(403, times=1))  # the signed URL expired, once, mid-file
    hub.add_rule(lambda m, p: m == "GET" and "/resolve/" in p and not p.startswith("/cdn/"),
                 RedirectToCdn(f"http://localhost:{hub.port}"))
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, RUNPOD_HUGGINGFACE_USER="alice",
                        RUNPOD_HUGGINGFACE_TOKEN=token, **PARALLEL)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    gets = weight_gets(hub)
    via_hub = [r for r in gets if not r.path.startswith("/cdn/")]
    cdn = [r for r in gets if r.path.startswith("/cdn/")]
    assert {r.status for r in via_hub} == {302}
    # The first chunk, and again after the 403 (by each connection that raced to it); not once per chunk.
    assert 2 <= len(via_hub) <= 1 + int(PARALLEL["PRELOADER_CONNECTIONS"]) < len(cdn) - 1
    assert sum(r.body_bytes for r in cdn if r.status == 206) == SIZE
    assert all(r.request_headers.get("authorization") == f"Bearer {token}" for r in via_hub)
    assert not [r for r in hub.requests() if r.path.startswith("/cdn/") and "authorization" in r.request_headers]
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def test_http_proxy_from_the_environment_carries_every_request(hub, mirrors, cache):
    """A hub reachable only through a forward proxy (HTTP_PROXY with credentials), as behind a corporate one."""
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, HF_ENDPOINT="http://hub.preloader-test.invalid",
                        HTTP_PROXY=f"http://bob:s%40cret@127.0.0.1:{hub.port}", NO_PROXY="", no_proxy="",
                        **PARALLEL)
    env.pop("http_proxy", None)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    seen = hub.requests()
    assert any("/api/models/org/big-model/revision/main" in r.path for r in seen)
    assert len(weight_gets(hub)) > 4
    import base64

    expected = "Basic " + base64.b64encode(b"bob:s@cret").decode()
    assert {r.request_headers.get("proxy-authorization") for r in seen} == {expected}
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def test_read_buffers_share_a_fixed_budget():
    from preloader.hub.transfer import BUFFER_BUDGET, READ_SIZE, read_size_for

    assert read_size_for(8) == READ_SIZE
    assert read_size_for(64) * 64 <= BUFFER_BUDGET
    assert read_size_for(8 * 64) * 8 * 64 <= BUFFER_BUDGET  # 8 files at once, 64 connections each
    assert read_size_for(10_000) == 64 * 1024  # a floor: reads stay worth a system call


@pytest.fixture
def tls_hub(olah, tmp_path):
    """The same proxy over https, with a certificate from a private CA (as inside many companies)."""
    import ssl

    from localhub import HubProxy

    cert, key = tmp_path / "hub.pem", tmp_path / "hub.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy = HubProxy(olah.url, tls=context)
    proxy.cert = cert
    yield proxy
    proxy.stop()


def test_https_hub_with_a_private_ca(tls_hub, mirrors, cache):
    env = preloader_env(tls_hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, SSL_CERT_FILE=str(tls_hub.cert), **PARALLEL)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    gets = weight_gets(tls_hub)
    assert len(gets) > 4 and {r.status for r in gets} == {206}
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]


def test_an_untrusted_certificate_fails_fast_with_77(tls_hub, cache):
    env = preloader_env(tls_hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_RETRIES="5", **PARALLEL)
    env.pop("SSL_CERT_FILE", None)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 77, proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert "certificate of 127.0.0.1" in error and "not trusted" in error and "SSL_CERT_FILE" in error
    assert "Traceback" not in proc.stderr and "retry" not in proc.stderr  # no retries: it will not get better
    assert tls_hub.count() == 0  # no request got through the handshake
    assert not (cache / "models--org--big-model" / "blobs").exists()


def test_run_verify_repair_and_prune_agree_on_every_path(hub, mirrors, cache, tmp_path):
    """One Layout from the settings: `verify --repair` keeps its range maps where `run` does (the state
    dir, here a custom one), with the same transfer options, and `prune` finds and removes them there."""
    from localhub import CutAfter

    state = tmp_path / "state"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BIG, PRELOADER_STATE_DIR=str(state), **PARALLEL)
    assert run_preloader(["run"], env).returncode == 0
    commit = mirrors.sha("model", BIG, "main")
    blob = (cache / "models--org--big-model" / "snapshots" / commit / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[: SIZE // 2])  # truncated: verify finds it, --repair fetches it
    hub.reset()
    hub.add_rule(lambda m, p: m == "GET" and "/big-model/resolve/" in p, CutAfter(256 * 1024, times=None))
    proc = run_preloader(["verify", "--repair"], env)
    assert proc.returncode == 75, proc.stderr  # the hub gave out mid-repair: the ranges stay for the next try
    gets = weight_gets(hub)
    assert len(gets) > 1 and all(r.request_headers.get("range") for r in gets)  # --connections was honoured
    maps = list((state / "transfers").rglob("*.json"))
    assert [m.name for m in maps] == [f"{blob.name}.json"]
    assert not (cache / ".locks" / "preloader").exists()  # nothing under the state dir's old fallback
    partial = blob.with_name(blob.name + ".incomplete")
    assert partial.exists()
    proc = run_preloader(["prune", "--grace", "0s", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert not partial.exists() and not maps[0].exists()
    hub.clear_rules()
    assert run_preloader(["run"], env).returncode == 0  # the record went with the damage: fetched again
    assert big_blob(cache, mirrors) == mirrors.files("model", BIG, "main")["model.safetensors"]
