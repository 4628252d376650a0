"""MMRef module wiring: references fuse each image with exactly its captions; targets are the own image;
the objective feeds it the adapted teacher tensors on paired steps only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distill import losses
from distill.terms.mmref import MMRef, MMRefConfig
from modules_testkit import captured_views, make_inputs, make_student, objective, run


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_references_fuse_each_image_with_its_own_captions_by_hand():
    images, captions = _unit(5, 4), _unit(5, 4, seed=1)
    images[4] = images[1]  # rows of one image carry the same image vector
    images[2] = images[0]
    ids = torch.tensor([7, 3, 7, 9, 3])
    refs, index = MMRef(MMRefConfig(alpha=0.25), temperature=0.05).references(images, captions, ids)
    assert index.tolist() == [1, 0, 1, 2, 0]  # references in sorted id order: 3, 7, 9
    expected = torch.stack([
        0.25 * images[1] + 0.75 * (captions[1] + captions[4]) / 2,  # image 3: rows 1 and 4
        0.25 * images[0] + 0.75 * (captions[0] + captions[2]) / 2,  # image 7: rows 0 and 2
        0.25 * images[3] + 0.75 * captions[3],                      # image 9: row 3
    ])
    torch.testing.assert_close(refs, F.normalize(expected, dim=-1))


def test_local_captions_target_their_own_image_reference():
    images, captions, views = _unit(5, 4), _unit(5, 4, seed=1), [_unit(2, 4, seed=2), _unit(2, 4, seed=3)]
    ids = torch.tensor([7, 3, 7, 9, 3])
    module = MMRef(MMRefConfig(alpha=0.5), temperature=0.1)
    refs, _ = module.references(images, captions, ids)
    loss = module(views, images, captions, ids, positive_offset=2)  # local rows 2, 3: images 7 and 9
    targets = torch.tensor([1, 2])
    expected = sum(F.cross_entropy(v @ refs.T / 0.1, targets) for v in views) / 2
    torch.testing.assert_close(loss, expected)


def test_objective_aligns_grounded_captions_with_adapted_references_on_paired_steps(tiny_bert_dir):
    student = make_student(tiny_bert_dir)
    obj = objective(mmref=MMRefConfig(weight=0.5, alpha=0.3))
    inputs = make_inputs()
    with captured_views(student) as views:
        terms = run(obj, student, inputs)
    heads = obj.grounding
    one_row_per_image = inputs.teacher_image[[0, 2, 3, 5]]  # image ids 3, 3, 5, 8, 8, 9
    refs = losses.build_references(heads.adapt_images(one_row_per_image), heads.adapt_captions(inputs.teacher_text),
                                   0.3, caption_image_index=torch.tensor([0, 0, 1, 2, 2, 3]))
    expected = sum(losses.ReferenceAlignmentLoss(0.05)(heads.ground(h), refs, torch.tensor([0, 0, 1, 2, 2, 3]))
                   for h in views) / 2
    torch.testing.assert_close(terms["mmref"], 0.5 * expected)
    assert "mmref" not in run(obj, student, make_inputs(paired=False))
