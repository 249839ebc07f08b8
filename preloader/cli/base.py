"""What every command shares: settings options from config.OPTIONS, parameter types, error reporting, output."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback

import click

from .. import logs
from ..config import Settings, debug_requested, secrets_in
from ..errors import Aborted, PreloaderError
from ..options import OPTIONS
from ..spec import RepoSpec, parse_specs
from ..units import YEAR, OutOfRange, human_duration, parse_duration, parse_size


class Parsed(click.ParamType):
    """A flag parsed by one of the library's parsers (units.parse_size, units.parse_duration), within the
    range the parser is given: what is out of it is refused like what is malformed."""

    def __init__(self, name: str, parse, expected: str, valid: str) -> None:
        self.name, self.parse, self.expected, self.valid = name, parse, expected, valid

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except OutOfRange:
            self.fail(f"{logs.shown(value)}: out of range: expected {self.valid}", param, ctx)
        except ValueError:
            self.fail(f"{logs.shown(value)}: expected {self.expected}", param, ctx)


# prune --older-than 2y is a fair ask of a cache; a timeout of a year is not (options.OPTIONS says those).
CACHE_AGE = 10 * YEAR
SIZE = Parsed("size", parse_size, "a size like 500M, 200G or 1.5T", "a size from 0 to 2^63-1 bytes")
DURATION = Parsed("duration", functools.partial(parse_duration, most=CACHE_AGE), "a duration like 90s, 12h or 30d",
                  f"a duration from 0 to {human_duration(CACHE_AGE)}")
CACHE_SETTINGS = ("cache_dir", "state_dir", "link_root", "latest", "log_format", "log_level", "debug")
HUB_SETTINGS = ("user", "token", "token_file", "endpoint", "lock_timeout", "retries", "workers", "transfer",
                "connections", "parallel_threshold", "read_timeout")


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
    """Settings from the environment and these flags; every token value is a known secret first."""
    for secret in secrets_in(os.environ, flags):
        logs.add_secret(secret)
    settings = Settings.load(os.environ, flags)
    logs.setup(settings.log_format, settings.log_level)
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
        click.echo(logs.redact("".join(traceback.format_exception(error))), err=True)
    click.echo(logs.redact(f"{logs.PREFIX}: error: {error}"), err=True)
    logs.flush()


def emit(as_json: bool, document: dict, text: str) -> None:
    """Print the command's JSON document with --json, else its text for people."""
    click.echo(json.dumps(document, indent=2, default=str) if as_json else text)


def spec_arguments(command):
    command = click.option("--dataset", "datasets_only", is_flag=True,
                           help="The SPECs are datasets (an hf://datasets/... SPEC is one without it).")(command)
    return click.argument("specs", nargs=-1, metavar="SPEC...")(command)


def parse_spec_args(specs, datasets_only: bool) -> tuple[RepoSpec, ...]:
    """SPEC arguments: models, except those whose form names a dataset (`hf://datasets/...`,
    `https://<host>/datasets/...`); with --dataset, every one is a dataset (a model URI is an error)."""
    return parse_specs(list(specs), "dataset" if datasets_only else "model", typed=not datasets_only)


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print the documented JSON document.")(command)
