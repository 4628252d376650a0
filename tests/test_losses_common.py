"""Properties shared by every in-batch loss: finite on degenerate inputs in fp32/fp16/bf16, float64
gradcheck, ``exclude`` semantics and ``positive_offset`` semantics."""
import math

import pytest
import torch

from distill.losses import (
    AdapACSELoss,
    AngularMarginLoss,
    MCSEGroundingLoss,
    SimCSELoss,
    SoftTargetKLLoss,
    SparseRelationLoss,
    WeightedInfoNCELoss,
    cosine_matrix,
)

MARGIN = 0.15


def teacher_sims(a, c):
    """A fixed 'teacher' similarity of the same pairs, consistent under candidate permutation."""
    w = torch.linspace(0.5, 1.5, a.shape[1], dtype=torch.float64)
    a, c = a.detach().double() * w, c.detach().double() * w
    return (a / a.norm(dim=1, keepdim=True)) @ (c / c.norm(dim=1, keepdim=True)).T


def _second_view(a):
    return a + 0.3 * torch.roll(a, 1, dims=1)


# Every case: (anchors [B, d], candidates [N, d], exclude, positive_offset, teacher [B, N]) -> scalar.
CASES = {
    "simcse": lambda a, c, ex, o, t: SimCSELoss()(a, c, ex, o),
    "angular_margin": lambda a, c, ex, o, t: AngularMarginLoss(MARGIN)(a, c, ex, o),
    "adapacse": lambda a, c, ex, o, t: AdapACSELoss(MARGIN)(
        [a, _second_view(a)], c, torch.roll(c, 1, dims=1), t, t.abs(), exclude=ex, positive_offset=o),
    "mcse": lambda a, c, ex, o, t: MCSEGroundingLoss()([a, _second_view(a)], c, ex, o),
    "weighted_angular": lambda a, c, ex, o, t: WeightedInfoNCELoss(margin=0.15)(
        a, c, torch.where(t > 0.2, 0.5, 1.0).to(t), ex, o),
    "weighted": lambda a, c, ex, o, t: WeightedInfoNCELoss()(
        a, c, torch.where(t > 0.2, 0.5, 1.0).to(t), ex, o),
    "soft_target": lambda a, c, ex, o, t: SoftTargetKLLoss(0.1, 0.05)(a, c, t, ex, o),
    "sparse_relation": lambda a, c, ex, o, t: SparseRelationLoss(k=2)(a, c, t, ex, o),
}
names = pytest.mark.parametrize("name", list(CASES))


def _inputs(B=3, N=5, d=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, d, generator=g, dtype=dtype)
    c = torch.randn(N, d, generator=g, dtype=dtype)
    c[:B] = a + 0.3 * torch.randn(B, d, generator=g, dtype=dtype)  # positives close to anchors
    return a, c


@names
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_on_identical_and_opposite_vectors(name, dtype):
    e = torch.eye(3, dtype=torch.float64)
    a = torch.stack([e[0], e[1], e[2]])
    # positives identical to anchors; negatives: an exact duplicate and exact opposites
    c = torch.stack([e[0], e[1], e[2], e[0], -e[0], -e[1], -e[2]])
    t = teacher_sims(a, c + 1e-3)
    a_, c_ = (x.to(dtype).requires_grad_() for x in (a, c))
    loss = CASES[name](a_, c_, None, 0, t)
    loss.backward()
    assert torch.isfinite(loss), loss
    assert torch.isfinite(a_.grad).all() and torch.isfinite(c_.grad).all()
    # all candidates equal / opposite to the anchor
    a2 = e[:1].repeat(3, 1).to(dtype).requires_grad_()
    c2 = torch.cat([e[:1].repeat(3, 1), -e[:1].repeat(3, 1)]).to(dtype).requires_grad_()
    loss2 = CASES[name](a2, c2, None, 0, teacher_sims(a2, c2))
    loss2.backward()
    assert torch.isfinite(loss2) and torch.isfinite(a2.grad).all() and torch.isfinite(c2.grad).all()


@names
def test_gradcheck_float64(name):
    a, c = _inputs()
    cos = (a / a.norm(dim=1, keepdim=True)) @ (c / c.norm(dim=1, keepdim=True)).T
    theta = torch.arccos(cos)
    negatives = theta[~torch.eye(3, 5, dtype=torch.bool)]
    # keep away from the non-smooth points: arccos at +-1 and the margin indicator theta = m
    assert (negatives - MARGIN).abs().min() > 0.05
    assert (math.pi - theta).min() > 0.05 and theta.min() > 0.05
    t = teacher_sims(a, c)
    torch.autograd.gradcheck(lambda a, c: CASES[name](a, c, None, 0, t),
                             (a.requires_grad_(), c.requires_grad_()), eps=1e-6, atol=1e-5)


@names
def test_exclude_never_removes_positive(name):
    a, c = _inputs()
    t = teacher_sims(a, c)
    everything = torch.ones(3, 5, dtype=torch.bool)
    nothing_left = CASES[name](a, c, everything, 0, t)
    if name in ("simcse", "angular_margin", "weighted_angular", "weighted", "soft_target"):
        # only the positive is left in every row: softmax is one-hot on it -> zero loss
        assert nothing_left.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(nothing_left)
    diag_only = torch.eye(3, 5, dtype=torch.bool)  # marks only the positives: must be a no-op
    assert CASES[name](a, c, diag_only, 0, t).item() == pytest.approx(CASES[name](a, c, None, 0, t).item(), rel=1e-12)


@names
def test_excluded_candidate_has_no_influence(name):
    a, c = _inputs()
    ex = torch.zeros(3, 5, dtype=torch.bool)
    ex[:, 4] = True  # candidate 4 is nobody's positive
    t = teacher_sims(a, c)
    base = CASES[name](a, c, ex, 0, t)
    c_moved = c.clone()
    c_moved[4] = torch.tensor([-3.0, 1.0, 2.0, 0.5], dtype=torch.float64)
    t_moved = t.clone()
    t_moved[:, 4] = 0.99  # teacher score of the removed candidate changes too
    assert CASES[name](a, c_moved, ex, 0, t_moved).item() == pytest.approx(base.item(), rel=1e-12)
    # ... and it equals the loss computed without that candidate at all
    assert CASES[name](a, c[:4], None, 0, t[:, :4]).item() == pytest.approx(base.item(), rel=1e-12)
    c_ = c.clone().requires_grad_()
    CASES[name](a, c_, ex, 0, t).backward()
    assert torch.all(c_.grad[4] == 0)


@names
def test_positive_offset_is_a_candidate_permutation(name):
    a, c = _inputs(N=3)
    extra = _inputs(B=3, N=4, seed=1)[1][:4]  # 4 candidates of "other ranks"
    before = torch.cat([extra[:2], c, extra[2:]])  # local positives start at 2
    after = torch.cat([c, extra])  # same set, local positives at 0
    ex_after = torch.zeros(3, 7, dtype=torch.bool)
    ex_after[0, 4] = True  # remove "extra[1]" for anchor 0
    ex_before = torch.cat([ex_after[:, 3:5], ex_after[:, :3], ex_after[:, 5:]], dim=1)
    l_before = CASES[name](a, before, ex_before, 2, teacher_sims(a, before))
    l_after = CASES[name](a, after, ex_after, 0, teacher_sims(a, after))
    assert l_before.item() == pytest.approx(l_after.item(), rel=1e-10)
    with pytest.raises(ValueError):
        CASES[name](a, before, None, 5, teacher_sims(a, before))  # 5 + 3 > 7 candidates


@names
def test_cpu_bf16_autocast_keeps_similarities_in_float32(name):
    a, c = (x.float() for x in _inputs())
    t = teacher_sims(a, c)
    reference = CASES[name](a, c, None, 0, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cosine_matrix(a, c).dtype == torch.float32
        under_autocast = CASES[name](a, c, None, 0, t)
    assert under_autocast.item() == pytest.approx(reference.item(), rel=1e-5)
