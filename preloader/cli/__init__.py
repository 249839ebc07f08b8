"""The click CLI: thin commands over the library. The only package that imports click.

`preload` holds the entrypoint's commands (run, wait, plan, warm), `cache` the volume's
(ls, status, verify, rm, prune, doctor), `base` what they share, `render` their output.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from .. import __version__, logs
from ..config import secrets_in
from ..errors import OutputClosedError, exit_codes
from .base import error_json, json_errors, silence_stdout

# command name -> module in this package and the command's name there
COMMANDS = {
    "run": ("preload", "run"), "plan": ("preload", "plan"), "wait": ("preload", "wait"),
    "warm": ("preload", "warm_command"), "pull": ("preload", "pull"), "lock": ("lock", "lock_command"),
    "ls": ("cache", "ls_command"), "status": ("cache", "status"), "verify": ("cache", "verify"),
    "rm": ("cache", "rm_command"), "prune": ("cache", "prune"), "dedup": ("cache", "dedup_command"),
    "export": ("cache", "export_command"), "import": ("cache", "import_command"), "doctor": ("cache", "doctor"),
}


class LazyGroup(click.Group):
    """Imports a command's module when that command runs (or help lists it): a container's start runs
    `preloader run` and should not load the cache-management commands as well."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


HELP = """Preload Hugging Face models and datasets into a shared cache, then start the service.

\b
Exit codes:
""" + "\n".join(f"  {code:<8}{meaning}" for code, meaning in exit_codes())


@click.group(cls=LazyGroup, help=HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="preloader")
def cli():
    pass


class _Redacting:
    """A stream that scrubs secrets: click's own usage errors quote what was typed."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(logs.redact(text))

    def flush(self) -> None:
        self.stream.flush()


def _token_flag(argv: list[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg == "--":
            return None
        if arg.startswith("--token="):
            return arg.partition("=")[2]
        if arg == "--token" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def _log_format_flag(argv: list[str]) -> dict:
    """--log-format as typed, before click parses anything: a usage error must honour it too."""
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("--log-format="):
            return {"log_format": arg.partition("=")[2]}
        if arg == "--log-format" and index + 1 < len(argv):
            return {"log_format": argv[index + 1]}
    return {}


def main() -> None:
    for secret in secrets_in(os.environ, {"token": _token_flag(sys.argv[1:])}):
        logs.add_secret(secret)
    as_json = json_errors(_log_format_flag(sys.argv[1:]))
    try:
        try:
            code = cli.main(prog_name="preloader", standalone_mode=False)
        except SystemExit as done:
            code = done.code
            # click's own answer to EPIPE is exit 1 with stdout wrapped (its wrapper's name: the class itself is
            # deprecated, and reading it warns).
            if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
                silence_stdout()
                code = OutputClosedError.exit_code
        except click.ClickException as error:
            if as_json:
                click.echo(error_json(error.format_message(), error.exit_code, usage=_usage(error)), err=True)
            else:
                error.show(file=_Redacting(sys.stderr))
            code = error.exit_code
        except click.Abort:
            click.echo(error_json("aborted", 1) if as_json else "Aborted!", err=True)
            code = 1
        # Flushed here, not at interpreter exit, so that a reader that has gone is seen (below) and not
        # reported by Python as "Exception ignored ... BrokenPipeError".
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        code = OutputClosedError.exit_code
    sys.exit(code if isinstance(code, int) else 0 if code is None else 1)


def _usage(error: click.ClickException) -> str | None:
    ctx = getattr(error, "ctx", None)
    return ctx.get_usage() if ctx is not None else None
