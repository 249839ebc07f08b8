"""Used as a library, preloader leaves the host process as it found it: no other package's globals or loggers
changed, no env var or signal handler set, nothing printed unless the host configures logging."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from conftest import ROOT

import preloader
from localhub.faults import Status

MODEL = "org/tiny-model"
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM)


def host_state() -> dict:
    """What a host process could notice changed: huggingface_hub's settings, its logger, ours, the root
    logger, the environment and the signal dispositions."""
    from huggingface_hub import constants, hf_hub_download  # noqa: F401 - its import sets up its own logger

    def logger(name: str) -> tuple:
        found = logging.getLogger(name)
        return tuple(found.handlers), found.propagate, found.level, found.disabled

    return {
        "constants": {name: value for name, value in vars(constants).items() if name.isupper()},
        "loggers": {name: logger(name) for name in ("huggingface_hub", "preloader", "")},
        "environ": dict(os.environ),
        "signals": {signum: signal.getsignal(signum) for signum in SIGNALS},
    }


def test_a_fetch_through_huggingface_hub_leaves_its_globals_and_logger_as_they_were(hub, cache, mirrors,
                                                                                     monkeypatch):
    from huggingface_hub import constants

    # The host runs offline for its own calls and has its own timeout; our settings say online.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 123)
    before = host_state()
    [result] = preloader.preload(models=MODEL, cache_dir=cache, endpoint=hub.url, transfer="hub", offline=False)
    assert sorted(p.relative_to(result.path).as_posix() for p in result.path.rglob("*") if p.is_file()) == \
        sorted(mirrors.files("model", MODEL, "main"))
    assert hub.count("GET", "/resolve/") == len(mirrors.files("model", MODEL, "main"))  # huggingface_hub fetched
    assert host_state() == before
    assert (constants.HF_HUB_OFFLINE, constants.HF_HUB_DOWNLOAD_TIMEOUT) == (True, 123)


def test_the_globals_come_back_when_a_fetch_through_huggingface_hub_fails(hub, cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = host_state()
    hub.add_rule("/resolve/", Status(404, times=None))  # every file: not found
    try:
        preloader.preload(models=MODEL, cache_dir=cache, endpoint=hub.url, transfer="hub", retries=1)
    except preloader.PreloaderError:
        pass
    else:
        raise AssertionError("the preload should have failed")
    assert host_state() == before


def test_preload_in_a_fresh_interpreter_prints_nothing(hub, tmp_path, mirrors):
    """No logging configured by the host: not a line on stdout or stderr, from us or from huggingface_hub,
    for a download, a cached start and a warning (prepare_datasets with offline on)."""
    cache = tmp_path / "worker" / "hub"
    script = (
        "import preloader\n"
        f"kw = dict(cache_dir={str(cache)!r}, endpoint={hub.url!r})\n"
        f"preloader.preload(models={MODEL!r}, transfer='hub', **kw)\n"
        f"preloader.preload(models={MODEL!r}, warm='page-cache', **kw)\n"
        f"preloader.preload(models={MODEL!r}, offline=True, prepare_datasets=True, **kw)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert hub.count("GET", "/resolve/") == len(mirrors.files("model", MODEL, "main"))


def test_the_cli_still_routes_huggingface_hub_records_through_its_handler(hub, cache):
    """What the library no longer does for a host, the CLI's main does for its own process: huggingface_hub's
    logger goes through our handler (one format, secrets scrubbed), not its own."""
    script = (
        "import logging, sys\n"
        "from preloader.cli import main\n"
        "sys.argv = ['preloader', 'pull', '--transfer', 'hub', '--log-format', 'json', sys.argv[1]]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    theirs = logging.getLogger('huggingface_hub')\n"
        "    ours = logging.getLogger('preloader')\n"
        "    print(theirs.handlers == ours.handlers, theirs.propagate, file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "PRELOADER_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "-c", script, MODEL], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "True False"
