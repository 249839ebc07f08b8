"""The click CLI: thin commands over the library. The only module that imports click."""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from . import __version__, logs
from .config import OPTIONS, Settings, debug_requested
from .errors import Aborted, PreloaderError

SETTINGS_HELP = "Every option also reads an env var (shown in brackets); flags win."


def settings_options(command):
    """Add one click option per setting in config.OPTIONS (the README table lists the same)."""
    for option in reversed(OPTIONS):
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
    signals.install(settings.timeout)
    results = Preloader(settings, progress=sys.stderr.isatty()).run()
    signals.uninstall()
    if not command:
        return
    manifest = handoff.write_manifest(settings, results)
    handoff.exec_service(command, handoff.service_env(os.environ, settings, results, manifest))


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


def main() -> None:
    cli(prog_name="preloader")
