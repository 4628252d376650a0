"""A loss term added from outside the package (tests/toy_term.py) through the registry alone: no edit
of objective.py or config.py; its section is typed and checked; the project's terms are unchanged."""
from __future__ import annotations

import pytest
import torch

import toy_term
from distill.config import ConfigError, load_config
from distill.objective import DistillationObjective
from distill.term import OUTSIDE_ORDER, TERMS, card_rows, ordered_names, resolve_terms
from modules_testkit import make_inputs, make_student, objective_for, run

BASE = ["loss.soft_target_weight=0.5"]  # text + multimodal + soft targets


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def objective(overrides: list[str]) -> DistillationObjective:
    loss = load_config(None, [*BASE, *overrides]).loss
    torch.manual_seed(0)  # the grounding heads are the objective's: the same draw for every objective compared
    return objective_for(loss)


PROJECT_ORDER = ["text", "soft_mask", "soft_target", "regression", "multimodal", "aahr", "mmref", "dias"]


def test_the_project_registers_its_terms_in_summing_order():
    """The order the recorded objective was summed in, declared by each term; an outside term comes after."""
    project = [name for name in ordered_names() if TERMS[name].order < OUTSIDE_ORDER]
    assert project == PROJECT_ORDER
    assert "toy" in TERMS and ordered_names().index("toy") >= len(PROJECT_ORDER)


def test_each_project_term_is_one_file_found_without_a_list():
    """distill/terms/<name>.py registers <name>; distill/terms/__init__.py names none of them."""
    import pathlib

    import distill.terms
    folder = pathlib.Path(distill.terms.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(PROJECT_ORDER)
    assert all(TERMS[name].cls.__module__ == f"distill.terms.{name}" for name in PROJECT_ORDER)
    init = (folder / "__init__.py").read_text()
    assert not any(f"import {name}" in init or f".{name}" in init for name in PROJECT_ORDER)


def test_the_card_says_what_each_term_says_of_itself():
    loss = load_config(None, [*BASE, "loss.toy={weight: 0.25}", "loss.dias.relation_weight=0.5"]).loss
    rows = card_rows(loss)
    assert [row[0] for row in rows] == ["angular margin contrastive (text)", "soft-target KL to teacher similarities",
                                        "AdapACSE (grounded text vs adapted teacher)", "DIAS cross-correlation",
                                        "DIAS relation matching", "ToyAlignment"]
    assert rows[-1] == ("ToyAlignment", 0.25, "tests/toy_term.py")
    assert rows[4] == ("DIAS relation matching", 0.5, "top-k 5; Ma et al., ACM MM 2024, arXiv 2410.16853")


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "text"])
def test_a_toy_term_joins_the_sum_and_leaves_every_other_term_as_it_was(student, paired):
    inputs = make_inputs(paired)
    without = run(objective([]), student, inputs)
    toy = objective(["loss.toy={weight: 0.5}"])
    seen = {}
    original = toy_term.ToyAlignment.terms

    def capture(self, step):
        seen["z"] = (step.z1, step.z2)
        return original(self, step)

    toy_term.ToyAlignment.terms = capture
    try:
        terms = run(toy, student, inputs)
    finally:
        toy_term.ToyAlignment.terms = original
    assert toy.names[-1] == "toy" and toy.toy.steps_seen == 1  # observed once, before the terms
    z1, z2 = seen["z"]
    assert torch.equal(terms["toy"], 0.5 * (z1 - z2).pow(2).sum(-1).mean())
    for name in without:
        if name != "loss":
            assert torch.equal(terms[name], without[name]), name
    assert torch.equal(terms["loss"], torch.stack([v for k, v in terms.items() if k != "loss"]).sum())


def test_a_term_section_is_typed_and_an_unregistered_one_is_refused():
    with pytest.raises(ConfigError, match=r"^loss.toy.weight must be > 0, got -1.0$"):
        objective(["loss.toy={weight: -1}"])
    with pytest.raises(ConfigError, match=r"^loss.toi: no term is registered under that name \(did you mean "
                                          r"loss.toy\?\); registered: "):
        objective(["loss.toi={weight: 1}"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) loss.temperatur \(did you mean loss.temperature\?\)"):
        objective(["loss.temperatur=0.1"])
    with pytest.raises(ConfigError, match=r"^loss.term_modules: cannot import 'no_such_terms'"):
        objective(["loss.term_modules=[no_such_terms]"])


def test_a_bad_value_in_a_terms_section_is_refused_before_any_data_is_read():
    cfg = load_config(None, ["loss.term_modules=[toy_term]", "loss.toy={weight: -1}"])
    with pytest.raises(ConfigError, match=r"^loss.toy.weight must be > 0, got -1.0$"):
        resolve_terms(cfg.loss)  # what train() calls first, before the teacher cache


def test_term_modules_import_the_module_that_registers_a_term(monkeypatch):
    monkeypatch.delitem(TERMS, "toy")
    import sys
    monkeypatch.delitem(sys.modules, "toy_term")
    toy = objective(["loss.term_modules=[toy_term]", "loss.toy={weight: 2.0}"])
    assert toy.names[-1] == "toy" and toy.toy.weight == 2.0


def test_a_project_term_is_two_files_and_nothing_else(student, tmp_path, monkeypatch):
    """DIAS's loss file and term file, copied out of the package under another name as a user would
    write them, register and compute exactly what the project's DIAS computes: the two files are all a
    term of the project takes (nothing in config.py, objective.py, the card or an import list names it)."""
    import importlib
    import pathlib

    import distill

    root = pathlib.Path(distill.__file__).parent
    loss = (root / "losses" / "dias.py").read_text().replace("from ._common import", "from distill.losses._common import")
    term = (root / "terms" / "dias.py").read_text()
    term = term.replace("from distill.losses.dias import", "from dias_copy_loss import")
    term = term.replace('@register_term("dias", order=80,', '@register_term("dias_copy", order=80,')
    (tmp_path / "dias_copy_loss.py").write_text(loss)
    (tmp_path / "dias_copy_term.py").write_text(term)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(TERMS, "dias_copy", raising=False)
    importlib.invalidate_caches()
    section = "{dimension_weight: 0.01, relation_weight: 2.0, top_k: 2}"
    inputs = make_inputs(paired=True)
    own = run(objective([f"loss.dias={section}"]), student, inputs)
    copied = run(objective(["loss.term_modules=[dias_copy_term]", f"loss.dias_copy={section}"]), student, inputs)
    assert {"dias_dimension", "dias_relation"} <= set(own)
    for name in own:
        assert torch.equal(copied[name], own[name]), name
