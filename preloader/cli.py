"""The click CLI: thin commands over the library. The only module that imports click."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys

import click

from . import __version__, logs
from .config import OPTIONS, Settings, debug_requested
from .errors import Aborted, PreloaderError

SETTINGS_HELP = "Every option also reads an env var (shown in brackets); flags win."
logger = logging.getLogger("preloader.cli")


CACHE_SETTINGS = ("cache_dir", "state_dir", "link_root", "log_format", "log_level", "debug")
HUB_SETTINGS = ("user", "token", "endpoint", "lock_timeout", "retries", "workers")


def settings_options(command=None, *, names: tuple[str, ...] | None = None):
    """Add one click option per setting in config.OPTIONS (the README table lists the same), or those in `names`."""
    if command is None:
        return functools.partial(settings_options, names=names)
    for option in reversed(OPTIONS):
        if names is not None and option.name not in names:
            continue
        help_text = f"{option.help} [env: {option.env}" + "".join(f", {f}" for f in option.fallbacks)
        help_text += f"; default: {option.default}]" if option.default else "]"
        if option.kind == "bool":
            decl = f"{option.flag}/--no-{option.flag[2:]}"
            command = click.option(decl, option.name, default=None, help=help_text)(command)
        else:
            command = click.option(
                option.flag, option.name, default=None, multiple=option.kind == "list",
                metavar=option.kind.upper() if option.kind != "str" else "TEXT", help=help_text,
            )(command)
    return command


def load_settings(flags: dict) -> Settings:
    settings = Settings.load(os.environ, flags)
    logs.setup(settings.log_format, settings.log_level, secrets=[settings.token])
    return settings


def reports_errors(command):
    """Turn library errors into `preloader: error: ...` and their exit codes."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = debug_requested(os.environ) or bool(kwargs.get("debug"))
        try:
            return command(*args, **kwargs)
        except PreloaderError as error:
            report(error, debug)
            sys.exit(error.exit_code)
        except Aborted as error:
            report(error, debug)
            # Download threads may still be blocked in a read; do not wait for them.
            os._exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as error:  # a bug: show everything (tokens still scrubbed)
            report(error, True)
            click.echo(f"{logs.PREFIX}: error: this is a bug in preloader (exit 70)", err=True)
            logs.flush()
            os._exit(70)

    return wrapper


def report(error: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        click.echo(logs.redact("".join(traceback.format_exception(error))), err=True)
    click.echo(logs.redact(f"{logs.PREFIX}: error: {error}"), err=True)
    logs.flush()


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="preloader")
def cli():
    """Preload Hugging Face models and datasets into a shared cache, then start the service.

    Exit codes: 0 ok, 2 usage, 78 bad settings, 66 not found, 77 auth,
    75 hub down / deadline / lock timeout, 74 disk, 69 resource absent,
    126/127 service not executable / not found, 128+N killed by signal N.
    """


@cli.command(context_settings={"allow_interspersed_args": False})
@settings_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@reports_errors
def run(command, **flags):
    """Preload every requested repo, then exec COMMAND (same PID) on the cache.

    With no COMMAND, preload and exit 0 (init container, compose sidecar).
    The service gets HF_HUB_CACHE, HF_HUB_OFFLINE=1, PRELOADER_MODEL_PATH,
    PRELOADER_DATASET_PATH and PRELOADER_MANIFEST; tokens are removed from
    its environment unless --export-token.

        preloader run --model org/model:main -- python serve.py --port 8000
    """
    from . import handoff, signals
    from .engine import Preloader

    settings = load_settings(flags)
    warming = settings.warm != "none"  # the warm modules are not imported on a plain start (a hot path)
    if warming and settings.warm.startswith("gpu"):  # fail before downloading anything, not after
        from .warm import parse_warm
        from .warm_gpu import require_device

        require_device(parse_warm(settings.warm, source="PRELOADER_WARM").device)
    lock = settings.warm_lock and settings.warm == "page-cache"
    if settings.warm_lock and command:
        logger.warning("--warm-lock is ignored with a command: exec would release the locked pages")
        lock = False
    signals.install(settings.timeout)
    results = Preloader(settings, progress=sys.stderr.isatty()).run()
    if warming:
        from .api import warm_results

        warm_results(results, settings.warm, dtype=settings.dtype, lock=lock)
    signals.uninstall()
    if not command:
        if lock:
            hold_until_stopped()
        return
    manifest = handoff.write_manifest(settings, results)
    handoff.exec_service(command, handoff.service_env(os.environ, settings, results, manifest))


def hold_until_stopped() -> None:
    """Sidecar with --warm-lock: keep the locked pages resident until SIGTERM/SIGINT, then exit 0."""
    import signal
    import threading

    from .warm import locked_bytes, release_locks

    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    logs.event(logger, "warm.holding", locked=locked_bytes())
    logs.flush()
    while not stopped.wait(1.0):
        pass
    release_locks()


@cli.command(context_settings={"allow_interspersed_args": False})
@settings_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@reports_errors
def plan(command, **flags):
    """Print the resolved plan as JSON: no network, no writes. The token shows only as set/unset."""
    from .plan import describe

    emit_json(describe(load_settings(flags), list(command)))


@cli.command(context_settings={"allow_interspersed_args": False})
@settings_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@reports_errors
def wait(command, **flags):
    """Wait until every requested snapshot is complete in the cache, then exec COMMAND or exit 0.

    For services that share the volume with a preloader but do not download.
    No network. Exit 75 when --timeout passes first.
    """
    from . import handoff, signals
    from .engine import wait_ready

    settings = load_settings(flags)
    signals.install()
    results = wait_ready(settings, timeout=settings.timeout)
    signals.uninstall()
    if command:
        manifest = handoff.write_manifest(settings, results)
        handoff.exec_service(command, handoff.service_env(os.environ, settings, results, manifest))


def spec_arguments(command):
    command = click.option("--dataset", "datasets_only", is_flag=True, help="The SPECs are datasets.")(command)
    return click.argument("specs", nargs=-1, metavar="SPEC...")(command)


def parse_spec_args(specs, datasets_only: bool):
    from .spec import parse_specs

    return parse_specs(list(specs), "dataset" if datasets_only else "model")


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print the documented JSON document.")(command)


def cache_layout(settings: Settings):
    from .layout import Layout

    return Layout(settings.cache_dir, settings.state_dir, settings.link_root)


@cli.command(name="warm")
@settings_options(names=CACHE_SETTINGS + ("warm", "warm_lock", "dtype"))
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@reports_errors
def warm_command(specs, **flags):
    """Warm models already in the cache (no network): --warm page-cache (default here) or gpu[:N].

    Logs bytes, seconds, GB/s and the device per repo. With --warm-lock (page
    cache), stays up holding the pages until SIGTERM.
    """
    from .api import warm
    from .spec import parse_specs

    settings = load_settings(flags)
    mode = "page-cache" if settings.warm == "none" else settings.warm  # "none" means nothing to do here
    reports = warm(list(parse_specs(list(specs), "model")), mode=mode, dtype=settings.dtype,
                   lock=settings.warm_lock, cache_dir=settings.cache_dir, state_dir=settings.state_dir)
    if settings.warm_lock and any(r and r.locked_bytes for r in reports):
        hold_until_stopped()


@cli.command(name="ls")
@settings_options(names=CACHE_SETTINGS)
@json_option
@reports_errors
def ls_command(as_json, **flags):
    """List every repo in the cache: revisions, refs, complete or partial, links, size, last use."""
    from . import cache, views

    info = cache.list_cache(cache_layout(load_settings(flags)))
    if as_json:
        emit_json(views.ls_json(info))
    else:
        click.echo(views.table(views.ls_table(info)))
        click.echo(views.ls_footer(info))


@cli.command()
@settings_options(names=CACHE_SETTINGS)
@spec_arguments
@json_option
@reports_errors
def status(specs, datasets_only, as_json, **flags):
    """Is each SPEC (user/name[:revision]) complete in the cache? Exit 0 only when all are.

    No network. For readiness probes: `preloader status org/model && start`.
    """
    from . import cache, views

    items = cache.status(cache_layout(load_settings(flags)), parse_spec_args(specs, datasets_only))
    if as_json:
        emit_json(views.status_json(items))
    else:
        for item in items:
            click.echo(f"{'ready' if item.complete else 'NOT READY'}  {item.path or '-'}  {item.message}")
    sys.exit(0 if all(i.complete for i in items) else 1)


@cli.command()
@settings_options(names=CACHE_SETTINGS + HUB_SETTINGS)
@spec_arguments
@click.option("--repair", is_flag=True, help="Re-fetch only the missing, truncated or corrupt files.")
@json_option
@reports_errors
def verify(specs, datasets_only, repair, as_json, **flags):
    """Re-hash cached files (sha256 for LFS files, git blob sha1 for others) against their etags.

    Reports missing, truncated and corrupt files; a broken snapshot loses its
    completion record. Exit 1 when anything is (still) broken.
    """
    from . import cache, views

    settings = load_settings(flags)
    hub = None
    if repair:
        from .hub import Hub

        hub = Hub(settings.endpoint, settings.token, workers=settings.workers)
    chosen = parse_spec_args(specs, datasets_only) if specs else None
    checks = cache.verify(cache_layout(settings), chosen, repair=repair, hub=hub, lock_timeout=settings.lock_timeout)
    if as_json:
        emit_json(views.verify_json(checks))
    else:
        for c in checks:
            state = "ok" if c.ok else "BROKEN"
            detail = "; ".join(f"{kind}: {', '.join(files)}" for kind, files in
                               (("missing", c.missing), ("truncated", c.truncated), ("corrupt", c.corrupt),
                                ("repaired", c.repaired)) if files)
            click.echo(f"{state}  {c.repo_type} {c.repo_id}@{c.commit[:12]}  {c.checked} files checked  {detail}")
    sys.exit(0 if all(c.ok for c in checks) else 1)


def confirm(what: str, yes: bool) -> None:
    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove {what}?", abort=True, err=True)


@cli.command(name="rm")
@settings_options(names=CACHE_SETTINGS + ("lock_timeout",))
@spec_arguments
@click.option("--revision", help="Remove only this revision (branch, tag or commit) of each SPEC.")
@click.option("--all", "everything", is_flag=True, help="Remove every repo in the cache.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation on a TTY.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
@json_option
@reports_errors
def rm_command(specs, datasets_only, revision, everything, yes, dry_run, as_json, **flags):
    """Remove repos (SPEC: user/name) or revisions (user/name:revision, or --revision).

    Removes snapshots, their refs, aliases and `latest` links, and blobs no
    remaining revision uses. Takes the repo lock: waits for a running preload,
    or fails (75) after --lock-timeout.
    """
    from . import cache, views
    from .spec import RepoSpec

    if bool(specs) == everything:
        raise click.UsageError("give SPECs or --all (not both)")
    settings = load_settings(flags)
    parsed = parse_spec_args(specs, datasets_only)
    # user/name removes the whole repo; user/name:revision (or --revision) only that revision.
    whole = [p for p, text in zip(parsed, specs, strict=False) if ":" not in text and not revision]
    partial = [RepoSpec(p.repo_type, p.repo_id, revision or p.revision) for p in parsed if p not in whole]
    lay = cache_layout(settings)
    if not dry_run:
        plan = cache.remove(lay, whole, partial, everything=everything, dry_run=True)
        confirm(f"{len(plan.removed)} snapshot(s) from {settings.cache_dir}", yes)
    report = cache.remove(lay, whole, partial, everything=everything, lock_timeout=settings.lock_timeout,
                          dry_run=dry_run)
    if as_json:
        emit_json(views.removal_json(report, "rm"))
    else:
        for r in report.removed:
            click.echo(f"{'would remove' if dry_run else 'removed'}  {r.repo_type} {r.repo_id}@{r.commit[:12]}")
        click.echo(f"{'would free' if dry_run else 'freed'} {views.human_size(report.freed)}")


@cli.command()
@settings_options(names=CACHE_SETTINGS)
@click.option("--max-size", help="Evict until the cache is at most this big (500M, 200G, 1.5T).")
@click.option("--older-than", help="Evict snapshots not used for this long (12h, 30d).")
@click.option("--keep-last", type=int, default=0, show_default=True,
              help="Never evict the N most recently used snapshots of each repo.")
@click.option("--keep", multiple=True, metavar="SPEC", help="Never evict this user/name[:revision] (repeatable).")
@click.option("--keep-dataset", multiple=True, metavar="SPEC", help="Never evict this dataset (repeatable).")
@click.option("--grace", default="1h", show_default=True,
              help="Remove partial downloads and temp files older than this.")
@click.option("--dry-run", is_flag=True, help="Show what would go.")
@json_option
@reports_errors
def prune(max_size, older_than, keep_last, keep, keep_dataset, grace, dry_run, as_json, **flags):
    """Evict least recently used complete snapshots until the bounds hold; clean stale leftovers.

    "Used" is recorded when the preloader hands a snapshot to a service or
    `wait` returns it. Never evicts a locked repo's snapshots or a --keep.
    """
    from . import cache, views
    from .config import parse_duration, parse_size
    from .errors import ConfigError
    from .spec import parse_specs

    try:
        size = parse_size(max_size) if max_size else None
        age = parse_duration(older_than) if older_than else None
        grace_s = parse_duration(grace)
    except ValueError as error:
        raise ConfigError(f"invalid prune bound {error}: expected a size like 200G or a duration like 30d") from None
    kept = parse_specs(list(keep), "model", "--keep") + parse_specs(list(keep_dataset), "dataset", "--keep-dataset")
    report = cache.prune(cache_layout(load_settings(flags)), max_size=size, older_than=age, keep_last=keep_last,
                         keep=kept, grace=grace_s, dry_run=dry_run)
    if as_json:
        emit_json(views.removal_json(report, "prune"))
    else:
        verb = "would evict" if dry_run else "evicted"
        for r in report.removed:
            click.echo(f"{verb}  {r.repo_type} {r.repo_id}@{r.commit[:12]}  {views.human_size(r.size)}  {r.reason}")
        for path in report.leftovers:
            click.echo(f"{'would remove' if dry_run else 'removed'} leftover  {path}")
        for line in report.skipped:
            click.echo(f"skipped  {line}")
        click.echo(f"{'would free' if dry_run else 'freed'} {views.human_size(report.freed)}")


@cli.command()
@settings_options
@json_option
@reports_errors
def doctor(as_json, **flags):
    """Check this machine and cache: location, permissions, space, hub, token, symlinks, flock, GPU.

    Each check prints ok / warn / fail and a one-line fix. Exit 1 if any fails.
    """
    from . import views
    from .doctor import run_checks

    checks = run_checks(load_settings(flags))
    if as_json:
        emit_json(views.doctor_json(checks))
    else:
        for c in checks:
            click.echo(f"{c.status:<5} {c.name}: {c.detail}")
            if c.fix and c.status != "ok":
                click.echo(f"      fix: {c.fix}")
    sys.exit(1 if any(c.status == "fail" for c in checks) else 0)


def main() -> None:
    cli(prog_name="preloader")
