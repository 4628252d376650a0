"""The objective with the related-method modules: absent = the KDMCSE baseline bit for bit; all on =
every term, finite, differentiable; the nested module sections load, validate and name bad keys."""
from __future__ import annotations

from dataclasses import asdict, replace

import pytest
import torch

from distill import losses
from distill.config import ConfigError, LossConfig, config_from_mapping, load_config
from distill.term import resolve_terms
from distill.terms.aahr import AAHRConfig
from distill.terms.dias import DIASConfig
from distill.terms.mmref import MMRefConfig
from distill.terms.soft_mask import SoftMaskConfig, swap_positive
from modules_testkit import captured_views, make_inputs, make_student, objective, run

BASELINE = dict(soft_target_weight=1.0, regression_weight=1.0, false_negative_filter="gist")
ALL_ON = dict(BASELINE, focal_gamma=2.0,
              aahr=AAHRConfig(queue_size=16, prototypes=3, weight=0.1, cluster_negative_weight=0.5),
              soft_mask=SoftMaskConfig(weight=1.0, strength=0.5), mmref=MMRefConfig(weight=0.01),
              dias=DIASConfig(dimension_weight=0.001, relation_weight=1.0, top_k=2))


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def baseline_terms(student, inputs, cfg: LossConfig, obj) -> dict[str, torch.Tensor]:
    """The KDMCSE objective as it was before the modules existed (angular text loss, AdapACSE, gist
    filter, soft targets, regression), written out with the losses directly, through ``obj``'s heads."""
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
                 obj.regression.head(torch.cat([h1, h2])), torch.cat([inputs.teacher_text, inputs.teacher_text]))}
    if inputs.teacher_image is not None:
        grounded = [obj.grounding.ground(h) for h in (h1, h2)]
        images = obj.grounding.adapt_images(inputs.teacher_image)
        captions = obj.grounding.adapt_captions(inputs.teacher_text)
        s_vv = inputs.teacher_image @ inputs.teacher_image.T
        terms["multimodal"] = cfg.multimodal_weight * losses.AdapACSELoss(cfg.multimodal_margin, cfg.temperature)(
            grounded, images, captions, s_vv, s_cc, exclude=exclude)
    terms["loss"] = torch.stack(list(terms.values())).sum()
    return terms


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "text"])
def test_modules_absent_equal_the_baseline_bit_for_bit(student, paired):
    inputs = make_inputs(paired)
    cfg = LossConfig(**BASELINE)
    obj = objective(**BASELINE)
    torch.manual_seed(0)
    expected = baseline_terms(student, inputs, cfg, obj)
    assert not {"aahr", "soft_mask", "mmref", "dias"} & set(obj.names) and obj.text_contrast is None
    assert {key.split(".")[0] for key in obj.state_dict()} == {"grounding", "regression"}  # the terms' heads only
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
    assert obj.grounding.caption_adapter[0].weight.grad.abs().sum() > 0  # through the AAHR prototypes
    student.zero_grad()


@pytest.mark.parametrize("overrides, message", [
    (["loss.aahr.prototypes=8", "loss.aahr.weight=0", "loss.aahr.cluster_negative_weight=1"],
     "loss.aahr: prototypes is set but nothing uses them"),
    (["loss.aahr.prototypes=0"], "loss.aahr: weight > 0 or cluster_negative_weight < 1 needs prototypes"),
    (["loss.aahr.prototypes=1"], "0 \\(off\\) or >= 2"),
    (["loss.aahr.cluster_negative_weight=1.5"], "loss.aahr.cluster_negative_weight must be >= 0 and <= 1, got 1.5"),
    (["loss.aahr.momentum=1"], "loss.aahr: momentum must be < 1"),
    (["loss.aahr.temperature=0"], "loss.aahr.temperature must be > 0, got 0.0"),
    (["loss.aahr={queue_size: 0, prototypes: 0, weight: 0, cluster_negative_weight: 1}"], "switches nothing on"),
    (["loss.aahr.queue_sise=8"], "unknown key\\(s\\) loss.aahr.queue_sise"),
    (["loss.aahr_queue_size=8"], "unknown key\\(s\\) loss.aahr_queue_size"),  # the flat keys are gone
    (["loss.soft_mask.strength=0"], "loss.soft_mask.strength must be > 0 and <= 1, got 0.0"),
    (["loss.soft_mask.weight=0"], "remove loss.soft_mask instead"),
    (["loss.soft_mask.weight=-1"], "loss.soft_mask.weight must be >= 0, got -1.0"),
    (["loss.mmref.alpha=2"], "loss.mmref.alpha must be >= 0 and <= 1, got 2.0"),
    (["loss.mmref.weight=0"], "remove loss.mmref instead"),
    (["loss.dias.top_k=0"], "loss.dias.top_k must be >= 1, got 0"),
    (["loss.dias.dimension_weight=-1"], "dimension_weight must be >= 0"),
    (["loss.dias.dimension_weight=0", "loss.dias.relation_weight=0"], "switches nothing on"),
    (["loss.text=none", "loss.focal_gamma=2"], "focal_gamma reshapes the text loss"),
    (["loss.text=none", "loss.aahr.queue_size=8"], "loss.aahr's queue and cluster weights reshape the text loss"),
    (["loss.text=none", "loss.soft_mask={}"], "loss.soft_mask contrasts a third view in the text loss"),
    (["loss.focal_gamma=-1"], "focal_gamma must be >= 0"),
])
def test_bad_module_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_terms(load_config(None, overrides).loss)  # what train() does before anything is loaded


def test_module_sections_load_from_overrides_with_their_defaults():
    cfg = load_config(None, ["loss.aahr.queue_size=16", "loss.focal_gamma=2", "loss.soft_mask={}",
                             "loss.mmref.weight=0.05", "loss.dias.top_k=8"])
    loss = resolve_terms(cfg.loss)
    assert list(loss.terms) == ["soft_mask", "aahr", "mmref", "dias"]  # summing order
    assert loss.terms["aahr"] == asdict(AAHRConfig(queue_size=16, prototypes=32, weight=0.1,
                                                   cluster_negative_weight=0.5, temperature=0.1, momentum=0.99))
    assert loss.focal_gamma == 2.0 and isinstance(loss.focal_gamma, float)
    assert loss.terms["soft_mask"] == asdict(SoftMaskConfig(weight=1.0, strength=1.0))
    assert loss.terms["mmref"] == asdict(MMRefConfig(weight=0.05, alpha=0.5))
    assert loss.terms["dias"] == asdict(DIASConfig(dimension_weight=1e-4, off_diagonal_weight=5e-3,
                                                   relation_weight=1.0, top_k=8))
    assert load_config(None, []).loss.terms == {}
    assert load_config(None, ["loss.aahr.queue_size=16", "loss.aahr=null"]).loss.terms == {}


def test_a_saved_config_with_sections_loads_back(tmp_path):
    from distill.config import save_config

    cfg = load_config(None, ["loss.aahr.queue_size=16", "loss.dias.relation_weight=0.5"])
    cfg = replace(cfg, loss=resolve_terms(cfg.loss))
    save_config(cfg, tmp_path / "config.yaml")
    assert "\n  aahr:\n    queue_size: 16\n" in (tmp_path / "config.yaml").read_text()  # loss.aahr, as written
    assert load_config(tmp_path / "config.yaml") == cfg


def test_a_config_yaml_written_before_the_term_registry_loads_as_it_meant(tmp_path):
    """Run folders of earlier versions hold ``aahr: null`` ... for absent modules and ``terms: {}``."""
    old = {"loss": {"aahr": None, "soft_mask": None, "mmref": None, "dias": {"top_k": 3}, "terms": {},
                    "term_modules": []}}
    assert config_from_mapping(old).loss.terms == {"dias": {"top_k": 3}}


def test_aahr_needs_the_widths():
    with pytest.raises(ValueError, match=r"Dims\(student=..., teacher=...\)"):
        from distill.objective import DistillationObjective
        DistillationObjective(LossConfig(multimodal="none", terms={"aahr": {"weight": 0.0, "prototypes": 0,
                                                                             "cluster_negative_weight": 1.0}}))


def _unit(*shape, seed=0):
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_negative_weights_and_swapped_positive_by_hand():
    a, c, p = _unit(2, 3), _unit(4, 3, seed=1), _unit(2, 3, seed=2)
    contrast = losses.WeightedInfoNCELoss(0.5)
    weights = torch.tensor([[0.5, 0.0, 1.0, 0.25], [1.0, 0.5, 0.5, 0.0]])  # row 0 positive col 1 (w forced to 1)
    logits = contrast.logits(a, c, 1, weights)
    cos = a @ c.T
    expected = cos / 0.5 + torch.log(torch.tensor([[0.5, 1.0, 1.0, 0.25], [1.0, 0.5, 1.0, 0.0]]))
    torch.testing.assert_close(logits, expected)
    swapped = swap_positive(logits, a, p, 0.5, 1)
    assert swapped[0, 1] == pytest.approx(float(a[0] @ p[0]) / 0.5, abs=1e-6)
    assert swapped[1, 2] == pytest.approx(float(a[1] @ p[1]) / 0.5, abs=1e-6)
    off_positive = torch.ones_like(logits, dtype=torch.bool)
    off_positive[0, 1] = off_positive[1, 2] = False
    assert torch.equal(swapped[off_positive], logits[off_positive])
    ce = -torch.log_softmax(swapped, dim=1)[[0, 1], [1, 2]]
    torch.testing.assert_close(contrast.from_logits(swapped, 1), ce.mean())


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "text"])
def test_regression_alone_encodes_one_view_and_builds_nothing_else(student, paired, monkeypatch):
    """One forward of the batch, regression on it; no MLP, gather or teacher similarity. The second
    view is back, by name, under ``dropout_views: two``."""
    inputs = make_inputs(paired)
    one = objective(text="none", multimodal="none", regression_weight=2.0)
    torch.manual_seed(0)
    h = student.embed(inputs.sentences)
    expected = losses.EmbeddingRegressionLoss()(one.regression.head(h), inputs.teacher_text)
    monkeypatch.setattr("distill.objective.gather_with_grad", lambda *a: pytest.fail("gathered"))
    with captured_views(student) as mlp_outputs:
        terms = run(one, student, inputs)
    assert mlp_outputs == [] and list(terms) == ["regression", "loss"]
    assert torch.equal(terms["regression"], 2.0 * expected)

    monkeypatch.undo()
    two = objective(text="none", multimodal="none", regression_weight=2.0, dropout_views="two")
    torch.manual_seed(0)
    h1, h2 = student.embed(inputs.sentences + inputs.sentences).chunk(2)
    both = losses.EmbeddingRegressionLoss()(two.regression.head(torch.cat([h1, h2])),
                                            torch.cat([inputs.teacher_text, inputs.teacher_text]))
    assert two.views == 2 and torch.equal(run(two, student, inputs)["regression"], 2.0 * both)


@pytest.mark.parametrize("config", [dict(text="simcse", multimodal="none"), dict(soft_target_weight=1.0),
                                    dict(text="none", multimodal="mcse", regression_weight=1.0)])
def test_every_contrast_keeps_two_views(config):
    assert objective(**config).views == 2
