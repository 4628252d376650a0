"""DIAS module wiring: dimension alignment of grounding vs adapted teacher images on paired steps; sparse
relations of the text embeddings vs teacher text cosines on every step."""
from __future__ import annotations

import torch

from distill import losses
from distill.terms.dias import DIAS, DIASConfig
from modules_testkit import captured_views, make_inputs, make_student, objective, run


def test_module_builds_only_the_parts_switched_on():
    assert DIAS(DIASConfig(dimension_weight=1.0, relation_weight=0.0)).relation_loss is None
    assert DIAS(DIASConfig(dimension_weight=0.0, top_k=3)).relation_loss.k == 3
    assert objective(dias=DIASConfig(dimension_weight=0.0)).dias.dimension_loss is None


def test_objective_terms_match_the_losses_on_the_right_tensors(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    obj = objective(dias=DIASConfig(dimension_weight=0.01, off_diagonal_weight=0.1, relation_weight=2.0, top_k=2))
    inputs = make_inputs()
    with captured_views(student) as views:
        terms = run(obj, student, inputs)
    h1, h2 = views  # mlp is Identity: z = h
    heads = obj.grounding
    images = heads.adapt_images(inputs.teacher_image)
    dimension = losses.DimensionAlignmentLoss(0.1)
    expected = (dimension(heads.ground(h1), images) + dimension(heads.ground(h2), images)) / 2
    torch.testing.assert_close(terms["dias_dimension"], 0.01 * expected)
    s_cc = inputs.teacher_text @ inputs.teacher_text.T
    torch.testing.assert_close(terms["dias_relation"], 2.0 * losses.SparseRelationLoss(2)(h1, h2, s_cc))

    text_terms = run(obj, student, make_inputs(paired=False))
    assert "dias_relation" in text_terms and "dias_dimension" not in text_terms
