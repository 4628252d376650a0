"""Which terms each false-negative filter masks, through the objective: ``teacher_cross_modal`` (the
released KDMCSE wiring) masks only the two L_inter terms, each with its own cross-modal scores;
``threshold`` (caption-caption cosines) masks the text term and both L_inter terms alike."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill import losses
from distill.objective import StepInputs
from modules_testkit import TEACHER_TEXT_DIM, captured_views, make_student, objective, run

T, F_ = True, False
# raw teacher scores of three rows (2-D, padded with zeros to the teacher's width):
# caption_i . image_j = [[0, 1, .5], [2, 1, 0], [1, 1.5, .5]], image_i . caption_j = [[0, 2, 1], [1, 1, 1.5], [.5, 0, .5]]
CAPTIONS = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
IMAGES = torch.tensor([[0.0, 1.0], [1.0, 0.5], [0.5, 0.0]])
IMAGE_TERM_MASK = torch.tensor([[F_, T, F_], [T, F_, F_], [T, T, F_]])  # caption_i . image_j > 0.8
CAPTION_TERM_MASK = torch.tensor([[F_, T, T], [T, F_, T], [F_, F_, F_]])  # image_i . caption_j > 0.8


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def _inputs() -> StepInputs:
    pad = (0, TEACHER_TEXT_DIM - 2)
    return StepInputs(sentences=["a dog runs", "two men play guitar", "a red car"],
                      teacher_text=F.pad(CAPTIONS, pad), teacher_image=F.pad(IMAGES, pad),
                      image_ids=torch.tensor([0, 1, 2]))


def _objective(**overrides):
    return objective(image_dim=TEACHER_TEXT_DIM, **overrides)  # one space for captions and images


def _grounded(obj, views):
    return [obj.grounding.ground(h) for h in views]


def test_teacher_cross_modal_masks_each_l_inter_term_with_its_own_scores(student):
    obj = _objective(false_negative_filter="teacher_cross_modal", same_image_mask=False)
    inputs = _inputs()
    with captured_views(student) as views:
        terms = run(obj, student, inputs)
    z1, z2 = views
    heads, adapacse = obj.grounding, losses.AdapACSELoss(0.15, 0.05)
    images, captions = heads.adapt_images(inputs.teacher_image), heads.adapt_captions(inputs.teacher_text)
    s_vv, s_cc = inputs.teacher_image @ inputs.teacher_image.T, inputs.teacher_text @ inputs.teacher_text.T
    grounded = _grounded(obj, views)
    image_term = adapacse(grounded, image=images, s_vv=s_vv, exclude=IMAGE_TERM_MASK)
    caption_term = adapacse(grounded, caption=captions, s_cc=s_cc, exclude=CAPTION_TERM_MASK)
    torch.testing.assert_close(terms["multimodal"], 0.01 * (image_term + caption_term), rtol=0, atol=0)
    unmasked = adapacse(grounded, images, captions, s_vv, s_cc)
    assert abs(terms["multimodal"] - 0.01 * unmasked) > 1e-6  # the masks removed real candidates
    # the text term is not filtered
    torch.testing.assert_close(terms["text"], losses.AngularMarginLoss(0.15, 0.05)(z1, z2), rtol=0, atol=0)


def test_teacher_cross_modal_cosine_and_mcse(student):
    obj = _objective(false_negative_filter="teacher_cross_modal", cross_modal_similarity="cosine",
                    cross_modal_threshold=0.9, same_image_mask=False, text="simcse", multimodal="mcse")
    inputs = _inputs()
    with captured_views(student) as views:
        terms = run(obj, student, inputs)
    # cos(caption_i, image_j) = [[0, .894, 1], [1, .447, 0], [.707, .949, .707]]; > 0.9 off the diagonal
    mask = torch.tensor([[F_, F_, T], [T, F_, F_], [F_, T, F_]])
    images = obj.grounding.adapt_images(inputs.teacher_image)
    expected = losses.MCSEGroundingLoss(0.05)(_grounded(obj, views), images, exclude=mask)
    torch.testing.assert_close(terms["multimodal"], 0.01 * expected, rtol=0, atol=0)


def test_threshold_filter_masks_text_and_both_l_inter_terms_with_caption_cosines(student):
    obj = _objective(false_negative_filter="threshold", filter_threshold=0.6, same_image_mask=False)
    inputs = _inputs()
    with captured_views(student) as views:
        terms = run(obj, student, inputs)
    z1, z2 = views
    # s_cc = caption_i . caption_j = [[1, 0, 1], [0, 4, 2], [1, 2, 2]] (unit vectors in a real cache); > 0.6
    mask = torch.tensor([[F_, F_, T], [F_, F_, T], [T, T, F_]])
    torch.testing.assert_close(terms["text"], losses.AngularMarginLoss(0.15, 0.05)(z1, z2, exclude=mask),
                               rtol=0, atol=0)
    heads = obj.grounding
    s_vv, s_cc = inputs.teacher_image @ inputs.teacher_image.T, inputs.teacher_text @ inputs.teacher_text.T
    expected = losses.AdapACSELoss(0.15, 0.05)(_grounded(obj, views), heads.adapt_images(inputs.teacher_image),
                                               heads.adapt_captions(inputs.teacher_text), s_vv, s_cc, exclude=mask)
    torch.testing.assert_close(terms["multimodal"], 0.01 * expected)


def test_teacher_cross_modal_needs_one_space_for_captions_and_images(tiny_bert_dir):
    student = make_student(tiny_bert_dir)  # image width 20, text width 24
    inputs = StepInputs(sentences=["a", "b"], teacher_text=F.normalize(torch.randn(2, TEACHER_TEXT_DIM), dim=-1),
                        teacher_image=F.normalize(torch.randn(2, 20), dim=-1), image_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="share one space"):
        run(objective(false_negative_filter="teacher_cross_modal"), student, inputs)
