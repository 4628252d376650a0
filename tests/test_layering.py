"""Imports follow the data flow: kdmcse_base (files, process groups, offline model aliases) ->
teacher_cache (corpora, teacher, cache) -> distill -> eval -> kdmcse (the Python entry point that joins them).

A package may import the ones below it, never one above it, so a reader can follow the data from
the bottom of the import graph to the top; and no two modules import each other, inside a package or
across packages (no circle, however long). Imports inside functions count too.
"""
from __future__ import annotations

import ast
import re
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


# --- no circle between modules, inside a package or across them ------------------------------------


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of the file; ``from p import m`` counts
    both the package ``p`` and its module ``m``)."""
    paths = {module_name(root, p): p for package in LAYERS if (root / package).is_dir()
             for p in (root / package).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {_project_module(t, paths) for t in targets} - {None, name}
    return graph


def _project_module(target: str, paths: dict[str, Path]) -> str | None:
    while target and target not in paths:
        target = target.rpartition(".")[0]
    return target or None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's components)."""
    index, low, stack, found = {}, {}, [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other():
    assert circles(import_graph(ROOT)) == []


def test_the_check_sees_a_circle_through_a_package_and_a_relative_import(tmp_path):
    (tmp_path / "distill" / "modules").mkdir(parents=True)
    (tmp_path / "distill" / "__init__.py").write_text("")
    (tmp_path / "distill" / "objective.py").write_text("from distill.modules import AAHR\n")
    (tmp_path / "distill" / "modules" / "__init__.py").write_text("from .aahr import AAHR\n")
    (tmp_path / "distill" / "modules" / "aahr.py").write_text("def f():\n    from ..objective import Step\n")
    (tmp_path / "distill" / "step.py").write_text("import distill.objective\n")
    assert circles(import_graph(tmp_path)) == [["distill.modules", "distill.modules.aahr", "distill.objective"]]


def test_eval_takes_from_teacher_cache_only_what_is_about_the_teacher_cache():
    """Shared file utilities (the data directory, data lines, their error) live on the ground floor; eval
    imports teacher_cache only to read a cache (retrieval's held-out images)."""
    importers = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "eval").rglob("*.py")
                       if re.search(r"^\s*(from|import) teacher_cache", path.read_text(), re.MULTILINE))
    assert importers == ["eval/retrieval.py"]
    imported = re.findall(r"^from teacher_cache(?:\.\w+)* import (.+)$", (ROOT / "eval" / "retrieval.py").read_text(),
                          re.MULTILINE)
    assert {name.strip() for line in imported for name in line.split(",")} <= {"TeacherCache", "open_cache"}
