"""`preloader lock`: write the plan's lock file (docs/lockfile.md)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import click

from ..lockfile import DEFAULT_NAME
from ..options import OPTIONS, OPTIONS_BY_NAME
from ..preloading import locking
from .base import load_settings, parse_spec_args, reports_errors, settings_options

LOCKFILE_ENV = OPTIONS_BY_NAME["lockfile"].env
# What decides the plan and how the hub is reached: every setting but those of the download and after it (a
# new selection setting is one of the lock's too).
LOCK_SETTINGS = tuple(o.name for o in OPTIONS if o.name not in (
    "models", "datasets", "lockfile", "pickle", "warm", "warm_lock", "dtype", "service_offline", "export_token",
    "manifest", "metrics_addr", "metrics_file", "max_cache_size", "prepare_datasets", "datasets_cache", "read_caches",
    "min_free", "lock", "lease_stale", "lock_timeout", "workers", "transfer", "connections", "parallel_threshold",
    "require_repos", "link_root", "latest"))


@click.command(name="lock")
@settings_options(names=LOCK_SETTINGS)
@click.option("-o", "--output", type=click.Path(dir_okay=False), envvar=LOCKFILE_ENV, default=DEFAULT_NAME,
              show_default=True, help=f"The lock file to write or update [env: {LOCKFILE_ENV}].")
@click.option("--dataset", "datasets_only", is_flag=True, help="The SPECs are datasets.")
@click.argument("specs", nargs=-1, metavar="[SPEC]...")
@reports_errors
def lock_command(specs, output, datasets_only, **flags):
    """Write, or update, the lock file of the plan: each repo's commit and every selected file's size and digest.

    The plan is the SPECs (user/name[:revision], hf://...) or, with none, RUNPOD_HUGGINGFACE_MODEL and
    RUNPOD_HUGGINGFACE_DATASET, with PRELOADER_INCLUDE/EXCLUDE applied. Prints what changed. Then
    PRELOADER_LOCKFILE=<file> makes run, pull and wait use exactly these commits and bytes.

        preloader lock org/model:main -o preloader.lock
    """
    # The lock being written is not one to hold this plan to: PRELOADER_LOCKFILE only names the output here.
    s = load_settings(flags, {k: v for k, v in os.environ.items() if k != LOCKFILE_ENV})
    if specs:
        wanted = parse_spec_args(specs, datasets_only)
        s = replace(s, models=tuple(w for w in wanted if w.repo_type == "model"),
                    datasets=tuple(w for w in wanted if w.repo_type == "dataset"))
    path = Path(os.path.abspath(output))
    changed = locking.update(s, path)
    for line in changed:
        click.echo(line)
    click.echo(f"{path}: " + (f"{len([c for c in changed if not c.startswith('  ')])} repo(s) changed"
                              if changed else "up to date, unchanged"))
