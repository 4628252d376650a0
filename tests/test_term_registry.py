"""A loss term added from outside the package (tests/toy_term.py) through the registry alone: no edit
of objective.py or config.py; its section is typed and checked; the project's terms are unchanged."""
from __future__ import annotations

import pytest
import torch

import toy_term
from distill.config import ConfigError, load_config
from distill.objective import DistillationObjective
from distill.term import BUILT_IN_ORDER, TERMS, ordered_names
from modules_testkit import STUDENT_DIM, TEACHER_TEXT_DIM, make_inputs, make_student, run

BASE = ["loss.soft_target_weight=0.5"]  # text + multimodal + soft targets


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def objective(overrides: list[str]) -> DistillationObjective:
    return DistillationObjective(load_config(None, [*BASE, *overrides]).loss, STUDENT_DIM, TEACHER_TEXT_DIM)


def test_the_project_registers_its_terms_in_summing_order():
    assert ordered_names()[:len(BUILT_IN_ORDER)] == list(BUILT_IN_ORDER)
    assert "toy" in TERMS and ordered_names().index("toy") >= len(BUILT_IN_ORDER)


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "text"])
def test_a_toy_term_joins_the_sum_and_leaves_every_other_term_as_it_was(student, paired):
    inputs = make_inputs(paired)
    without = run(objective([]), student, inputs)
    toy = objective(["loss.terms={toy: {weight: 0.5}}"])
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
    with pytest.raises(ConfigError, match=r"^loss.terms.toy.weight must be > 0, got -1.0$"):
        objective(["loss.terms={toy: {weight: -1}}"])
    with pytest.raises(ConfigError, match=r"^loss.terms.toi: no term is registered under that name; registered: "):
        objective(["loss.terms={toi: {weight: 1}}"])
    with pytest.raises(ConfigError, match=r"^loss.term_modules: cannot import 'no_such_terms'"):
        objective(["loss.term_modules=[no_such_terms]"])


def test_a_bad_value_in_a_terms_section_is_refused_before_any_data_is_read():
    from distill.config import load_config
    from distill.term import check_terms

    cfg = load_config(None, ["loss.term_modules=[toy_term]", "loss.terms={toy: {weight: -1}}"])
    with pytest.raises(ConfigError, match=r"^loss.terms.toy.weight must be > 0, got -1.0$"):
        check_terms(cfg.loss)  # what train() calls first, before the teacher cache


def test_term_modules_import_the_module_that_registers_a_term(monkeypatch):
    monkeypatch.delitem(TERMS, "toy")
    import sys
    monkeypatch.delitem(sys.modules, "toy_term")
    toy = objective(["loss.term_modules=[toy_term]", "loss.terms={toy: {weight: 2.0}}"])
    assert toy.names[-1] == "toy" and toy.toy.weight == 2.0
