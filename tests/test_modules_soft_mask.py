"""Soft-mask module wiring: saliency normalisation, which agreement the saliency follows, the masked
view's embedding scaling (special tokens untouched), the view term and the focal text term."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill import losses
from distill.losses import focal_weights
from distill.student import GroundingHeads
from distill.terms.soft_mask import SoftMaskConfig, SoftMaskView, normalise_saliency, word_embeddings
from modules_testkit import (GROUNDING_DIM, SENTENCES, STUDENT_DIM, TEACHER_IMAGE_DIM, TEACHER_TEXT_DIM, captured_views,
                             make_inputs, make_student, objective, run)


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def test_saliency_is_relu_over_the_row_maximum_of_maskable_tokens():
    scores = torch.tensor([[5.0, -1.0, 2.0, 4.0, 9.0], [-3.0, -1.0, 0.0, -2.0, 1.0], [0.0, -1.0, -2.0, 0.0, 0.0]])
    maskable = torch.tensor([[False, True, True, True, False], [False, True, True, True, False],
                             [False, True, True, False, False]])
    assert normalise_saliency(scores, maskable).tolist() == [[0.0, 0.0, 0.5, 1.0, 0.0],
                                                             [0.0, 0.0, 0.0, 0.0, 0.0],  # nothing positive
                                                             [0.0, 0.0, 0.0, 0.0, 0.0]]


def test_focal_weights_by_hand():
    ce = torch.tensor([0.0, float(torch.log(torch.tensor(4.0)))], requires_grad=True)  # p = 1, 1/4
    w = focal_weights(ce, 2.0)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.5625]))
    assert not w.requires_grad


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(5)
    return GroundingHeads.create(STUDENT_DIM, GROUNDING_DIM, TEACHER_TEXT_DIM, TEACHER_IMAGE_DIM)


def _manual_saliency(student, heads, inputs, use_image: bool):
    """Gradient x input of the agreement score, computed independently of the module."""
    tok = student.encoder.tokenizer(inputs.sentences, padding=True, return_special_tokens_mask=True,
                                    return_tensors="pt")
    store = {}

    def hook(module, args, out):
        store["x"] = out.detach().requires_grad_(True)
        return store["x"]

    student.encoder.eval()
    handle = word_embeddings(student).register_forward_hook(hook)
    try:
        h = student.embed(inputs.sentences)
    finally:
        handle.remove()
        student.encoder.train()
    if use_image:
        score = F.cosine_similarity(heads.ground(h), heads.adapt_images(inputs.teacher_image).detach())
    else:
        score = F.cosine_similarity(heads.ground(h), heads.adapt_captions(inputs.teacher_text).detach())
    (g,) = torch.autograd.grad(score.sum(), store["x"])
    sal = ((g * store["x"]).sum(-1)).clamp_min(0) * (1 - tok["special_tokens_mask"])
    return (sal / sal.amax(1, keepdim=True)).nan_to_num(0.0)  # a row with nothing positive stays 0


@pytest.mark.parametrize("paired", [True, False], ids=["image_agreement", "text_agreement"])
def test_saliency_follows_the_teacher_agreement_and_spares_special_tokens(student, heads, paired):
    inputs = make_inputs(paired)
    mask, ids = SoftMaskView(SoftMaskConfig()).saliency(student, heads, student.tokenise(inputs.sentences),
                                                        inputs.teacher_text, inputs.teacher_image)
    assert student.encoder.training  # eval only during the saliency pass
    torch.testing.assert_close(mask, _manual_saliency(student, heads, inputs, use_image=paired))
    special = torch.isin(ids, torch.tensor(student.encoder.tokenizer.all_special_ids))
    assert (mask[special] == 0).all() and (mask >= 0).all()
    peaks = mask.amax(1)
    assert ((peaks == 1) | (peaks == 0)).all() and (peaks == 1).any()


def test_masked_view_scales_word_embeddings_by_one_minus_strength_m(student, heads):
    inputs = make_inputs()
    view = SoftMaskView(SoftMaskConfig(strength=0.5))
    mask, ids = view.saliency(student, heads, student.tokenise(inputs.sentences), inputs.teacher_text,
                              inputs.teacher_image)
    seen = []
    embeddings = student.encoder[0].auto_model.embeddings
    handle = embeddings.LayerNorm.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        z3 = view.encode_masked(student, student.tokenise(inputs.sentences), mask, ids)
        view.encode_masked(student, student.tokenise(inputs.sentences), torch.zeros_like(mask), ids)  # scale 1 everywhere
    finally:
        handle.remove()
    masked, plain = seen  # word + position + type embeddings, before LayerNorm and dropout
    words = word_embeddings(student)(ids).detach()
    torch.testing.assert_close(masked - plain, -(0.5 * mask)[..., None] * words)
    special = torch.isin(ids, torch.tensor(student.encoder.tokenizer.all_special_ids))
    assert torch.equal(masked[special], plain[special])
    assert not z3.requires_grad and z3.shape == (len(SENTENCES), 32)


def test_view_term_is_the_text_contrast_with_the_masked_view_as_positive(student, monkeypatch):
    obj = objective(soft_mask=SoftMaskConfig(weight=0.7))
    z3 = F.normalize(torch.randn(len(SENTENCES), 32, generator=torch.Generator().manual_seed(3)), dim=-1)
    monkeypatch.setattr(obj.soft_mask, "forward", lambda *args: z3)
    inputs = make_inputs()
    with captured_views(student) as views:
        terms = run(obj, student, inputs)
    z1, z2 = views
    exclude = losses.same_image_mask(inputs.image_ids, inputs.image_ids)
    logits = losses.angular_margin_logits(z1, z2, 0.15, 0.05)
    positive = (F.normalize(z1, dim=-1) * z3).sum(-1) / 0.05
    logits[range(6), range(6)] = positive
    expected = F.cross_entropy(logits.masked_fill(exclude & ~torch.eye(6, dtype=torch.bool), float("-inf")),
                               torch.arange(6))
    torch.testing.assert_close(terms["soft_mask_view"], 0.7 * expected)
    torch.testing.assert_close(terms["text"], losses.AngularMarginLoss(0.15, 0.05)(z1, z2, exclude=exclude),
                               rtol=0, atol=0)


def test_focal_gamma_makes_the_text_term_focal(student):
    inputs = make_inputs(paired=False)
    with captured_views(student) as views:
        terms = run(objective(text="simcse", focal_gamma=2.0), student, inputs)
    z1, z2 = views
    ce = F.cross_entropy(F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T / 0.05, torch.arange(6), reduction="none")
    torch.testing.assert_close(terms["text"], ((1 - torch.exp(-ce)) ** 2 * ce).mean())
