"""Package boundaries (ARCHITECTURE.md): the simulator is an independent van, drivers know no agent.

The simulator must not share code with what it tests: an NMEA or ELM327 bug copied from
``drivers/`` into the simulator would make both sides agree and every test pass. So
``simulator/`` imports neither ``agent`` nor ``drivers``, and ``drivers/`` does not import
``agent`` (the agent depends on the drivers, never the reverse). Checked on the source's syntax
tree, so an import inside a function or behind ``TYPE_CHECKING`` counts as much as one at the top,
and so do ``importlib.import_module("agent...")`` and ``__import__`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``; relative ones are skipped (they
    stay inside their own package)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((node.lineno, first.value))
    return sorted(found)


def forbidden_imports(package_dir: Path, banned: tuple[str, ...]) -> list[str]:
    """``path:line: module`` for every import of a ``banned`` package in ``package_dir``."""
    problems = []
    files = sorted(package_dir.rglob("*.py"))
    assert files, f"no Python files under {package_dir}"
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in _imported_modules(tree):
            if any(_is_under(module, package) for package in banned):
                problems.append(f"{path.relative_to(package_dir.parent)}:{line}: {module}")
    return problems


@pytest.mark.parametrize(
    ("package", "banned"),
    [("simulator", ("agent", "drivers")), ("drivers", ("agent",))],
)
def test_package_does_not_import(package: str, banned: tuple[str, ...]) -> None:
    assert forbidden_imports(REPO / package, banned) == []


def test_the_scan_finds_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "simulator"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "clean.py").write_text(
        "import agentx\nimport os.path\nfrom . import drivers\nfrom .agent import x\n"
        "from agents import y\nimportlib.import_module(name)\n",
        encoding="utf-8",
    )
    (pkg / "sub" / "bad.py").write_text(
        "import json, drivers.nmea\n"
        "from agent import config\n"
        "def f():\n"
        "    from drivers import gnss\n"
        "if TYPE_CHECKING:\n"
        "    import agent.config as c\n"
        "m = importlib.import_module('agent.cli')\n"
        "n = __import__('drivers')\n",
        encoding="utf-8",
    )
    assert forbidden_imports(pkg, ("agent", "drivers")) == [
        "simulator/sub/bad.py:1: drivers.nmea",
        "simulator/sub/bad.py:2: agent",
        "simulator/sub/bad.py:4: drivers",
        "simulator/sub/bad.py:6: agent.config",
        "simulator/sub/bad.py:7: agent.cli",
        "simulator/sub/bad.py:8: drivers",
    ]
