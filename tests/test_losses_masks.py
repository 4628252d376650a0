"""False-negative masks and same-cluster weights, checked entry by entry."""
import pytest
import torch

from distill.losses import (
    SimCSELoss,
    cross_modal_mask,
    gist_mask,
    same_cluster_weights,
    same_image_mask,
    threshold_mask,
)

T, F = True, False


def test_same_image_mask():
    ids = torch.tensor([7, 7, 9])
    cand = torch.tensor([7, 7, 9, 7])
    assert same_image_mask(ids, cand).tolist() == [[F, T, F, T], [T, F, F, T], [F, F, F, F]]
    # string ids, and positives at an offset (candidates gathered from ranks: [other, local...])
    m = same_image_mask(["a", "a", "b"], ["b", "a", "a", "b"], positive_offset=1)
    assert m.tolist() == [[F, F, T, F], [F, T, F, F], [T, F, F, F]]


def test_threshold_mask():
    s = torch.tensor([[0.95, 0.91, 0.3], [0.92, 0.5, 0.89]])
    assert threshold_mask(s, 0.9).tolist() == [[F, T, F], [T, F, F]]  # the positive 0.5 < 0.9: kept anyway
    assert threshold_mask(s, 0.9, positive_offset=1).tolist() == [[T, F, F], [T, F, F]]


# Teacher captions and images of three rows, not unit length (the released code compares raw CLIP dots).
CAPTIONS = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
IMAGES = torch.tensor([[0.0, 1.0], [1.0, 0.5], [0.5, 0.0]])


def test_cross_modal_mask_raw_dot_by_hand():
    # image term: caption_i . image_j = [[0, 1, .5], [2, 1, 0], [1, 1.5, .5]]; > 0.8 off the diagonal
    assert cross_modal_mask(CAPTIONS, IMAGES).tolist() == [[F, T, F], [T, F, F], [T, T, F]]
    # caption term: image_i . caption_j = [[0, 2, 1], [1, 1, 1.5], [.5, 0, .5]]: not the transpose's mask
    assert cross_modal_mask(IMAGES, CAPTIONS).tolist() == [[F, T, T], [T, F, T], [F, F, F]]
    assert cross_modal_mask(CAPTIONS, IMAGES, threshold=1.2).tolist() == [[F, F, F], [T, F, F], [F, T, F]]


def test_cross_modal_mask_cosine_and_offset_by_hand():
    # cos(caption_i, image_j) = [[0, .894, 1], [1, .447, 0], [.707, .949, .707]]
    assert cross_modal_mask(CAPTIONS, IMAGES, similarity="cosine").tolist() == [[F, T, T], [T, F, F], [F, T, F]]
    # two local rows whose positives sit at columns 1, 2 (rank 1 of a gathered batch)
    assert cross_modal_mask(CAPTIONS[1:], IMAGES, positive_offset=1).tolist() == [[T, F, F], [T, T, F]]
    with pytest.raises(ValueError, match="share one space"):
        cross_modal_mask(CAPTIONS, torch.ones(3, 4))
    with pytest.raises(ValueError, match="similarity"):
        cross_modal_mask(CAPTIONS, IMAGES, similarity="l2")


def test_gist_mask_absolute_and_relative():
    g = torch.tensor([[0.8, 0.75, 0.9, 0.1], [0.5, 0.6, 0.59, 0.45]])
    # absolute, margin 0.1: mask where g > g_pos - 0.1 -> row 0: > 0.7; row 1: > 0.5
    assert gist_mask(g, 0.1, "absolute").tolist() == [[F, T, T, F], [F, F, T, F]]
    # relative, margin 0.25: mask where g > g_pos * 0.75 -> row 0: > 0.6; row 1: > 0.45
    assert gist_mask(g, 0.25, "relative").tolist() == [[F, T, T, F], [T, F, T, F]]
    # margin 0: only candidates the guide scores above the positive
    assert gist_mask(g, 0.0).tolist() == [[F, F, T, F], [F, F, F, F]]
    # offset 1: positives g[0, 1] = 0.75, g[1, 2] = 0.59
    assert gist_mask(g, 0.0, positive_offset=1).tolist() == [[T, F, T, F], [F, T, F, F]]
    with pytest.raises(ValueError):
        gist_mask(g, 0.1, "ratio")


def test_masks_combine_and_feed_a_loss():
    ids = torch.tensor([1, 1, 2])
    s = torch.tensor([[1.0, 0.2, 0.95], [0.1, 1.0, 0.3], [0.2, 0.2, 1.0]])
    ex = same_image_mask(ids, ids) | threshold_mask(s, 0.9)
    assert ex.tolist() == [[F, T, T], [T, F, F], [F, F, F]]
    a = torch.randn(3, 4)
    assert torch.isfinite(SimCSELoss()(a, a + 0.1, ex))


def test_same_cluster_weights():
    w = same_cluster_weights(torch.tensor([0, 1]), torch.tensor([0, 0, 1, -1, 1]), 0.25)
    assert w.tolist() == [[1.0, 0.25, 1.0, 1.0, 1.0], [1.0, 1.0, 0.25, 1.0, 0.25]]  # -1 = unknown
    w = same_cluster_weights(torch.tensor([0, 1]), torch.tensor([0, 0, 1, -1, 1]), 0.0, positive_offset=1)
    assert w.tolist() == [[0.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0]]
