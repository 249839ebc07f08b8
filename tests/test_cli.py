"""The CLI surface: help for every command, the settings table of docs/settings.md in step with the code."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT

from preloader.cli import COMMANDS, cli
from preloader.options import OPTIONS


def readme_settings_rows() -> dict[str, str]:
    """{env var: flag} from the settings table in docs/settings.md."""
    text = (ROOT / "docs" / "settings.md").read_text()
    section = text.split("\n## The settings table\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = re.match(r"`(--[a-z-]+)`", cells[1]).group(1)
    return rows


def test_readme_table_matches_settings():
    expected = {}
    for option in OPTIONS:
        expected[option.env] = option.flag
        for fallback in option.fallbacks:
            expected[fallback] = option.flag
    assert readme_settings_rows() == expected


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    first_line = cli.get_command(None, command).help.split("\n")[0]
    assert " ".join(first_line.split()) in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["run", "plan", "wait"])
def test_every_setting_has_a_flag_in_help(command):
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    for option in OPTIONS:
        assert option.flag in result.output
        assert option.env in result.output


def test_help_lists_every_command():
    output = CliRunner().invoke(cli, ["--help"]).output
    assert all(f"  {name} " in output for name in COMMANDS)


def test_usage_error_is_exit_2():
    result = CliRunner().invoke(cli, ["run", "--no-such-flag"])
    assert result.exit_code == 2


def test_config_error_is_one_line_exit_78():
    result = CliRunner().invoke(cli, ["plan"], env={"RUNPOD_HUGGINGFACE_MODEL": "nope", "PRELOADER_DEBUG": ""})
    assert result.exit_code == 78
    assert result.output.strip().splitlines() == [
        "preloader: error: invalid settings: RUNPOD_HUGGINGFACE_MODEL item 1 'nope': no \"/\" between user and name"
    ]


def test_debug_shows_traceback():
    result = CliRunner().invoke(cli, ["plan"], env={"RUNPOD_HUGGINGFACE_MODEL": "nope", "PRELOADER_DEBUG": "1"})
    assert result.exit_code == 78
    assert "Traceback" in result.output


def test_exit_codes_in_help_and_readme_come_from_the_error_classes():
    from preloader.errors import exit_codes

    codes = exit_codes()
    assert {code for code, _ in codes} >= {"0", "1", "2", "66", "69", "70", "73", "74", "75", "76", "77", "78",
                                           "126/127", "128+N"}
    output = " ".join(CliRunner().invoke(cli, ["--help"], terminal_width=200).output.split())
    for code, meaning in codes:
        assert f"{code} {meaning}" in output
    text = (ROOT / "docs" / "exit-codes.md").read_text()
    section = text.split("# Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = [tuple(c.strip() for c in line.strip().strip("|").split("|")) for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| code")]
    assert rows == codes


def test_prune_bounds_are_checked_by_click(tmp_path):
    result = CliRunner().invoke(cli, ["prune", "--cache-dir", str(tmp_path / "hub"), "--max-size", "lots"])
    assert result.exit_code == 2
    assert "Invalid value for '--max-size': 'lots': expected a size like 500M, 200G or 1.5T" in result.output
    result = CliRunner().invoke(cli, ["prune", "--cache-dir", str(tmp_path / "hub"), "--older-than", "soon"])
    assert result.exit_code == 2 and "expected a duration like 90s, 12h or 30d" in result.output
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize("items, revision, whole, single", [
    (["org/a"], None, ["org/a@main"], []),
    (["org/a:dev", "org/b"], None, ["org/b@main"], ["org/a@dev"]),
    (["org/a:main"], None, [], ["org/a@main"]),  # naming the revision removes only that one
    (["org/a", "org/b"], "v1", [], ["org/a@v1", "org/b@v1"]),
    (["org/a", "org/a"], None, ["org/a@main"], []),
])
def test_rm_specs_split_into_repos_and_revisions(items, revision, whole, single):
    from preloader.spec import parse_removals

    got = parse_removals(items, "model", revision)
    assert ([f"{s.repo_id}@{s.revision}" for s in got[0]], [f"{s.repo_id}@{s.revision}" for s in got[1]]) == \
        (whole, single)


def help_of(command: str | None) -> str:
    args = ([command] if command else []) + ["--help"]
    result = CliRunner().invoke(cli, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def options_of(command) -> set[str]:
    return {name for param in command.params for name in param.opts + param.secondary_opts} | {"-h", "--help"}


@pytest.mark.parametrize("command", [None, *sorted(COMMANDS)])
def test_every_option_a_help_names_exists(command):
    """An option in a help text exists on that command, or on the command named right before it
    (`export --all`); what follows ` -- ` in an example is the service's own command line."""
    group = command is None
    own = options_of(cli.get_command(None, command) if command else cli)
    others = {name: options_of(cli.get_command(None, name)) for name in COMMANDS}
    wrong = []
    for line in help_of(command).splitlines():
        line = line.split(" -- ", 1)[0]
        for before, option in re.findall(r"(?:(\w+) )?(?<![\w-])(--?[a-zA-Z][\w-]*)", line):
            listed = group and line.split()[0] in others and option in others[line.split()[0]]
            if option not in own and option not in others.get(before, set()) and not listed:
                wrong.append((option, line.strip()))
    assert wrong == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_usage_marks_optional_arguments_optional(command):
    """`SPEC...` only where a SPEC is required; `[SPEC]...` where none need be given."""
    usage = help_of(command).splitlines()[0]
    for param in cli.get_command(None, command).params:
        if isinstance(param, click.Argument):
            shown = param.make_metavar(click.Context(cli.get_command(None, command)))
            assert shown in usage
            assert shown.startswith("[") == (not param.required), (command, shown)


README_EXAMPLES = [  # (an example of README.md or docs/, repos and paths made local; the code it must end with)
    ('RUNPOD_HUGGINGFACE_MODEL="org/tiny-model, org/tiny-model:dev" RUNPOD_HUGGINGFACE_DATASET="org/tiny-data:v1.0" '
     'RUNPOD_HUGGINGFACE_USER=alice RUNPOD_HUGGINGFACE_TOKEN=hf_xxx PRELOADER_CACHE_DIR="$CACHE" '
     'preloader run -- sh -c \'test -f "$PRELOADER_MODEL_PATH/config.json"\' serve.py --port 8000', 0),
    ('preloader ls --cache-dir "$CACHE"', 0),
    ("preloader run", 0),
    ('preloader wait -- sh -c \'test -d "$PRELOADER_DATASET_PATH"\'', 0),
    ("preloader plan", 0),
    ("preloader status", 0),
    ("preloader status org/tiny-model org/tiny-model:dev", 0),
    ("preloader status --dataset org/tiny-data:v1.0", 0),
    ("preloader verify --repair", 0),
    ("preloader verify org/tiny-model", 0),
    ("preloader prune --max-size 200G --older-than 30d --keep-last 1 --keep org/tiny-model "
     "--keep-dataset org/tiny-data --grace 1h --dry-run", 0),
    ("preloader rm org/tiny-model --revision dev --dry-run", 0),
    ("preloader rm --all --dry-run", 0),
    ("preloader dedup --dry-run", 0),
    ('preloader export --all -o - | PRELOADER_CACHE_DIR="$OTHER" preloader import -', 0),
    ('PRELOADER_CACHE_DIR="$OTHER" preloader status org/tiny-model:dev', 0),
    ('preloader export org/tiny-model -o "$TMP/model.tar" && PRELOADER_CACHE_DIR="$TMP/third" '
     'preloader import "$TMP/model.tar"', 0),
    ("preloader warm org/tiny-model", 0),
]


def test_readme_examples_run_as_written(hub, tmp_path):
    """The shell examples of README.md and docs/ that can run here (repos and paths made local; `ssh host` dropped), in
    order, on one cache; `preloader` on PATH runs this checkout."""
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "preloader"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m preloader "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()} | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_ENDPOINT": hub.url, "CACHE": str(tmp_path / "cache" / "hub"),
        "PRELOADER_CACHE_DIR": str(tmp_path / "cache" / "hub"), "OTHER": str(tmp_path / "other" / "hub"),
        "TMP": str(tmp_path), "RUNPOD_HUGGINGFACE_MODEL": "org/tiny-model, org/tiny-model:dev",
        "RUNPOD_HUGGINGFACE_DATASET": "org/tiny-data:v1.0",
    }
    for example, code in README_EXAMPLES:
        proc = subprocess.run(["sh", "-c", example], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)
        assert proc.returncode == code, (example, proc.stderr)
        assert "Traceback" not in proc.stderr, example


def test_readme_python_api_example_runs(hub, tmp_path):
    """The `cache` API block of docs/managing.md, on a cache that holds org/tiny-model (main and dev)."""
    from conftest import preloader_env, run_preloader

    cache = tmp_path / "cache" / "hub"
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL="org/tiny-model, org/tiny-model:dev")
    assert run_preloader(["run"], env).returncode == 0
    text = (ROOT / "docs" / "managing.md").read_text()
    block = text.split("The same as a Python API, returning dataclasses:\n\n```python\n", 1)[1].split("```")[0]
    code = block.replace("/cache/hub", str(cache)).replace('"org/m"', '"org/tiny-model"')
    namespace: dict = {}
    exec(compile(code, "docs/managing.md", "exec"), namespace)  # noqa: S102 - the docs' own example
    assert [r.repo_id for r in namespace["info"].repos] == ["org/tiny-model"]


@pytest.mark.parametrize("number, code, said", [
    ("EROFS", 77, "cannot write /v/x: the volume is mounted read-only; mount it read-write, or name it in "
                  "PRELOADER_READ_CACHES to only read it"),
    ("EACCES", 77, "cannot write /v/x: permission denied for uid {uid}; give this user access (chown or chmod the "
                   "volume, or a shared group with umask 002) or run as its owner"),
    ("EPERM", 77, "cannot write /v/x: permission denied for uid {uid}"),
    ("ENOSPC", 74, "cannot write /v/x: No space left on device; free space (`preloader prune --max-size ...`) or "
                   "use a bigger volume"),
    ("EDQUOT", 74, "cannot write /v/x: Disk quota exceeded; free space"),
    ("EIO", 74, "cannot write /v/x: Input/output error; the volume may be failing: check dmesg, then "
                "`preloader verify --repair`"),
    ("ENOTDIR", 74, "cannot write /v/x: a file stands where a folder should be (Not a directory)"),
    ("ENOENT", 74, "cannot write /v/x: No such file or directory; check that its folder exists and is mounted"),
    ("EISDIR", 74, "cannot write /v/x: Is a directory"),
])
def test_one_translation_of_os_errors(number, code, said):
    """errors.os_error: the code and the one line for each errno; read-only only for EROFS."""
    import errno
    import os

    from preloader.errors import os_error

    value = getattr(errno, number)
    problem = os_error(OSError(value, os.strerror(value), "/v/x"), "write")
    assert problem.exit_code == code
    assert str(problem).startswith(said.format(uid=os.geteuid()))
    assert ("read-only" in str(problem)) == (number == "EROFS")


def test_a_dangling_link_named_by_an_os_error_says_so(tmp_path):
    import errno

    from preloader.errors import os_error

    (tmp_path / "link").symlink_to(tmp_path / "gone")
    problem = os_error(OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "link")), "read")
    assert (problem.exit_code, str(problem)) == (74, f"cannot read {tmp_path / 'link'}: it is a dangling symlink "
                                                     f"(to {tmp_path / 'gone'}); mount or create its target, or "
                                                     "remove the link")
