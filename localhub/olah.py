"""Run olah as a subprocess: offline, serving local git mirrors; or online, as a pull-through mirror of
another hub (the preloader's LAN mirror pattern)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

READY_PATH = "/api/models/org/tiny-model/revision/main"
# Loopback only: never route the probe through an HTTP(S)_PROXY from the env.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (racy by nature, fine for tests)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_olah_cli() -> str:
    """``olah-cli`` of the running interpreter's env first, then ``PATH``."""
    local = Path(sys.executable).parent / "olah-cli"
    if local.exists():
        return str(local)
    found = shutil.which("olah-cli")
    if found is None:
        raise FileNotFoundError("olah-cli not found next to sys.executable nor on PATH")
    return found


class OlahServer:
    """An olah process on 127.0.0.1; ``url`` stays the same across restarts."""

    def __init__(
        self,
        mirrors_dir: Path,
        workdir: Path,
        port: int | None = None,
        *,
        ready_path: str = READY_PATH,
        timeout: float = 30.0,
        upstream: str | None = None,
    ):
        self.upstream = upstream  # online: fetch from this hub URL (http://host:port) and cache what passes
        self.mirrors_dir = Path(getattr(mirrors_dir, "mirrors_dir", mirrors_dir)).resolve() if mirrors_dir else None
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.ready_path = ready_path
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "configs.toml"
        self.log_path = self.workdir / "olah.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        # json-style quoting of paths is valid TOML for basic strings.
        q = lambda s: '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
        if self.upstream:
            scheme, _, netloc = self.upstream.partition("://")
            source = f'hf-scheme = "{scheme}"\nhf-netloc = "{netloc}"\nhf-lfs-netloc = "{netloc}"\n'
        else:
            source = f"mirrors-path = [{q(self.mirrors_dir)}]\n"
        self.config_path.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"repos-path = {q(self.workdir / 'repos')}\n"
            f'mirror-netloc = "{self.netloc}"\n'
            f'mirror-lfs-netloc = "{self.netloc}"\n'
            + source
            + "[accessibility]\n"
            + f"offline = {'false' if self.upstream else 'true'}\n"
        )

    def start(self) -> OlahServer:
        """Start olah and block until the readiness probe answers 200."""
        if self.running:
            return self
        self._write_config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [find_olah_cli(), "-c", str(self.config_path)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last = f"olah exited with {self.proc.returncode}"
                break
            try:
                with _DIRECT.open(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except OSError as e:  # not listening yet
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"olah not ready at {self.url}{self.ready_path} ({last}); log tail:\n" + self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate olah (SIGTERM, then SIGKILL); safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> OlahServer:
        self.stop()
        return self.start()

    def __enter__(self) -> OlahServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


Olah = OlahServer


def start_olah(mirrors_dir: Path, workdir: Path, port: int | None = None, **kw) -> OlahServer:
    """Start olah serving ``mirrors_dir`` (a path or a :class:`Mirrors`)."""
    return OlahServer(mirrors_dir, workdir, port, **kw).start()


def start_mirror(upstream: str, workdir: Path, port: int | None = None, **kw) -> OlahServer:
    """Start olah online, as a pull-through mirror of the hub at ``upstream``: it fetches what is asked
    for from there (hf-scheme / hf-netloc / hf-lfs-netloc) and keeps it in its own cache."""
    return OlahServer(None, workdir, port, upstream=upstream, **kw).start()
