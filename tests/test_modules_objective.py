"""The objective with the related-method modules: off = the KDMCSE baseline bit for bit; all on = every
term, finite, differentiable; config checks; the general text contrast against the plain losses."""
from __future__ import annotations

import pytest
import torch

from distill import losses
from distill.config import ConfigError, LossConfig, load_config
from distill.modules import TextContrast
from modules_testkit import make_inputs, make_student, objective, run

BASELINE = dict(soft_target_weight=1.0, regression_weight=1.0, false_negative_filter="gist")
ALL_ON = dict(BASELINE, aahr_queue_size=16, aahr_prototypes=3, aahr_weight=0.1, aahr_cluster_negative_weight=0.5,
              focal_gamma=2.0, soft_mask_view_weight=1.0, soft_mask_strength=0.5, mmref_weight=0.01,
              dias_weight=0.001, dias_relation_weight=1.0, dias_top_k=2)


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def baseline_terms(student, inputs, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """The KDMCSE objective as it was before the modules existed (angular text loss, AdapACSE, gist
    filter, soft targets, regression), written out with the losses directly."""
    views = student.embed(inputs.sentences + inputs.sentences)
    h1, h2 = views.chunk(2)
    z1, z2 = student.mlp(h1), student.mlp(h2)
    s_cc = inputs.teacher_text @ inputs.teacher_text.T
    exclude = losses.gist_mask(s_cc, cfg.gist_margin, cfg.gist_mode)
    if inputs.image_ids is not None:
        exclude = losses.same_image_mask(inputs.image_ids, inputs.image_ids) | exclude
    terms = {"text": losses.AngularMarginLoss(cfg.text_margin, cfg.temperature)(z1, z2, exclude=exclude),
             "soft_target": cfg.soft_target_weight * losses.SoftTargetKLLoss(cfg.temperature, cfg.teacher_temperature)(
                 z1, z2, s_cc, exclude=exclude),
             "regression": cfg.regression_weight * losses.EmbeddingRegressionLoss()(
                 student.regression(torch.cat([h1, h2])), torch.cat([inputs.teacher_text, inputs.teacher_text]))}
    if inputs.teacher_image is not None:
        grounded = [student.heads.ground(h) for h in (h1, h2)]
        images = student.heads.adapt_images(inputs.teacher_image)
        captions = student.heads.adapt_captions(inputs.teacher_text)
        s_vv = inputs.teacher_image @ inputs.teacher_image.T
        terms["multimodal"] = cfg.multimodal_weight * losses.AdapACSELoss(cfg.multimodal_margin, cfg.temperature)(
            grounded, images, captions, s_vv, s_cc, exclude=exclude)
    terms["loss"] = torch.stack(list(terms.values())).sum()
    return terms


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "text"])
def test_modules_off_equal_the_baseline_bit_for_bit(student, paired):
    inputs = make_inputs(paired)
    cfg = LossConfig(**BASELINE)
    torch.manual_seed(0)
    expected = baseline_terms(student, inputs, cfg)
    # off by default, and "off" through zero weights / neutral values with the secondary knobs changed
    for overrides in ({}, dict(aahr_queue_size=0, aahr_prototypes=0, aahr_weight=0.0, aahr_temperature=0.3,
                               focal_gamma=0.0, soft_mask_view_weight=0.0, soft_mask_strength=0.3,
                               mmref_weight=0.0, mmref_alpha=0.2, dias_weight=0.0, dias_relation_weight=0.0,
                               dias_top_k=1, dias_off_diagonal_weight=0.5)):
        obj = objective(**BASELINE, **overrides)
        assert [m for m in (obj.aahr, obj.soft_mask, obj.mmref, obj.dias, obj.text_contrast) if m is not None] == []
        assert list(obj.state_dict()) == []
        terms = run(obj, student, inputs)
        assert list(terms) == list(expected)
        for key in expected:
            assert torch.equal(terms[key], expected[key]), key


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "text"])
def test_all_modules_on_give_every_term_finite_and_differentiable(student, paired):
    obj = objective(**ALL_ON)
    student.zero_grad()
    for seed in (0, 1):  # the second step sees a non-empty queue
        terms = run(obj, student, make_inputs(paired, seed=seed), seed=seed)
    expected = ["text", "soft_mask_view", "soft_target", "regression", "aahr_prototypes", "dias_relation"]
    if paired:
        expected[4:4] = ["multimodal"]
        expected[-1:-1] = ["mmref", "dias_dimension"]
    assert list(terms) == expected + ["loss"]
    assert all(torch.isfinite(v) for v in terms.values())
    assert torch.allclose(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    terms["loss"].backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert student.heads.caption_adapter[0].weight.grad.abs().sum() > 0  # through the AAHR prototypes
    student.zero_grad()


@pytest.mark.parametrize("overrides, message", [
    (["loss.aahr_prototypes=8"], "nothing uses the prototypes"),
    (["loss.aahr_weight=0.1"], "needs aahr_prototypes"),
    (["loss.aahr_cluster_negative_weight=0.5"], "needs aahr_prototypes"),
    (["loss.aahr_prototypes=1", "loss.aahr_weight=0.1"], "0 \\(off\\) or >= 2"),
    (["loss.aahr_cluster_negative_weight=1.5", "loss.aahr_prototypes=4"], "in \\[0, 1\\]"),
    (["loss.soft_mask_strength=0"], "soft_mask_strength"),
    (["loss.mmref_alpha=2"], "mmref_alpha"),
    (["loss.dias_top_k=0"], "dias_top_k"),
    (["loss.dias_weight=-1"], "dias_weight must be >= 0"),
    (["loss.text=none", "loss.focal_gamma=2"], "focal_gamma reshape the text loss"),
    (["loss.text=none", "loss.aahr_queue_size=8"], "aahr_queue_size reshape the text loss"),
])
def test_bad_module_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_module_switches_load_from_overrides():
    cfg = load_config(None, ["loss.aahr_queue_size=512", "loss.aahr_prototypes=32", "loss.aahr_weight=0.1",
                             "loss.focal_gamma=2", "loss.soft_mask_view_weight=1", "loss.mmref_weight=0.01",
                             "loss.dias_weight=0.001", "loss.dias_relation_weight=1", "loss.dias_top_k=8"])
    assert cfg.loss.focal_gamma == 2.0 and isinstance(cfg.loss.focal_gamma, float)
    assert cfg.loss.dias_top_k == 8 and cfg.loss.aahr_queue_size == 512


def _unit(*shape, seed=0):
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_general_contrast_equals_the_plain_losses_when_nothing_reshapes_it():
    a, c = _unit(4, 6), _unit(10, 6, seed=1)
    exclude = torch.zeros(4, 10, dtype=torch.bool)
    exclude[0, 7] = exclude[2, 1] = True
    angular = TextContrast("angular", 0.05, 0.15)
    torch.testing.assert_close(angular.loss(angular.logits(a, c, 3), 3, exclude),
                               losses.AngularMarginLoss(0.15, 0.05)(a, c, exclude, positive_offset=3))
    focal = TextContrast("simcse", 0.05, 0.15, focal_gamma=2.0)
    torch.testing.assert_close(focal.loss(focal.logits(a, c, 3), 3, exclude),
                               losses.FocalInfoNCELoss(0.05, gamma=2.0)(a, c, exclude, positive_offset=3))


def test_negative_weights_and_swapped_positive_by_hand():
    a, c, p = _unit(2, 3), _unit(4, 3, seed=1), _unit(2, 3, seed=2)
    contrast = TextContrast("simcse", 0.5, 0.0)
    weights = torch.tensor([[0.5, 0.0, 1.0, 0.25], [1.0, 0.5, 0.5, 0.0]])  # row 0 positive col 1 (w forced to 1)
    logits = contrast.logits(a, c, 1, weights)
    cos = a @ c.T
    expected = cos / 0.5 + torch.log(torch.tensor([[0.5, 1.0, 1.0, 0.25], [1.0, 0.5, 1.0, 0.0]]))
    torch.testing.assert_close(logits, expected)
    swapped = contrast.with_positive(logits, a, p, 1)
    assert swapped[0, 1] == pytest.approx(float(a[0] @ p[0]) / 0.5, abs=1e-6)
    assert swapped[1, 2] == pytest.approx(float(a[1] @ p[1]) / 0.5, abs=1e-6)
    off_positive = torch.ones_like(logits, dtype=torch.bool)
    off_positive[0, 1] = off_positive[1, 2] = False
    assert torch.equal(swapped[off_positive], logits[off_positive])
    ce = -torch.log_softmax(swapped, dim=1)[[0, 1], [1, 2]]
    torch.testing.assert_close(contrast.loss(swapped, 1), ce.mean())
