"""Benchmark: preloader's transfer engine against `hf download` and the raw limit, over a local CDN, in one run.

    .venv/bin/python bench/transfer.py [--size 2G] [--shards 4] [--runs 3] [--rate 40m]

Sets up, on loopback only (127.0.0.1), all of it torn down at the end (also on Ctrl-C):
  - nginx (Debian's, apt-installed if missing, with its stream module and curl) as the CDN, its own prefix in a
    temp dir, serving generated repos by sha256 name with `sendfile on`, on two ports, one per link profile:
      unlimited: plain loopback;  capped: a CDN's per-connection limit, as nginx's stream proxy
      `proxy_download_rate <rate>` in front of a second http server (see `Nginx` for why not `limit_rate`);
  - `bench/hubfront.py`, one per profile: the hub API for the repos, and HEAD/GET /<id>/resolve/... answered
    with a 302 to that profile's nginx port plus the headers the public hub sends;
  - two generated repos: `bench/model` (--size bytes in --shards safetensors shards, an index, a config) and
    `bench/single` (one --size file, for peak memory by connection count and the resume of one file).
Then, per profile, --runs repetitions, cases interleaved, each into a fresh cache, page cache dropped before
each run when permitted (the source files are read back in, so the CDN serves from RAM):
  - `hf download` (huggingface_hub as installed: 8 files at once, one plain HTTP stream each, no hf_transfer);
  - `preloader run` cold with PRELOADER_CONNECTIONS 8 (default) and 16;
  - `hf_transfer.download` as huggingface_hub < 1.0 drove it with HF_HUB_ENABLE_HF_TRANSFER=1 (files 8 at
    a time, max_files=100, 10 MiB chunks; no hash check): an extra row;
  - raw limit: curl processes with byte ranges, the same bytes to the same disk, 8 connections in all and 8 per
    file; the faster is the limit;
  - resume: `preloader run`, kill -9 once nginx has logged half the bytes, run again; bytes re-fetched =
    bytes nginx sent to both runs - the file bytes, from nginx's access logs (http `$body_bytes_sent`,
    stream `$bytes_sent`).
And peak RSS (os.wait4's ru_maxrss of the process) of `preloader run` on the single file with 1, 8 and 32
connections. Prints one Markdown table per profile, the resume and memory figures, and PASS/FAIL per goal.
Times are whole processes (start-up included); MB = 10^6 bytes. bench/README-transfer.md has a measured run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# hf_transfer is no dependency of the preloader (the `bench` extra brings it): measured when installed.
HAS_HF_TRANSFER = importlib.util.find_spec("hf_transfer") is not None
BIN = Path(sys.executable).parent
BLOCK = 8 * 1024 * 1024
MODEL, SINGLE = "bench/model", "bench/single"
LOG_LINE = re.compile(r'^(\d+) (\d+) (\d+) "([^"]*)"')
CHILDREN: set[subprocess.Popen] = set()  # running benchmark processes, killed on the way out
CPU = [0.0]  # CPU seconds (user + system) of the measured processes, summed; read and reset per case


# -- set-up ---------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)(i?B?)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 2G, 512M")
    return int(float(m[1]) * 1024 ** " KMGT".index((m[2] or " ").upper()))


def nginx_rate_bytes(rate: str) -> int:
    """nginx's size units: k and m are 1024-based."""
    m = re.fullmatch(r"(\d+)([kKmM]?)", rate)
    if not m:
        raise SystemExit(f"--rate {rate!r}: use nginx units, e.g. 40m")
    return int(m[1]) * {"": 1, "k": 1024, "m": 1024 ** 2}[m[2].lower()]


def ensure_tools() -> str:
    """nginx (with its stream module) and curl from Debian, installed if missing; returns nginx's path."""
    def nginx_path() -> str | None:
        return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)

    if nginx_path() is None or shutil.which("curl") is None or not os.path.exists(STREAM_MODULE):
        print("installing nginx, its stream module and curl (apt-get)...", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        for package in ("nginx-light", "nginx"):  # the small build is enough; Debian 13 only has `nginx`
            if subprocess.run(["apt-get", "install", "-y", "-qq", package, "libnginx-mod-stream", "curl"],
                              env=env).returncode == 0:
                break
    path = nginx_path()
    if path is None or shutil.which("curl") is None or not os.path.exists(STREAM_MODULE):
        raise SystemExit("nginx, libnginx-mod-stream or curl could not be installed")
    return path


def safetensors_header(size: int, name: str) -> bytes:
    """A valid safetensors header for one uint8 tensor filling the rest of a `size`-byte file."""
    for pad in range(8):
        meta = {"__metadata__": {"format": "pt"}, name: {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}
        text = json.dumps(meta)
        n = -(-len(text) // 8) * 8 + 8 * pad
        data = size - 8 - n
        meta[name].update(shape=[data], data_offsets=[0, data])
        text = json.dumps(meta)
        if len(text) <= n:
            return len(text.ljust(n)).to_bytes(8, "little") + text.ljust(n).encode()
    raise AssertionError("header does not fit")


def write_file(data_dir: Path, content_head: bytes, size: int) -> tuple[str, Path]:
    """Random bytes after `content_head`, hashed as written; stored under its sha256 (the CDN name)."""
    tmp = data_dir / f".gen-{os.getpid()}"
    digest = hashlib.sha256(content_head)
    with open(tmp, "wb") as out:
        out.write(content_head)
        left = size - len(content_head)
        while left:
            block = os.urandom(min(BLOCK, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    sha = digest.hexdigest()
    tmp.rename(data_dir / sha)
    return sha, data_dir / sha


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id, not security


def lfs_entry(path: str, sha: str, size: int) -> dict:
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()
    return {"path": path, "size": size, "sha256": sha, "blob_id": git_blob_id(pointer),
            "pointer_size": len(pointer), "cdn_name": sha}


def small_entry(data_dir: Path, path: str, data: bytes) -> dict:
    blob = git_blob_id(data)
    (data_dir / blob).write_bytes(data)
    return {"path": path, "size": len(data), "blob_id": blob, "cdn_name": blob}


def generate(data_dir: Path, size: int, shards: int) -> dict:
    """The two repos (reused when `data_dir` already holds them for this size and shard count)."""
    manifest_file = data_dir / "manifest.json"
    key = {"size": size, "shards": shards}
    with contextlib.suppress(OSError, ValueError, KeyError):
        manifest = json.loads(manifest_file.read_text())
        if manifest["key"] == key and all((data_dir / f["cdn_name"]).stat().st_size == f["size"]
                                          for r in manifest["repos"] for f in r["files"]):
            return manifest
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files, weight_map = [], {}
    per_shard = [size // shards + (1 if i < size % shards else 0) for i in range(shards)]
    for i, shard_size in enumerate(per_shard):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        sha, _ = write_file(data_dir, safetensors_header(shard_size, f"w{i}"), shard_size)
        files.append(lfs_entry(name, sha, shard_size))
        weight_map[f"w{i}"] = name
    index = json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}, indent=2).encode()
    config = json.dumps({"model_type": "bench", "architectures": ["Bench"]}, indent=2).encode()
    files += [small_entry(data_dir, "model.safetensors.index.json", index),
              small_entry(data_dir, "config.json", config)]
    sha, _ = write_file(data_dir, safetensors_header(size, "w"), size)
    single = [lfs_entry("model.safetensors", sha, size), small_entry(data_dir, "config.json", config)]
    commit = lambda name: hashlib.sha1(f"{name} {size} {shards}".encode()).hexdigest()  # noqa: E731,S324
    manifest = {"key": key, "data_dir": str(data_dir), "repos": [
        {"id": MODEL, "type": "model", "sha": commit(MODEL), "files": files},
        {"id": SINGLE, "type": "model", "sha": commit(SINGLE), "files": single},
    ]}
    manifest_file.write_text(json.dumps(manifest, indent=1))
    print(f"generated {2 * size / 1e9:.1f} GB of test files in {time.perf_counter() - started:.0f} s",
          file=sys.stderr, flush=True)
    return manifest


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


class Nginx:
    """nginx in the foreground under its own prefix, the CDN of both profiles, with access logs we parse.

    unlimited: an http server.  capped: a `stream` (TCP) proxy with `proxy_download_rate`, in front of a
    second, internal http server. Not http `limit_rate`: that one is per *request* and lets the first second's
    worth of every request through at once (its budget is rate * (elapsed + 1)), so ranged GETs smaller than
    the rate (16 MiB chunks at 40m) would never be limited. The stream proxy's budget runs per *connection*:
    one second's worth at connection start, then the rate, however many requests the connection carries.
    """

    def __init__(self, binary: str, prefix: Path, data_dir: Path, rate: str) -> None:
        self.prefix = prefix
        self.ports = {"unlimited": free_port(), "capped": free_port()}
        self.backend = free_port()  # the capped profile's http server, behind the stream proxy
        self.log = prefix / "access.log"  # http: a line per request, when it ends
        self.stream_log = prefix / "stream.log"  # stream proxy: a line per connection, when it closes
        prefix.mkdir(parents=True)
        temp = "".join(f"  {k}_temp_path {prefix}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                      "scgi"))
        conf = prefix / "nginx.conf"
        conf.write_text(f"""
load_module {STREAM_MODULE};
daemon off;
user root;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format bench '$server_port $status $body_bytes_sent "$http_range" $request_time';
  access_log {self.log} bench;
{temp}  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  keepalive_timeout 60s;
  server {{ listen 127.0.0.1:{self.ports['unlimited']}; root {data_dir}; }}
  server {{ listen 127.0.0.1:{self.backend}; root {data_dir}; }}
}}
stream {{
  log_format bench '$server_port $bytes_sent $bytes_received $session_time';
  access_log {self.stream_log} bench;
  server {{
    listen 127.0.0.1:{self.ports['capped']};
    proxy_pass 127.0.0.1:{self.backend};
    proxy_download_rate {rate};
    proxy_buffer_size 256k;
  }}
}}
""")
        self.proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], start_new_session=True,
                                     stderr=open(prefix / "stderr", "wb"))
        wait_listening([*self.ports.values(), self.backend], self.proc, prefix / "stderr")

    def url(self, profile: str) -> str:
        return f"http://127.0.0.1:{self.ports[profile]}"

    def offset(self) -> tuple[int, int]:
        return tuple(log.stat().st_size if log.exists() else 0 for log in (self.log, self.stream_log))

    def _lines(self, log: Path, since: int) -> list[str]:
        if not log.exists():
            return []
        with open(log, "rb") as f:
            f.seek(since)
            return f.read().decode().splitlines()

    def requested(self, since: tuple[int, int]) -> int:
        """Body bytes of the http requests logged so far (ended or cut off): progress while a run goes on."""
        return sum(int(m[3]) for line in self._lines(self.log, since[0]) if (m := LOG_LINE.match(line)))

    def served(self, since: tuple[int, int]) -> int:
        """Bytes sent to clients after `since`: unlimited http requests, plus capped connections that closed."""
        unlimited = str(self.ports["unlimited"])
        http = sum(int(m[3]) for line in self._lines(self.log, since[0])
                   if (m := LOG_LINE.match(line)) and m[1] == unlimited)
        stream = sum(int(line.split()[1]) for line in self._lines(self.stream_log, since[1]) if line.strip())
        return http + stream

    def stop(self) -> None:
        stop(self.proc)


def wait_listening(ports, proc: subprocess.Popen, stderr: Path, timeout: float = 10.0) -> None:
    import socket

    end = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"server did not start: {stderr.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)


def start_front(manifest_file: Path, cdn: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "hubfront.py"), "--manifest", str(manifest_file),
                             "--cdn", cdn, "--port", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    wait_listening([port], proc, log)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- running one case -----------------------------------------------------------------------------

class Failed(Exception):
    pass


def measured(cmd: list[str], env: dict, log: Path, kill_when=None) -> tuple[float, int, int]:
    """Run `cmd`; return (seconds, exit code, peak RSS bytes of that process). `kill_when()` -> kill -9."""
    with open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=env.get("BENCH_CWD"), stdout=subprocess.DEVNULL, stderr=err)
        CHILDREN.add(proc)  # killed by main() if we are interrupted before it is reaped
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if kill_when else 0)
            if pid:
                break
            if kill_when():
                os.kill(proc.pid, signal.SIGKILL)
                kill_when = None
            else:
                time.sleep(0.01)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait for it again
    CHILDREN.discard(proc)
    CPU[0] += usage.ru_utime + usage.ru_stime
    return seconds, proc.returncode, usage.ru_maxrss * 1024


def checked(cmd: list[str], env: dict, log: Path) -> tuple[float, int]:
    seconds, code, rss = measured(cmd, env, log)
    if code != 0:
        raise Failed(f"`{' '.join(Path(c).name if '/' in c else c for c in cmd[:3])}` exit {code}; the end of its "
                     f"stderr:\n{tail(log)}")
    return seconds, rss


def tail(log: Path, lines: int = 4) -> str:
    return "\n".join("    " + line for line in log.read_text(errors="replace").strip().splitlines()[-lines:])


def fetch_secs(log: Path) -> float | None:
    """preloader's own fetch time (its `fetch.done ... secs=` line): the transfer without process start-up."""
    m = re.findall(r"fetch\.done .*?secs=([\d.]+)", log.read_text(errors="replace"))
    return float(m[-1]) if m else None


class Bench:
    def __init__(self, work: Path, manifest: dict, nginx: Nginx, fronts: dict[str, str], args) -> None:
        self.work, self.manifest, self.nginx, self.fronts, self.args = work, manifest, nginx, fronts, args
        self.repos = {r["id"]: r for r in manifest["repos"]}
        self.dropped: bool | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRELOADER_", "RUNPOD_"))}
        self.env.update(HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
                        HF_HUB_DISABLE_PROGRESS_BARS="1", BENCH_CWD=str(work))
        if args.preloader_path:  # another copy of the package (e.g. a patched one) ahead of the installed one
            self.preloader_pythonpath = os.pathsep.join([str(args.preloader_path.resolve()),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])])
            self.preloader_source = f"the package in {args.preloader_path} (--preloader-path)"
        else:
            self.preloader_pythonpath = os.environ.get("PYTHONPATH", "")
            self.preloader_source = describe_checkout()
        self.logs = work / "logs"
        self.logs.mkdir()
        self.count = 0

    def lfs_bytes(self, repo: str) -> int:
        return sum(f["size"] for f in self.repos[repo]["files"] if f.get("sha256"))

    def total_bytes(self, repo: str) -> int:
        return sum(f["size"] for f in self.repos[repo]["files"])

    def fresh(self, repo: str) -> Path:
        """An empty output dir; the last run's output removed, written back, page cache dropped, sources re-read."""
        out = self.work / "out"
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            self.dropped = self.dropped is not False
        except OSError:
            self.dropped = False
        data_dir = Path(self.manifest["data_dir"])
        for f in self.repos[repo]["files"]:  # the CDN serves from RAM, as an edge cache does
            with open(data_dir / f["cdn_name"], "rb") as src:
                while src.read(BLOCK):
                    pass
        out.mkdir()
        return out

    def log(self, name: str) -> Path:
        self.count += 1
        return self.logs / f"{self.count:03d}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"

    # -- the clients ------------------------------------------------------------------------------
    def hf_download(self, profile: str, repo: str) -> tuple[float, int]:
        out = self.fresh(repo)
        env = dict(self.env, HF_ENDPOINT=self.fronts[profile])
        return checked([str(BIN / "hf"), "download", repo, "--cache-dir", str(out / "hub"), "--quiet"], env,
                       self.log("hf"))

    def preloader_env(self, profile: str, repo: str, out: Path, connections: int) -> dict:
        return dict(self.env, HF_ENDPOINT=self.fronts[profile], PRELOADER_CACHE_DIR=str(out / "hub"),
                    RUNPOD_HUGGINGFACE_MODEL=repo, PRELOADER_CONNECTIONS=str(connections),
                    PRELOADER_TRANSFER="parallel", PRELOADER_MIN_FREE="0", PYTHONPATH=self.preloader_pythonpath)

    def preloader(self, profile: str, repo: str, connections: int) -> tuple[float, int, float | None]:
        out = self.fresh(repo)
        log = self.log(f"preloader-{connections}")
        seconds, rss = checked([str(BIN / "preloader"), "run"], self.preloader_env(profile, repo, out, connections),
                               log)
        return seconds, rss, fetch_secs(log)

    def hf_transfer(self, profile: str, repo: str) -> tuple[float, int]:
        """What huggingface_hub < 1.0 did with HF_HUB_ENABLE_HF_TRANSFER=1: hf_transfer on the CDN URL."""
        out = self.fresh(repo)
        cdn = self.nginx.url(profile)
        jobs = [(f"{cdn}/{f['cdn_name']}", str(out / f["cdn_name"])) for f in self.repos[repo]["files"]]
        script = (
            "import sys, json\nfrom concurrent.futures import ThreadPoolExecutor\nimport hf_transfer\n"
            "jobs = json.loads(sys.argv[1])\n"
            "with ThreadPoolExecutor(8) as pool:\n"
            "    list(pool.map(lambda j: hf_transfer.download(j[0], j[1], max_files=100, "
            "chunk_size=10 * 1024 * 1024, parallel_failures=0, max_retries=0), jobs))\n"
        )
        return checked([sys.executable, "-c", script, json.dumps(jobs)], self.env, self.log("hf-transfer"))

    def curl(self, profile: str, repo: str, per_file: int | None, total: int | None = None) -> tuple[float, int]:
        """curl processes with byte ranges through the front (302 -> nginx), all at once, to the same disk.

        `per_file` ranges per file, or `total` connections spread over the big files.
        """
        out = self.fresh(repo)
        files = self.repos[repo]["files"]
        big = [f for f in files if f.get("sha256")]
        cmds = []
        for f in files:
            n = 1 if not f.get("sha256") else per_file or max(1, total // len(big))
            bounds = [f["size"] * i // n for i in range(n + 1)]
            url = f"{self.fronts[profile]}/{repo}/resolve/main/{f['path']}"
            for i in range(n):
                part = out / f"{f['cdn_name']}.{i}"
                cmds.append(["curl", "-sS", "-f", "-L", "--http1.1", "-o", str(part),
                             *(["-r", f"{bounds[i]}-{bounds[i + 1] - 1}"] if n > 1 else []), url])
        log = self.log("curl")
        with open(log, "wb") as err:
            start = time.perf_counter()
            procs = [subprocess.Popen(c, stderr=err, cwd=self.work) for c in cmds]
            CHILDREN.update(procs)
            codes = []
            for proc in procs:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                codes.append(proc.returncode)
                CPU[0] += usage.ru_utime + usage.ru_stime
            seconds = time.perf_counter() - start
            CHILDREN.difference_update(procs)
        got = sum(p.stat().st_size for p in out.iterdir())
        if any(codes) or got != self.total_bytes(repo):
            raise Failed(f"curl: exit codes {set(codes)}, {got} of {self.total_bytes(repo)} bytes: "
                         f"{log.read_text(errors='replace')[-2000:]}")
        return seconds, 0

    def resume(self, profile: str, repo: str, connections: int) -> dict:
        """kill -9 once nginx has logged half the bytes, run again; what the second run re-fetched."""
        out = self.fresh(repo)
        env = self.preloader_env(profile, repo, out, connections)
        total = self.lfs_bytes(repo)
        start = self.nginx.offset()
        checks = {"at": 0}

        def half_served() -> bool:
            now = time.monotonic()
            if now - checks["at"] < 0.02:
                return False
            checks["at"] = now
            return self.nginx.requested(start) >= total / 2

        cmd = [str(BIN / "preloader"), "run"]
        _, code, rss1 = measured(cmd, env, self.log("resume-killed"), kill_when=half_served)
        if code != -signal.SIGKILL:
            raise Failed(f"resume: the first run was not killed (exit {code}); the file downloaded too fast to "
                         "catch at half")
        time.sleep(1.5)  # nginx logs cut-off requests when its next write fails: let those lines land
        middle = self.nginx.offset()
        first = self.nginx.served(start)
        on_disk = partial_bytes(out)
        written = written_bytes(out, Path(self.manifest["data_dir"]))
        seconds, rss2 = checked(cmd, env, self.log("resume-second"))
        time.sleep(0.5)  # the proxy logs a connection when it sees it closed
        second = self.nginx.served(middle)
        snapshot = out / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / self.repos[repo]["sha"]
        wrong = [f["path"] for f in self.repos[repo]["files"]
                 if not (snapshot / f["path"]).is_file() or (snapshot / f["path"]).stat().st_size != f["size"]]
        if wrong:
            raise Failed(f"resume: exit 0 but missing or wrong-sized in the snapshot: {wrong}")
        return {"first": first, "second": second, "refetched": first + second - total, "total": total,
                "on_disk_at_kill": on_disk, "written_at_kill": written, "seconds": seconds, "rss": max(rss1, rss2)}


def describe_checkout() -> str:
    """The checkout's commit, and whether preloader/ differs from it (others may be editing it)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *cmd], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "preloader")
    return f"this checkout ({ROOT}), commit {commit}" + (", preloader/ with uncommitted changes" if dirty else "")


def written_bytes(out: Path, data_dir: Path, grain: int = 64 * 1024) -> int:
    """Bytes the killed run really wrote: 64 KiB blocks of the `.incomplete` files equal to the source.

    The partial file is made at full size and full of zeros; the source is random, so a block matches
    only once written. (Blobs already complete count whole.)
    """
    total = 0
    for blob in out.glob("hub/*/blobs/*"):
        etag = blob.name.removesuffix(".incomplete")
        if not (data_dir / etag).is_file():
            continue
        if not blob.name.endswith(".incomplete"):
            total += blob.stat().st_size
            continue
        with open(blob, "rb") as got, open(data_dir / etag, "rb") as want:
            while block := want.read(BLOCK):
                mine = got.read(len(block))
                total += sum(len(block[i:i + grain]) for i in range(0, len(block), grain)
                             if mine[i:i + grain] == block[i:i + grain])
    return total


def partial_bytes(out: Path) -> int:
    """Bytes the range maps in <state>/transfers/ say are on disk (whole chunks and partial ones)."""
    total = 0
    for state in out.glob("**/transfers/*/*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            s = json.loads(state.read_text())
            total += sum(min(s["chunk"], s["size"] - i * s["chunk"]) for i in s["done"])
            total += sum(s["partial"].values())
    return total


# -- the report -----------------------------------------------------------------------------------

def mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("2G"), help="model bytes (default 2G = 2 GiB)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", default="40m",
                        help="per-connection cap of the capped profile, nginx units (default 40m)")
    parser.add_argument("--data-dir", type=Path, help="keep the generated files here and reuse them (default: temp)")
    parser.add_argument("--work-dir", type=Path, help="where the temp dir goes (default: $TMPDIR)")
    parser.add_argument("--profiles", default="unlimited,capped", type=lambda v: v.split(","),
                        help="link profiles to measure (default: unlimited,capped)")
    parser.add_argument("--sections", default="tables,resume,memory", type=lambda v: v.split(","),
                        help="what to measure: tables (the timed cases), resume, memory (default: all three)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every run) at the end")
    parser.add_argument("--preloader-path", type=Path,
                        help="a directory holding another `preloader` package to run instead (e.g. a patched copy)")
    args = parser.parse_args()
    rate = nginx_rate_bytes(args.rate)

    work = Path(tempfile.mkdtemp(prefix="preloader-transfer-bench-", dir=args.work_dir))
    need = 3 * args.size  # the two generated repos, and one download at a time
    if shutil.disk_usage(work).free < need:
        shutil.rmtree(work)
        raise SystemExit(f"needs {need / 1e9:.1f} GB free under {work.parent}; use a smaller --size")

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    servers: list = []
    try:
        nginx_binary = ensure_tools()
        manifest = generate(args.data_dir or work / "data", args.size, args.shards)
        manifest_file = work / "manifest.json"
        manifest_file.write_text(json.dumps(manifest))
        nginx = Nginx(nginx_binary, work / "nginx", Path(manifest["data_dir"]), args.rate)
        servers.append(nginx)
        fronts = {}
        for profile in nginx.ports:
            proc, url = start_front(manifest_file, nginx.url(profile), work / f"front-{profile}.log")
            servers.append(proc)
            fronts[profile] = url
        bench = Bench(work, manifest, nginx, fronts, args)
        report(bench, args, rate)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        for proc in list(CHILDREN):
            with contextlib.suppress(OSError):
                proc.kill()
        for server in reversed(servers):
            server.stop() if isinstance(server, Nginx) else stop(server)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def median(values) -> float:
    return statistics.median(list(values))


def run_case(case, profile: str, failures: list[str], label: str):
    """Run one case; return (its result, CPU seconds of its processes), or None after logging a failure."""
    CPU[0] = 0.0
    try:
        return case(profile), CPU[0]
    except Failed as error:
        failures.append(f"{label}: {error}")
        return None


def report(bench: Bench, args, rate: int) -> None:
    size = bench.total_bytes(MODEL)
    single = bench.lfs_bytes(SINGLE)
    load = os.getloadavg()
    fetch_only: dict[tuple[str, int], list[float]] = {}
    rss_model: list[tuple[str, int]] = []
    failures: list[str] = []

    def preloader(profile: str, connections: int) -> float:
        seconds, rss, fetch = bench.preloader(profile, MODEL, connections)
        rss_model.append((f"{profile}, {MODEL}, {connections} connections", rss))
        if fetch is not None:
            fetch_only.setdefault((profile, connections), []).append(fetch)
        return seconds

    if not HAS_HF_TRANSFER:
        print("hf_transfer is not installed: its row is left out (pip install 'hf-preloader[bench]')", file=sys.stderr)
    cases = {
        "hf download (huggingface_hub: a stream per file, 8 files at once)": lambda p: bench.hf_download(p, MODEL)[0],
        "preloader run, cold, 8 connections (default)": lambda p: preloader(p, 8),
        "preloader run, cold, 16 connections": lambda p: preloader(p, 16),
        **({"hf_transfer.download as HF_HUB_ENABLE_HF_TRANSFER did (no hash check)":
            lambda p: bench.hf_transfer(p, MODEL)[0]} if HAS_HF_TRANSFER else {}),
        "raw: curl, 8 ranged connections in all": lambda p: bench.curl(p, MODEL, None, total=8)[0],
        f"raw: curl, 8 ranged connections per file ({8 * args.shards} in all)": lambda p: bench.curl(p, MODEL, 8)[0],
    }
    times: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for profile in args.profiles if "tables" in args.sections else ():
        for run in range(args.runs):
            for name, case in cases.items():  # interleaved, so drifting background load hits every case alike
                print(f"[{profile} {run + 1}/{args.runs}] {name}", file=sys.stderr, flush=True)
                if (got := run_case(case, profile, failures, f"{profile}: {name}")) is not None:
                    times.setdefault(profile, {}).setdefault(name, []).append(got)

    resumes: dict[str, list[dict]] = {}
    resume_failed: dict[str, int] = {}
    if "resume" in args.sections:
        for label, profile, repo in (("model, unlimited", "unlimited", MODEL), ("model, capped", "capped", MODEL),
                                     ("single file, unlimited", "unlimited", SINGLE)):
            if profile not in args.profiles:
                continue
            for run in range(args.runs):
                print(f"[resume {label} {run + 1}/{args.runs}]", file=sys.stderr, flush=True)
                got = run_case(lambda p, r=repo: bench.resume(p, r, 8), profile, failures, f"resume {label}")
                resumes.setdefault(label, [])
                if got is None:
                    resume_failed[label] = resume_failed.get(label, 0) + 1
                else:
                    resumes[label].append(got[0])

    memory: dict[int, list[tuple[float, int, float]]] = {}
    if "memory" in args.sections:
        for run in range(args.runs):
            for connections in (1, 8, 32):
                print(f"[memory {connections} connections {run + 1}/{args.runs}]", file=sys.stderr, flush=True)
                got = run_case(lambda p, c=connections: bench.preloader(p, SINGLE, c), "unlimited", failures,
                               f"memory, {connections} connections")
                if got is not None:
                    (seconds, rss, _), cpu = got
                    memory.setdefault(connections, []).append((seconds, rss, cpu))
    load_after = os.getloadavg()

    print("\n# preloader transfer benchmark\n")
    print(f"- `{MODEL}`: {size:,} bytes ({size / 2**30:.2f} GiB) in {args.shards} safetensors shards + index + "
          f"config; `{SINGLE}`: one {single:,}-byte file + config")
    print(f"- preloader: {bench.preloader_source}")
    print(f"- {args.runs} runs per case, interleaved; medians; whole processes, start-up included; MB = 10^6 bytes; "
          "CPU s = user + system seconds of the client processes (nginx and the front not counted)")
    print(f"- capped profile: nginx stream proxy `proxy_download_rate {args.rate}` = {rate / 1e6:.1f} MB/s per "
          "connection (after a first second's worth at connection start)")
    print(f"- page cache dropped before each run: {'yes' if bench.dropped else 'no (not permitted)'}; "
          "the run's source files read back into RAM first (the CDN serves from memory)")
    print(f"- machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} before, {load_after[0]:.2f} after; "
          f"Python {sys.version.split()[0]}")
    goals: list[tuple[bool, str]] = []
    for profile, rows in times.items():
        med = {name: (median(t for t, _ in v), median(c for _, c in v)) for name, v in rows.items()}
        hf = next((t for n, (t, _) in med.items() if n.startswith("hf download")), None)
        raw = min((t for n, (t, _) in med.items() if n.startswith("raw:")), default=None)
        print(f"\n## {profile}: " + (f"{rate / 1e6:.1f} MB/s per connection" if profile == "capped" else "loopback")
              + "\n")
        print("| what | seconds (median) | MB/s | x vs hf download | % of raw limit | CPU s |")
        print("|---|---|---|---|---|---|")
        for name, (t, cpu) in med.items():
            print(f"| {name} | {t:.2f} | {mb(size / t)} | {f'{hf / t:.2f}x' if hf else '-'} | "
                  f"{f'{100 * raw / t:.0f}%' if raw else '-'} | {cpu:.1f} |")
        for (p, c), v in sorted(fetch_only.items()):
            if p == profile:
                t = median(v)
                print(f"| (preloader, {c} connections: fetch phase only, its `fetch.done secs=`) | {t:.2f} | "
                      f"{mb(size / t)} | {f'{hf / t:.2f}x' if hf else '-'} | {f'{100 * raw / t:.0f}%' if raw else '-'} "
                      "| |")
        default = med.get("preloader run, cold, 8 connections (default)", (None,))[0]
        if default and hf and profile == "capped":
            goals.append((hf / default >= 4, f"capped: preloader (default 8 connections) {hf / default:.2f}x as fast "
                                             "as hf download (goal >= 4x)"))
        if default and raw:
            goals.append((raw / default >= 0.8, f"{profile}: preloader (default) at {100 * raw / default:.0f}% of "
                                                "the raw parallel limit (goal >= 80%)"))

    if resumes:
        print("\n## resume: kill -9 once nginx has logged half the bytes, then run again (8 connections)\n")
        print("| what | runs ok | served before the kill | written at the kill | recorded in the range map | "
              "fetched by the second run | re-fetched (median / worst) | % of the file (median / worst) | "
              "second run s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, rs in resumes.items():
            failed = resume_failed.get(label, 0)
            if not rs:
                print(f"| {label} | 0 of {failed} | - | - | - | - | - | - | - |")
                continue
            pct = [100 * r["refetched"] / r["total"] for r in rs]
            print(f"| {label} | {len(rs)} of {len(rs) + failed} | {mb(median(r['first'] for r in rs))} MB | "
                  f"{mb(median(r['written_at_kill'] for r in rs))} MB | "
                  f"{mb(median(r['on_disk_at_kill'] for r in rs))} MB | {mb(median(r['second'] for r in rs))} MB | "
                  f"{mb(median(r['refetched'] for r in rs))} / {mb(max(r['refetched'] for r in rs))} MB | "
                  f"{median(pct):.1f}% / {max(pct):.1f}% | {median(r['seconds'] for r in rs):.2f} |")
        print("\nre-fetched = served to the killed run + served to the second run - the file's bytes (nginx's "
              "http `$body_bytes_sent` / stream `$bytes_sent`, cut-off transfers included). Medians. 'written': "
              "64 KiB blocks of the `.incomplete` files equal to the source after the kill; 'recorded': what the "
              "range maps in <state>/transfers/ claim, all a second run can trust. served - written = in flight "
              "(socket buffers) when killed; written - recorded = progress written but not yet saved in the map.")
        worst = max((100 * r["refetched"] / r["total"] for rs in resumes.values() for r in rs), default=None)
        failed = sum(resume_failed.values())
        goals.append((worst is not None and worst < 10 and not failed,
                      (f"resume re-fetched at worst {worst:.1f}% of the file" if worst is not None else "resume")
                      + (f"; {failed} resumed run(s) FAILED, see below" if failed else "") + " (goal < 10%)"))

    if memory:
        print(f"\n## peak RSS: `preloader run` of the single {single / 2**30:.2f} GiB file, unlimited\n")
        print("| connections | peak RSS (worst run) | seconds (median) | MB/s | CPU s |")
        print("|---|---|---|---|---|")
        for c, v in sorted(memory.items()):
            t = median(x[0] for x in v)
            print(f"| {c} | {max(x[1] for x in v) / 1e6:.0f} MB | {t:.2f} | {mb(single / t)} | "
                  f"{median(x[2] for x in v):.1f} |")
        worst = max(max(x[1] for x in v) for v in memory.values())
        goals.append((worst < 200e6, f"peak RSS downloading the {single / 2**30:.2f} GiB file at 1, 8 and 32 "
                                     f"connections: at worst {worst / 1e6:.0f} MB (goal < 200 MB)"))
    if rss_model:
        name, worst = max(rss_model, key=lambda x: x[1])
        print(f"\npeak RSS over the {MODEL} runs ({len(rss_model)} runs, {args.shards} files at once): at worst "
              f"{worst / 1e6:.0f} MB ({name})")

    print("\n## goals\n")
    for ok, text in goals:
        print(f"- {'PASS' if ok else 'FAIL'}: {text}")
    for failure, count in collections.Counter(failures).items():  # the same failure once, with its count
        print(f"\nFAILED RUN ({count}x): {failure}")


if __name__ == "__main__":
    main()
