"""pyproject.toml: the packages, console commands, shipped configs and dependencies match the code."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from distill.config import configs_dir, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LAYERS = ("kdmcse_base", "teacher_cache", "distill", "eval", "kdmcse")
# the checkout's own top-level names, the test helpers (tests/fault_kit.py, ...) among them
OWN = {*LAYERS, "scripts", "kdmcse_cli", "benchmarks", "tests", *(p.stem for p in (ROOT / "tests").glob("*.py"))}
CODE = (*LAYERS, "scripts")
# used without an import of its own name: torch.utils.tensorboard needs the tensorboard package
IMPORTED_INDIRECTLY = {"tensorboard"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> set[str]:
    return {normalise(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def third_party_imports(packages: tuple[str, ...]) -> set[str]:
    names = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in OWN}


def test_the_package_list_is_every_package_on_disk():
    on_disk = {".".join(path.parent.relative_to(ROOT).parts)
               for layer in ("kdmcse_base", "distill", "teacher_cache", "eval", "kdmcse")
               for path in (ROOT / layer).rglob("__init__.py")}
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    assert listed - on_disk == {"kdmcse_cli", "distill.configs"} and on_disk <= listed


def test_every_console_command_runs_a_scripts_main():
    commands = PROJECT["project"]["scripts"]
    assert {"kdmcse-cache", "kdmcse-train", "kdmcse-evaluate"} <= set(commands)
    for target in commands.values():
        module, function = target.split(":")
        source = (ROOT / "scripts" / f"{module.removeprefix('kdmcse_cli.')}.py").read_text()
        assert f"def {function}(" in source


def test_shipped_configs_are_found_by_name_in_a_checkout():
    assert configs_dir() == ROOT / "configs"
    assert resolve_config_path("kdmcse_bert_flickr") == ROOT / "configs" / "kdmcse_bert_flickr.yaml"
    assert resolve_config_path("simcse_bert.yaml") == ROOT / "configs" / "simcse_bert.yaml"
    assert resolve_config_path("no_such_config") == Path("no_such_config")  # load_config names it


def imported_distributions(packages: tuple[str, ...]) -> set[str]:
    distributions = importlib.metadata.packages_distributions()
    return {normalise(dist) for name in third_party_imports(packages) for dist in distributions.get(name, [name])}


def test_dependencies_are_exactly_what_the_code_imports():
    extras = {name: declared(values) for name, values in PROJECT["project"]["optional-dependencies"].items()}
    required = declared(PROJECT["project"]["dependencies"])
    imported = imported_distributions(CODE)
    optional = extras["offline"] | extras["export"] | extras["static"] | extras["tracking"]
    assert imported - required - optional == set()  # all declared
    assert extras["tracking"] <= imported  # distill/metrics_log.py imports each when train.report_to names it
    # the static extra: model2vec imported by distill/static_student.py; skeletoken by model2vec's distillation
    assert extras["static"] - imported == {"skeletoken"}
    assert required - imported - IMPORTED_INDIRECTLY == set()  # nothing declared that nothing imports
    # the export extra: onnxruntime imported by distill/export.py; onnx and onnxscript by torch.onnx's exporter
    assert extras["export"] - imported == {"onnx", "onnxscript"}
    benchmarks = imported_distributions(("benchmarks",))
    assert benchmarks - required - extras["benchmarks"] - extras["export"] == set()
    assert extras["benchmarks"] <= benchmarks
