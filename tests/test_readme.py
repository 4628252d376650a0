"""Every command, flag, config key, make target and link the README names exists, so the page a newcomer
reads first cannot drift from the code (and it stays short: at most 150 lines)."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def readme_commands() -> list[list[str]]:
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("python scripts/"):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 150


def test_every_make_target_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"make ([\w-]+)", README)):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target


def test_every_link_and_named_file_exists():
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / link).exists(), link
    for named in re.findall(r"`((?:configs|docs|reports|scripts|tests|distill)/[\w./-]+\.\w+)`", README):
        assert (ROOT / named).exists(), named
    index = (ROOT / "docs" / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", index):
        assert (ROOT / "docs" / link).exists(), link


@pytest.mark.parametrize("script", sorted({command[0] for command in readme_commands()}))
def test_every_script_and_flag_exists(script, capsys):
    """Each flag the README gives a script is in that script's ``--help`` (its main, in this process)."""
    import importlib

    try:
        code = importlib.import_module(f"kdmcse_cli.{Path(script).stem}").main(["--help"])
    except SystemExit as stop:
        code = stop.code
    helped = capsys.readouterr().out
    assert code in (0, None) and "usage:" in helped
    for command in (c for c in readme_commands() if c[0] == script):
        for flag in (word.split("=")[0] for word in command if word.startswith("--")):
            assert flag in helped, f"{script}: {flag}"


@pytest.mark.slow  # a new interpreter per script
@pytest.mark.parametrize("script", sorted({command[0] for command in readme_commands()}))
def test_a_script_from_a_clone_imports_the_clone_not_an_installed_copy(script, tmp_path):
    """``python scripts/X.py --help`` as the README runs it, from another folder, with an installed copy of the
    packages on PYTHONPATH that fails on import: a script from a clone imports the clone, never that copy."""
    decoy = tmp_path / "installed"
    for package in ("kdmcse_base", "teacher_cache", "distill", "eval"):
        (decoy / package).mkdir(parents=True)
        (decoy / package / "__init__.py").write_text("raise ImportError('the installed copy was imported')\n")
    helped = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(decoy)})
    assert helped.returncode == 0, helped.stderr[-1000:]
    assert "usage:" in helped.stdout


def test_every_config_key_and_override_exists(tmp_path):
    from distill.config import load_config

    for command in readme_commands():
        overrides = [word for word in command if re.fullmatch(r"[a-z_]+\.[a-z_.]+=\S+", word)]
        if overrides:
            load_config(ROOT / "configs" / "offline_default.yaml", overrides)
    for n, block in enumerate(code_blocks("yaml")):
        config = tmp_path / f"readme_{n}.yaml"
        config.write_text(block)
        (tmp_path / "offline_default.yaml").write_text((ROOT / "configs" / "offline_default.yaml").read_text())
        assert yaml.safe_load(block)
        load_config(config)  # unknown keys and bad values raise
    for key in set(re.findall(r"`((?:student|teacher|train|data|loss|card)\.[a-z_]+)", README)):
        section, name = key.split(".", 1)
        assert name in type(getattr(load_config(None), section)).__dataclass_fields__, key
