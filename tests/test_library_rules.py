"""One owner per rule: every default is written once (options.OPTIONS), the token variables are one list, and
"a cache dir named `hub` is $HF_HOME/hub" is one function."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from conftest import ROOT

from preloader.cache.layout import Layout, hf_home_of
from preloader.config import DEFAULTS, LIBRARY_VARS, Settings, convert
from preloader.hub.client import Hub
from preloader.options import OPTIONS, OPTIONS_BY_NAME, TOKEN_VARS
from preloader.preloading import datasets, handoff

PACKAGE = ROOT / "preloader"
# Modules of this owner that must not repeat a default (cache/* keeps its own, listed in the round's notes).
NO_SECOND_DEFAULT = ("config.py", "api.py", "keywords.py", "hub/client.py", "preloading/entrypoint.py",
                     "preloading/capacity.py", "preloading/waiting.py", "preloading/datasets.py")
# Where a default is "none" by meaning rather than by value: 0 = no deadline, no bound; dtype none = no cast.
NONE_WHEN_ZERO = ("timeout", "max_cache_size", "dtype")


def test_settings_defaults_are_the_parsed_defaults_of_the_table():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for option in OPTIONS:
        if option.name not in fields or DEFAULTS[option.name] is None:
            continue
        expected = None if option.name in NONE_WHEN_ZERO else convert(option, option.default)
        assert fields[option.name].default == expected, option.name
    loaded = Settings.load({"HOME": str(Path.home())})
    for name in fields:
        assert getattr(loaded, name) == getattr(Settings(), name), name
    hub_fields = {f.name: f.default for f in dataclasses.fields(Hub)}
    for name in ("workers", "transfer", "connections", "parallel_threshold", "lock_timeout", "read_timeout"):
        assert hub_fields[name] == getattr(Settings(), name), name


def _literal(node: ast.AST | None) -> bool:
    """A value written in place (3600.0, 64 * 1024**2, "auto"), not one taken from the table (DEFAULTS[...]).
    None, False and empty values say "not given" or "off", not a default that could drift."""
    if node is None or (isinstance(node, ast.Constant) and node.value in (None, False, "")):
        return False
    if isinstance(node, (ast.Tuple, ast.List)) and not node.elts:
        return False
    return not any(isinstance(n, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)) for n in ast.walk(node))


def second_defaults(source: str) -> list[str]:
    """Parameters and dataclass fields named after a setting whose default is a literal, not the table's."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True))
            pairs += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
            found += [f"{node.name}({arg.arg}=...)" for arg, default in pairs
                      if arg.arg in OPTIONS_BY_NAME and _literal(default)]
        if isinstance(node, ast.ClassDef):
            found += [f"{node.name}.{item.target.id}" for item in node.body
                      if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                      and item.target.id in OPTIONS_BY_NAME and _literal(item.value)]
    return found


def test_no_module_writes_a_second_default():
    assert second_defaults("def f(retries=5, workers: int = 8 * 1, name=None): pass\n"
                           "class C:\n    lock_timeout: float = 3600.0\n    debug: bool = DEFAULTS['debug']\n") == [
        "f(retries=...)", "f(workers=...)", "C.lock_timeout"]  # the check itself finds what it is for
    for name in NO_SECOND_DEFAULT:
        assert second_defaults((PACKAGE / name).read_text()) == [], name


@pytest.mark.parametrize("name", TOKEN_VARS)
def test_every_token_variable_is_kept_from_the_service_and_from_datasets(name, tmp_path):
    settings = Settings.load({"PRELOADER_CACHE_DIR": str(tmp_path / "hub")})
    environ = {name: "hf_" + "x" * 34, "KEEP": "1"}
    assert name not in handoff.service_env(environ, settings, [], None)
    assert name not in datasets.environment(settings, environ)
    assert handoff.service_env(environ, settings, [], None)["KEEP"] == "1"


def test_the_token_variables_and_the_hub_rule_are_written_once():
    sources = {path.relative_to(PACKAGE).as_posix(): path.read_text() for path in PACKAGE.rglob("*.py")}
    assert [name for name, text in sources.items() if "HUGGING_FACE_HUB_TOKEN" in text] == ["options.py"]
    assert [name for name, text in sources.items()
            if '.name == "hub"' in text or ".name == HUB" in text] == ["cache/layout.py"]
    assert sources["cache/layout.py"].count(".name == HUB") == 1


@pytest.mark.parametrize("cache, home", [("/v/hub", "/v"), ("/v/cache", None), ("/hub", "/")])
def test_a_cache_named_hub_is_hf_home_slash_hub(cache, home):
    layout = Layout.build(cache)
    expected = Path(home) if home else None
    assert hf_home_of(Path(cache)) == layout.hf_home == expected
    assert layout.state_dir == (expected / "preloader" if home else Path(cache) / ".locks" / "preloader")
    assert layout.datasets_cache == (expected / "datasets" if home else layout.state_dir / "datasets")
    if home:
        assert Settings.load({"HF_HOME": home}).cache_dir == Path(cache)


def test_the_api_reads_huggingface_hubs_variables_only():
    environ = {"HF_HOME": "/hh", "HF_ENDPOINT": "http://mirror:8080", "HF_HUB_OFFLINE": "1",
               "HF_TOKEN": "hf_" + "t" * 34, "PRELOADER_CACHE_DIR": "/cli", "PRELOADER_TIMEOUT": "bad",
               "PRELOADER_RETRIES": "2", "RUNPOD_HUGGINGFACE_MODEL": "org/m", "RUNPOD_HUGGINGFACE_USER": "u"}
    s = Settings.load(environ, keywords={})
    assert (s.cache_dir, s.endpoint, s.offline, s.token, s.repos, s.retries) == (
        Path("/hh/hub"), "http://mirror:8080", True, "hf_" + "t" * 34, (), DEFAULTS["retries"])
    assert s.token_source == "HF_TOKEN" and s.offline_source == "HF_HUB_OFFLINE"
    assert set(LIBRARY_VARS) >= {"HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN", "HF_HUB_OFFLINE"}
    assert Settings.load({"HF_HUB_CACHE": "/hc", "HF_HOME": "/hh"}, keywords={"cache_dir": "/kw"}).cache_dir == Path("/kw")
    assert Settings.load({"HF_HUB_CACHE": "/hc", "HF_HOME": "/hh"}, keywords={}).cache_dir == Path("/hc")
