"""The entrypoint's commands: run, wait, plan, warm."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

import click

from ..metrics import serving
from ..options import OPTIONS
from ..preloading import entrypoint
from ..spec import parse_specs
from ..warm.mode import WarmMode
from .base import CACHE_SETTINGS, load_settings, parse_spec_args, reports_errors, settings_options

COMMAND = click.argument("command", nargs=-1, type=click.UNPROCESSED)
NO_INTERSPERSED = {"allow_interspersed_args": False}


def given(command: tuple[str, ...]) -> list[str]:
    """COMMAND. `run --` with nothing after the `--` is the no-command mode, as the image's
    `ENTRYPOINT ["tini", "--", "preloader", "run", "--"]` with no CMD relies on; an empty program name
    (`run -- ""`) is 78."""
    return list(command)


@click.command(context_settings=NO_INTERSPERSED)
@settings_options
@COMMAND
@reports_errors
def run(command, **flags):
    """Preload every requested repo, then exec COMMAND (same PID) on the cache.

    With no COMMAND, preload and exit 0 (init container, compose sidecar).
    The service gets HF_HUB_CACHE, HF_HUB_OFFLINE=1, PRELOADER_MODEL_PATH,
    PRELOADER_DATASET_PATH and PRELOADER_MANIFEST; tokens are removed from
    its environment unless --export-token.

        preloader run --model org/model:main -- python serve.py --port 8000
    """
    entrypoint.run(load_settings(flags), given(command), os.environ, progress=sys.stderr.isatty())


@click.command(context_settings=NO_INTERSPERSED)
@settings_options
@COMMAND
@reports_errors
def plan(command, **flags):
    """Print the resolved plan as JSON: no network, no writes. The token shows only as set/unset."""
    from ..preloading.plan import describe
    click.echo(json.dumps(describe(load_settings(flags), list(command)), indent=2))


@click.command(context_settings=NO_INTERSPERSED)
@settings_options
@COMMAND
@reports_errors
def wait(command, **flags):
    """Wait until every requested snapshot is complete in the cache, then exec COMMAND or exit 0.

    For services that share the volume with a preloader but do not download.
    No network. Exit 75 when --timeout passes first.
    """
    entrypoint.wait(load_settings(flags), given(command), os.environ)


PULL_SETTINGS = tuple(o.name for o in OPTIONS if o.name not in ("models", "datasets", "warm", "warm_lock", "dtype",
                                                                  "service_offline", "export_token", "manifest",
                                                                  "refresh"))


@click.command()
@settings_options(names=PULL_SETTINGS)
@click.option("--dataset", "datasets_only", is_flag=True, help="The SPECs are datasets.")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@reports_errors
def pull(specs, datasets_only, **flags):
    """Download SPECs (user/name[:revision], hf://...) into the cache and print each snapshot's path.

    For people at a shell, the way `docker pull` and `hf download` read: the same
    checks, locks, resume and cache as `preloader run`, with no service to start.
    """
    s = load_settings(flags)
    wanted = parse_spec_args(specs, datasets_only)  # hf://datasets/... among them is a dataset
    # Warming is not pull's (no --warm): PRELOADER_WARM in the environment is for `run`.
    s = replace(s, models=tuple(w for w in wanted if w.repo_type == "model"),
                datasets=tuple(w for w in wanted if w.repo_type == "dataset"), warm=WarmMode("none"))
    for result in entrypoint.pull(s, os.environ, progress=sys.stderr.isatty()):
        click.echo(result.path)


@click.command(name="warm")
@settings_options(names=CACHE_SETTINGS + ("warm", "warm_lock", "dtype", "metrics_addr", "metrics_file"))
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@reports_errors
def warm_command(specs, **flags):
    """Warm models already in the cache (no network): --warm page-cache (default here) or gpu[:N].

    Logs bytes, seconds, GB/s and the device per repo. With --warm-lock (page
    cache), stays up holding the pages until SIGTERM.
    """
    s = replace(load_settings(flags), models=tuple(parse_specs(list(specs), "model")), datasets=())
    with serving(s.metrics_addr, s.metrics_file, s.cache_dir) as served:
        reports = entrypoint.warm_cached(s)
        served.metrics.warmed(reports)
        if s.warm_lock and any(r and r.locked_bytes for r in reports):
            entrypoint.hold_until_stopped()
