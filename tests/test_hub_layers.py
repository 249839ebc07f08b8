"""No module of a lower floor imports a higher one (STYLE.md, Layout): walks every import of the package,
deferred ones inside functions too, since a deferred import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "preloader"

# Top to bottom. A module's floor is the first entry whose name is the module or a package holding it.
FLOORS = [
    (7, ("preloader.__main__",)),
    (6, ("preloader.cli",)),  # click over the library's API, as sqlite-utils' cli.py over db.py
    (5, ("preloader", "preloader.api")),  # the public API: the package root re-exports api
    (4, ("preloader.preloading", "preloader.doctor")),
    (3, ("preloader.hub",)),
    (2, ("preloader.config", "preloader.options", "preloader.keywords", "preloader.tokens")),  # settings: a Layout
    (1, ("preloader.cache",)),
    (0, ("preloader.warm", "preloader.errors", "preloader.spec", "preloader.units", "preloader.logs",
         "preloader.version", "preloader.metrics", "preloader.lockfile")),
]
# Upward imports on their way out, each with the reason it is still here (none today). Keep this list short.
KNOWN: set[tuple[str, str]] = set()


def floor(module: str) -> int:
    best = None
    for level, names in FLOORS:
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (level, name)
    assert best is not None, f"{module} is on no floor: add it to FLOORS"
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The preloader modules `path` imports; `from pkg import name` names the submodule when there is one."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = any((PACKAGE.parent / Path(*sub.split("."))).with_suffix(s).exists() for s in (".py",)) \
                    or (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.add(sub if is_module else target)
    return {m for m in found if m == "preloader" or m.startswith("preloader.")}


def upward_imports() -> list[tuple[str, str]]:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in sorted(imports(path)):
            if floor(imported) > floor(importer) and (importer, imported) not in KNOWN:
                upward.append((importer, imported))
    return upward


def test_no_lower_floor_imports_a_higher_one():
    assert upward_imports() == []


def test_the_walk_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a hub module importing the engine, or the package root, is caught."""
    fake = tmp_path / "preloader"
    (fake / "hub").mkdir(parents=True)
    (fake / "preloading").mkdir()
    for name in ("__init__.py", "hub/__init__.py", "preloading/__init__.py", "preloading/retry.py",
                 "errors.py"):
        (fake / name).write_text("")
    (fake / "hub" / "errors.py").write_text("from ..errors import x\nfrom ..preloading.retry import y\n")
    (fake / "hub" / "connections.py").write_text("def f():\n    from .. import __version__\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports() == [("preloader.hub.connections", "preloader"),
                                ("preloader.hub.errors", "preloader.preloading.retry")]
