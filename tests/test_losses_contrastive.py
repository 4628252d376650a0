"""Contrastive losses against values computed by hand (python math on 2-D vectors given by angle)."""
import math

import pytest
import torch

from distill.losses import (
    AdapACSELoss,
    AngularMarginLoss,
    MCSEGroundingLoss,
    SimCSELoss,
    WeightedInfoNCELoss,
    angular_margin_logits,
    cosine_logits,
)

TAU, M = 0.05, 0.15


def vecs(angles, radius=1.0):
    """2-D vectors at the given angles (radius != 1 checks that the losses normalise)."""
    return torch.tensor([[radius * math.cos(p), radius * math.sin(p)] for p in angles], dtype=torch.float64)


def ce(logits, target, weights=None):
    """-log softmax(logits)[target], optional weights on exp terms (python math)."""
    weights = weights or [1.0] * len(logits)
    return -logits[target] + math.log(sum(w * math.exp(x) for w, x in zip(weights, logits)))


A = [0.0, 1.2]  # anchor angles
C = [0.3, 1.0, 2.5, 1.25]  # candidate angles; positives are C[0], C[1]


def test_simcse_by_hand():
    rows = [[math.cos(a - c) / TAU for c in C] for a in A]
    expected = (ce(rows[0], 0) + ce(rows[1], 1)) / 2
    loss = SimCSELoss(TAU)(vecs(A, 2.0), vecs(C, 0.5))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert torch.allclose(cosine_logits(vecs(A), vecs(C), TAU), torch.tensor(rows, dtype=torch.float64))


def test_angular_margin_by_hand():
    def logit(i, j):
        theta = abs(A[i] - C[j])  # all differences < pi here
        margin = M if (j != i and theta > M) else 0.0  # C[3] is 0.05 rad from A[1]: no margin
        return math.cos(theta - margin) / TAU

    rows = [[logit(i, j) for j in range(4)] for i in range(2)]
    expected = (ce(rows[0], 0) + ce(rows[1], 1)) / 2
    loss = AngularMarginLoss(M, TAU)(vecs(A, 3.0), vecs(C))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert torch.allclose(angular_margin_logits(vecs(A), vecs(C), M, TAU), torch.tensor(rows, dtype=torch.float64))
    # a margin raises negative logits, so the loss is larger than SimCSE's; m = 0 is SimCSE
    assert loss > SimCSELoss(TAU)(vecs(A), vecs(C))
    assert AngularMarginLoss(0.0, TAU)(vecs(A), vecs(C)).item() == pytest.approx(
        SimCSELoss(TAU)(vecs(A), vecs(C)).item(), rel=1e-12)


def test_adapacse_by_hand():
    P = [[0.0, 1.2], [0.1, 1.4]]  # two dropout views of 2 sentences
    V = [0.2, 1.1, 1.3]  # image adapters; V[2] is 0.1 rad from both views of sentence 1
    T = [0.5, 1.6, 2.9]  # caption adapters
    s_vv = [[1.0, 0.4, -0.2], [0.4, 1.0, 0.5]]
    s_cc = [[0.9, 0.7, 0.0], [0.2, 0.95, 0.5]]

    def term(view, adapters, s):
        total = 0.0
        for i in range(2):
            row = []
            for j in range(3):
                theta = abs(view[i] - adapters[j])
                # indicator uses the full margin m: theta = 0.1 with (1 - 0.5) m = 0.075 gets none
                on = j != i and theta > M
                row.append(math.cos(theta - (1 - s[i][j]) * M * on) / TAU)
            total += ce(row, i)
        return total / 2

    expected_v = (term(P[0], V, s_vv) + term(P[1], V, s_vv)) / 2
    expected_t = (term(P[0], T, s_cc) + term(P[1], T, s_cc)) / 2
    loss = AdapACSELoss(M, TAU)
    args = dict(s_vv=torch.tensor(s_vv, dtype=torch.float64), s_cc=torch.tensor(s_cc, dtype=torch.float64))
    views = [vecs(P[0], 2.0), vecs(P[1])]
    assert loss(views, vecs(V), vecs(T), **args).item() == pytest.approx(expected_v + expected_t, rel=1e-10)
    assert loss(views, vecs(V), None, **args).item() == pytest.approx(expected_v, rel=1e-10)
    assert loss(views, None, vecs(T), **args).item() == pytest.approx(expected_t, rel=1e-10)
    # a stacked [V, B, d] tensor is accepted too
    assert loss(torch.stack(views), vecs(V), vecs(T), **args).item() == pytest.approx(expected_v + expected_t)
    # s = None means s = 0: the uniform-margin L_intra logits
    assert loss(views[:1], vecs(V)).item() == pytest.approx(AngularMarginLoss(M, TAU)(views[0], vecs(V)).item())
    with pytest.raises(ValueError):
        loss(views)


def test_mcse_by_hand():
    P = [[0.0, 1.2], [0.1, 1.4]]
    V = [0.2, 1.1, 2.0]
    expected = sum(ce([math.cos(p[i] - v) / TAU for v in V], i) for p in P for i in range(2)) / 4
    loss = MCSEGroundingLoss(TAU)([vecs(P[0]), vecs(P[1], 0.2)], vecs(V, 5.0))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_focal_by_hand():
    tau, gamma = 0.5, 2.0  # a large tau so that p_ii is far from 1 and the weights matter
    rows = [[math.cos(a - c) / tau for c in C] for a in A]
    terms = [ce(rows[i], i) for i in range(2)]
    expected = sum((1 - math.exp(-l)) ** gamma * l for l in terms) / 2
    loss = WeightedInfoNCELoss(tau, gamma=gamma)(vecs(A), vecs(C))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    simcse = SimCSELoss(tau)(vecs(A), vecs(C)).item()
    assert WeightedInfoNCELoss(tau, gamma=0.0)(vecs(A), vecs(C)).item() == pytest.approx(simcse)


def test_focal_detached_gradient_is_reweighted_infonce():
    tau = 0.5
    a = vecs(A).requires_grad_()
    WeightedInfoNCELoss(tau, gamma=2.0)(a, vecs(C)).backward()
    grads = []
    for i in range(2):
        ai = vecs(A).requires_grad_()
        l_i = torch.nn.functional.cross_entropy(cosine_logits(ai, vecs(C), tau)[i:i + 1], torch.tensor([i]))
        l_i.backward()
        grads.append((1 - math.exp(-l_i.item())) ** 2 * ai.grad / 2)
    assert torch.allclose(a.grad, grads[0] + grads[1])


def test_weighted_infonce_by_hand():
    w = [[1.0, 0.5, 1.0, 0.25], [0.0, 0.3, 1.0, 0.5]]  # w[1][1] is the positive: forced to 1
    rows = [[math.cos(a - c) / TAU for c in C] for a in A]
    w_eff = [w[0], [0.0, 1.0, 1.0, 0.5]]
    expected = (ce(rows[0], 0, w_eff[0]) + ce(rows[1], 1, w_eff[1])) / 2
    loss = WeightedInfoNCELoss(TAU)(vecs(A), vecs(C), torch.tensor(w, dtype=torch.float64))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # weight 0 == exclude
    ex = torch.tensor([[False] * 4, [True, False, False, False]])
    w1 = torch.tensor([[1.0, 0.5, 1.0, 0.25], [1.0, 1.0, 1.0, 0.5]], dtype=torch.float64)
    assert WeightedInfoNCELoss(TAU)(vecs(A), vecs(C), w1, exclude=ex).item() == pytest.approx(expected, rel=1e-10)
    assert WeightedInfoNCELoss(TAU)(vecs(A), vecs(C)).item() == pytest.approx(SimCSELoss(TAU)(vecs(A), vecs(C)).item())


def test_weighted_infonce_with_a_margin_is_the_angular_margin_loss_when_nothing_reshapes_it():
    a, c = vecs([0.0, 1.2, 2.0]), vecs([0.3, 1.0, 2.5, 1.25, 0.1, 2.2], 3.0)
    exclude = torch.zeros(3, 6, dtype=torch.bool)
    exclude[0, 4] = exclude[2, 1] = True
    weighted = WeightedInfoNCELoss(TAU, margin=M)(a, c, exclude=exclude, positive_offset=2)
    assert weighted.item() == pytest.approx(AngularMarginLoss(M, TAU)(a, c, exclude, positive_offset=2).item(),
                                            rel=1e-12)


def test_weighted_focal_angular_by_hand():
    tau, gamma = 0.5, 1.0
    w = [[1.0, 0.5, 1.0, 0.25], [1.0, 1.0, 0.5, 1.0]]
    rows = [[math.cos(a - c) for c in C] for a in A]
    margin_rows = [[x if j == i or math.acos(x) <= M else math.cos(math.acos(x) - M) for j, x in enumerate(r)]
                   for i, r in enumerate(rows)]
    terms = [ce([x / tau for x in margin_rows[i]], i, w[i]) for i in range(2)]
    expected = sum((1 - math.exp(-l)) ** gamma * l for l in terms) / 2
    loss = WeightedInfoNCELoss(tau, margin=M, gamma=gamma)(vecs(A), vecs(C), torch.tensor(w, dtype=torch.float64))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
