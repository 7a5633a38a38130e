"""What an installed wheel holds is what the code loads.

The wheel's contents are decided by setup.cfg (``packages = find:`` with ``include``, and
``package_data`` globs); the code names files (``resources.files(...).joinpath(...)``, Jinja's
``PackageLoader``, template names) and modules (``python -m lectr.…`` in a child process or in
the docs). A file the code needs that setup.cfg does not ship works in a checkout and fails on
a user's machine; a module path left in a string after a move fails only when it runs. These
tests read setup.cfg the way setuptools does and hold every such name against it.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import re
from pathlib import Path

import pytest

import lectr

PACKAGE = Path(lectr.__file__).resolve().parent
REPO = PACKAGE.parent
LOCAL_ONLY = ("bench/results/",)  # gitignored output of `lectr bench` in a checkout


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _packages(include: list[str]) -> dict[str, Path]:
    """As setuptools' ``find_packages``: directories with an ``__init__.py``, below packages only."""
    found: dict[str, Path] = {}
    stack = [PACKAGE]
    while stack:
        directory = stack.pop()
        if not (directory / "__init__.py").is_file():
            continue
        name = ".".join(directory.relative_to(REPO).parts)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
            found[name] = directory
        stack.extend(d for d in directory.iterdir() if d.is_dir() and d.name != "__pycache__")
    return found


def shipped_files() -> set[str]:
    """Paths (relative to the repository) that the wheel built from setup.cfg holds."""
    cfg = _setup_cfg()
    packages = _packages(cfg["options.packages.find"]["include"].split())
    data: dict[str, list[str]] = {}
    for key, value in cfg["options.package_data"].items():
        data[key] = [p.strip() for p in re.split(r"[,\n]", value) if p.strip()]
    out: set[str] = set()
    for name, directory in packages.items():
        out.update(p.relative_to(REPO).as_posix() for p in directory.glob("*.py"))
        for pattern in data.get(name, []) + data.get("", []):
            out.update(p.relative_to(REPO).as_posix() for p in directory.glob(pattern) if p.is_file())
    return out


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_file_under_the_package_is_in_the_wheel():
    on_disk = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
               and not any(p.relative_to(PACKAGE).as_posix().startswith(d) for d in LOCAL_ONLY)}
    missing = sorted(on_disk - shipped_files())
    assert not missing, f"not shipped in the wheel (setup.cfg package_data, or an __init__.py): {missing}"


def _literal_args(call: ast.Call) -> list[str] | None:
    if all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args):
        return [a.value for a in call.args]
    return None


def resource_paths() -> list[tuple[str, str]]:
    """(where, path relative to the repository) for every package resource the code names literally:
    ``resources.files("pkg").joinpath("a", "b")`` and ``jinja2.PackageLoader("pkg", "dir")``."""
    found = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            inner = node.func.value
            if (node.func.attr == "joinpath" and isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute)
                    and inner.func.attr == "files" and (pkg := _literal_args(inner))
                    and (parts := _literal_args(node))):
                if pkg[0].split(".")[0] == "lectr":
                    found.append((where, "/".join([*pkg[0].split("."), *parts])))
            elif node.func.attr == "PackageLoader" and (args := _literal_args(node)) and len(args) == 2:
                found.append((where, "/".join([*args[0].split("."), args[1]])))
    return found


def test_the_resources_the_code_loads_are_shipped():
    shipped = shipped_files()
    paths = resource_paths()
    assert {p for _, p in paths} >= {"lectr/sql", "lectr/seeds/model_downgrades.csv", "lectr/dashboard/templates",
                                     "lectr/dashboard/static/lectr.css"}, paths  # the scan still sees them
    for where, rel in paths:
        target = REPO / rel
        assert target.exists(), f"{where} loads {rel}, which does not exist"
        files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
        assert files, f"{where} loads {rel}, which is empty"
        missing = [p.relative_to(REPO).as_posix() for p in files if p.relative_to(REPO).as_posix() not in shipped]
        assert not missing, f"{where} loads {rel}, but the wheel would not hold {missing}"


def test_every_template_named_is_there():
    templates = PACKAGE / "dashboard" / "templates"
    named = set()
    for path in source_files():
        named |= {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
                  and isinstance(n.value, str) and re.fullmatch(r"[\w-]+\.html", n.value)}
    for page in templates.glob("*.html"):
        named |= set(re.findall(r"""{%-?\s*(?:extends|include|from|import)\s+["']([^"']+)["']""", page.read_text()))
    assert named, "no template names found: the scan is broken"
    assert not sorted(n for n in named if not (templates / n).is_file())


def _runnable(module: str) -> bool:
    path = REPO.joinpath(*module.split("."))
    if (path / "__main__.py").is_file():
        return True
    file = path.with_suffix(".py")
    return file.is_file() and re.search(r"^if __name__ == [\"']__main__[\"']:", file.read_text(), re.M) is not None


def module_mentions() -> list[tuple[str, str]]:
    """(where, module) for every ``-m lectr.…`` a child process is started with, and every
    ``python -m lectr.…`` the docs and docstrings tell a user to run."""
    found = []
    for path in source_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Call, ast.List, ast.Tuple)):
                items = node.args if isinstance(node, ast.Call) else node.elts
                values = [a.value if isinstance(a, ast.Constant) else None for a in items]
                found += [(f"{path.relative_to(REPO)}:{node.lineno}", values[i + 1])
                          for i, v in enumerate(values[:-1]) if v == "-m" and isinstance(values[i + 1], str)]
    docs = [REPO / "README.md", *PACKAGE.rglob("*.md"), *source_files()]
    for path in docs:
        for match in re.finditer(r"python3? (?:-\w+ )*-m (lectr[\w.]*)", path.read_text()):
            found.append((str(path.relative_to(REPO)), match.group(1).rstrip(".")))
    return found


def test_every_module_started_or_documented_with_python_m_runs():
    mentions = module_mentions()
    modules = {m for _, m in mentions}
    assert {"lectr", "lectr.pricing.seed", "lectr.bench.run"} <= modules, modules  # the scan still sees them
    broken = sorted({(where, m) for where, m in mentions if not _runnable(m)})
    assert not broken, f"`python -m` of a module that does not exist or has no __main__: {broken}"


@pytest.mark.parametrize("module", ["lectr.devtools.mock_provider", "lectr.pricing.seed", "lectr.bench.run"])
def test_module_entry_points_a_user_may_run(module):
    assert _runnable(module), module
