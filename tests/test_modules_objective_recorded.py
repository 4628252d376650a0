"""Every loss term of every shipped config and benchmark method equals, bit for bit, what the objective
computed when the values in ``fixtures/objective_terms.json`` were recorded.

The fixture was written by the objective as it stood before the loss config was nested (flat
``aahr_*`` / ``mmref_*`` / ``dias_*`` keys, commit "Paper configs: same-image mask off ..."), so a refactor
of the objective must leave each term unchanged. Each case runs three steps on one objective (paired,
text, paired: stateful modules see a filled queue) over a fixed tiny batch whose teacher captions hold
near-duplicates, so the threshold and gist filters remove real candidates.

Bit for bit holds on machines whose float kernels round alike: the fixture keeps a fingerprint of the
recording machine's (``kernel_fingerprint``: the tiny student's embeddings of fixed sentences, hashed).
Where the fingerprint differs (another CPU family: other SIMD kernels, other rounding), the terms are
compared to a relative 1e-5 instead, and the test says so; the bit-for-bit check of a refactor is then
made by recording with the old code and the new on the same machine and comparing the two files.

A deliberate change of a term is recorded again with ``DISTILL_RECORD_OBJECTIVE=1 pytest <this file>``;
say why in the commit. The last ones (2026-12-07, recorded on an AMD EPYC, 2 cores): the regression head
became the regression term's own and the grounding heads the objective's, both drawn when the objective
is built (seeded here before each case), which changed every term computed through a head: first only
``regression`` (and ``soft_mask_view`` of step 2 of ``kdmcse_softmask``, whose text-step saliency now
reads the grounding space instead of that head) with every other term bit for bit, then every term in
the grounding space. The term registry refactor before them left every case bit for bit on that machine. An earlier one: a regression-only objective encodes one dropout view
(``loss.dropout_views: auto``), so its values changed; each such case is kept under
``... [dropout_views=two]``, the second view restored by that key.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.config import load_config
from distill.recipes import CONFIG, METHODS
from modules_testkit import SENTENCES, make_inputs, make_student, objective_for, run

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "objective_terms.json"
RECORD = os.environ.get("DISTILL_RECORD_OBJECTIVE") == "1"
STEPS = ((True, 0), (False, 1), (True, 2))  # (paired, seed)
MACHINE = "__kernel_fingerprint__"  # the fixture's key for the recording machine's fingerprint

CASES = {f"configs/{p.name}": (p, []) for p in sorted((ROOT / "configs").glob("*.yaml"))}
# every objective the benchmark trains with the project's trainer; a row that only changes the student
# (which layers it keeps) shares its objective with another row and adds nothing here
CASES.update({f"method/{name}": (CONFIG, list(m.overrides)) for name, m in METHODS.items()
              if m.trainer == "project" and not any(o.startswith("student.") for o in m.overrides)})
TWO_VIEWS = "loss.dropout_views=two"
# the objectives that encode one view by default, also with the second view they had when recorded
CASES.update({f"{name} [dropout_views=two]": (config, [*overrides, TWO_VIEWS])
              for name, (config, overrides) in list(CASES.items())
              if objective_for(load_config(config, overrides).loss).views == 1})


def near_duplicate_inputs(paired: bool, seed: int):
    """``make_inputs`` with captions 1 and 4 moved next to captions 0 and 2 (teacher cosines ~0.98)."""
    inputs = make_inputs(paired, seed=seed)
    text = inputs.teacher_text.clone()
    text[1] = F.normalize(text[0] + 0.2 * text[1], dim=-1)
    text[4] = F.normalize(text[2] + 0.2 * text[4], dim=-1)
    inputs.teacher_text = text
    return inputs


def kernel_fingerprint(student) -> str:
    """sha256 of the tiny student's embeddings of fixed sentences (eval mode, no dropout): equal on
    machines whose float kernels round alike, where recorded terms compare bit for bit."""
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            h = student.embed_features(student.tokenise(SENTENCES))
    finally:
        student.train(was_training)
    return hashlib.sha256(h.float().contiguous().numpy().tobytes()).hexdigest()


def case_terms(student, config: Path, overrides: list[str]) -> list[dict[str, float]]:
    cfg = load_config(config, overrides)
    torch.manual_seed(0)  # the regression term's head is drawn here: the same whatever case ran before
    obj = objective_for(cfg.loss)
    out = []
    for paired, seed in STEPS:
        terms = run(obj, student, near_duplicate_inputs(paired, seed), seed=seed)
        out.append({name: value.item() for name, value in terms.items()})
    return out


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


@pytest.fixture(scope="module")
def recorded(student):
    if RECORD:
        FIXTURE.parent.mkdir(exist_ok=True)
        values = {name: case_terms(student, *case) for name, case in CASES.items()}
        values[MACHINE] = kernel_fingerprint(student)
        FIXTURE.write_text(json.dumps(values, indent=1) + "\n")
    return json.loads(FIXTURE.read_text())


def test_every_case_is_recorded(recorded):
    assert sorted(recorded) == sorted([*CASES, MACHINE])


@pytest.mark.parametrize("name", sorted(CASES))
def test_terms_equal_the_recorded_ones_bit_for_bit(student, recorded, name):
    terms = case_terms(student, *CASES[name])
    if recorded[MACHINE] == kernel_fingerprint(student):
        assert terms == recorded[name]  # Python floats from float32 tensors: equal means bit-identical
        return
    # another machine's kernels: the same terms up to float rounding (observed: ~1e-7 relative)
    assert [sorted(step) for step in terms] == [sorted(step) for step in recorded[name]]
    for step, expected in zip(terms, recorded[name]):
        assert step == pytest.approx(expected, rel=1e-5, abs=1e-7)
