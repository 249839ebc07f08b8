"""What every command shares: settings options from config.OPTIONS, parameter types, error reporting, output."""

from __future__ import annotations

import errno
import functools
import json
import os
import select
import sys
import time
import traceback
from pathlib import Path

import click

from .. import logs
from ..config import Settings, debug_requested, secrets_in
from ..errors import OS_FAULTS, Aborted, ConfigError, OutputClosedError, PreloaderError, os_error
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
    """Add one click option per setting in config.OPTIONS (docs/settings.md lists the same), or those in `names`."""
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


def load_settings(flags: dict, environ=None) -> Settings:
    """Settings from the environment (`environ`, default os.environ) and these flags; every token value is a
    known secret first."""
    environ = os.environ if environ is None else environ
    for secret in secrets_in(environ, flags):
        logs.add_secret(secret)
    settings = Settings.load(environ, flags)
    logs.setup(settings.log_format, settings.log_level, adopt=("huggingface_hub",))
    folder_problem(settings.cache_dir, "cache dir", settings.cache_dir_source)
    folder_problem(settings.state_dir, "state dir", "PRELOADER_STATE_DIR")
    return settings


def folder_problem(path: Path, what: str, source: str) -> None:
    """ConfigError (78) for a cache or state dir that is a file or a dangling symlink: every command would
    otherwise fail later in its own way (not found, read-only, nothing cached)."""
    setting = source if source not in ("default", "HF_HOME/hub") else "PRELOADER_CACHE_DIR"
    # os.path answers False where it may not look (EACCES): that is for the command itself (or doctor) to tell.
    if os.path.islink(path) and not os.path.exists(path):
        raise ConfigError(f"the {what} {path} is a dangling symlink (to {os.readlink(path)}): mount or create its "
                          f"target, or point {setting} at a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"the {what} {path} is a file, not a folder: point {setting} at a folder, or move the "
                          "file away")


def json_errors(flags: dict | None = None, environ=os.environ) -> bool:
    """Whether the final error line must be JSON: --log-format / PRELOADER_LOG_FORMAT, read on its own (like
    PRELOADER_DEBUG) so that it holds when other settings fail to parse."""
    value = (flags or {}).get("log_format") or environ.get("PRELOADER_LOG_FORMAT", "")
    return str(value).strip().lower() == "json"


def reports_errors(command):
    """Turn library errors into `preloader: error: ...` and their exit codes; an OSError the library did not
    translate (with the path it is about) becomes the same line through errors.os_error, never exit 70."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = debug_requested(os.environ) or bool(kwargs.get("debug"))
        as_json = json_errors(kwargs)
        try:
            return command(*args, **kwargs)
        except PreloaderError as error:
            report(error, debug, as_json, error.exit_code)
            sys.exit(error.exit_code)
        except Aborted as error:
            report(error, debug, as_json, error.exit_code)
            # Download threads may still be blocked in a read; do not wait for them.
            os._exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError as error:
            if not stdout_closed():
                bug(error, as_json)
            # The reader of our output (`| head -1`) has gone: exit as a shell reports SIGPIPE, quietly, like
            # cat and git do. The export, whose reader getting less than the whole archive matters, says so.
            silence_stdout()
            sys.exit(OutputClosedError.exit_code)
        except OSError as error:
            if error.filename is None and errno.errorcode.get(error.errno) not in OS_FAULTS:
                bug(error, as_json)
            translated = os_error(error)
            report(translated, debug, as_json, translated.exit_code, cause=error)
            sys.exit(translated.exit_code)
        except Exception as error:  # a bug: show everything (tokens still scrubbed)
            bug(error, as_json)

    return wrapper


def bug(error: BaseException, as_json: bool) -> None:
    report(error, True, as_json, 70)
    if not as_json:
        click.echo(f"{logs.PREFIX}: error: this is a bug in preloader (exit 70)", err=True)
    logs.flush()
    os._exit(70)


def report(error: BaseException, debug: bool, as_json: bool = False, exit_code: int | None = None, *,
           cause: BaseException | None = None) -> None:
    """The one error line on stderr (a JSON object with --log-format json), after the traceback with debug."""
    shown = cause or error
    trace = "".join(traceback.format_exception(shown)) if debug else None
    if as_json:
        line = error_json(str(error), exit_code, traceback=trace,
                          bug="this is a bug in preloader" if exit_code == 70 else None)
    else:
        if trace:
            click.echo(logs.redact(trace), err=True)
        line = logs.redact(f"{logs.PREFIX}: error: {error}")
    click.echo(line, err=True)
    logs.flush()


def error_json(message: str, exit_code: int | None, **extra) -> str:
    """An error as one JSON line, in the shape of logs.JsonFormatter's records, scrubbed of secrets."""
    data = {"ts": round(time.time(), 3), "level": "error", "message": message, "exit_code": exit_code}
    data.update({key: value for key, value in extra.items() if value is not None})
    return logs.redact(json.dumps(data))


def fail(message: str, exit_code: int, flags: dict | None = None) -> None:
    """End a command with one error line that is not a library error (status with nothing to check)."""
    if json_errors(flags):
        click.echo(error_json(message, exit_code), err=True)
    else:
        click.echo(logs.redact(f"{logs.PREFIX}: error: {message}"), err=True)
    sys.exit(exit_code)


def stdout_closed() -> bool:
    """Whether the reader of stdout is gone (a pipe whose read end closed polls as an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so Python's flush at exit does not print "Exception ignored"
    (what the Python docs advise for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def emit(as_json: bool, document: dict, text: str) -> None:
    """Print the command's JSON document with --json, else its text for people."""
    click.echo(json.dumps(document, indent=2, default=str) if as_json else text)


def spec_arguments(command):
    command = click.option("--dataset", "datasets_only", is_flag=True,
                           help="The SPECs are datasets (an hf://datasets/... SPEC is one without it).")(command)
    return click.argument("specs", nargs=-1, metavar="[SPEC]...")(command)


def parse_spec_args(specs, datasets_only: bool) -> tuple[RepoSpec, ...]:
    """SPEC arguments: models, except those whose form names a dataset (`hf://datasets/...`,
    `https://<host>/datasets/...`); with --dataset, every one is a dataset (a model URI is an error)."""
    return parse_specs(list(specs), "dataset" if datasets_only else "model", typed=not datasets_only)


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print the documented JSON document.")(command)
