"""Imports follow the data flow: kdmcse_base (files, process groups, offline model aliases) ->
teacher_cache (corpora, teacher, cache) -> distill -> eval -> kdmcse (the Python entry point that joins them).

A package may import the ones below it, never one above it, so a reader can follow the data from
the bottom of the import graph to the top. Imports inside functions count too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("kdmcse_base", "teacher_cache", "distill", "eval", "kdmcse")


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in ``path`` that names one of LAYERS."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in LAYERS}
    return found


def upward_imports(package: str) -> list[str]:
    level = LAYERS.index(package)
    return [f"{path.relative_to(ROOT)}:{line} imports {target}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for target, line in imported_packages(path)
            if LAYERS.index(target) > level]


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_one_above_it(package):
    assert upward_imports(package) == []


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from eval.sts import evaluate_sts\n    import distill.trainer\n")
    assert imported_packages(module) == {("eval", 4), ("distill", 5)}
