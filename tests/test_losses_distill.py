"""Distillation losses, AAHR / MMRef / DIAS student forms, against values computed by hand."""
import math

import pytest
import torch

from distill.losses import (
    DimensionAlignmentLoss,
    EmbeddingRegressionLoss,
    MomentumQueue,
    OnlinePrototypes,
    ReferenceAlignmentLoss,
    SoftTargetKLLoss,
    SparseRelationLoss,
    build_references,
    rerank_with_references,
)


def vecs(angles, radius=1.0):
    return torch.tensor([[radius * math.cos(p), radius * math.sin(p)] for p in angles], dtype=torch.float64)


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def softmax(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def norm(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(u, v):
    return sum(x * y for x, y in zip(u, v))


# ---------------------------------------------------------------- soft targets, regression
def test_soft_target_kl_by_hand():
    A, C = [0.0, 1.2], [0.3, 1.0, 2.5]
    S = [[0.9, 0.2, -0.1], [0.5, 0.8, 0.3]]
    tau, tau_t = 0.1, 0.05
    rows_s = [[math.cos(a - c) / tau for c in C] for a in A]
    rows_t = [[s / tau_t for s in r] for r in S]
    expected = sum(kl(softmax(t), softmax(s)) for t, s in zip(rows_t, rows_s)) / 2
    loss = SoftTargetKLLoss(tau, tau_t)
    assert loss(vecs(A), vecs(C, 3.0), t64(S)).item() == pytest.approx(expected, rel=1e-10)
    # exclude candidate 1 for anchor 0 and candidate 0 for anchor 1: both distributions drop it
    ex = torch.tensor([[False, True, False], [True, False, False]])
    keep = [[0, 2], [1, 2]]
    expected_ex = sum(kl(softmax([rows_t[i][j] for j in keep[i]]), softmax([rows_s[i][j] for j in keep[i]]))
                      for i in range(2)) / 2
    assert loss(vecs(A), vecs(C), t64(S), exclude=ex).item() == pytest.approx(expected_ex, rel=1e-10)
    # identical distributions -> 0
    same = torch.cos(t64(A)[:, None] - t64(C)[None, :])
    assert SoftTargetKLLoss(tau, tau)(vecs(A), vecs(C), same).item() == pytest.approx(0.0, abs=1e-12)


def test_regression_by_hand():
    s, t = t64([[1.0, 2.0], [3.0, 4.0]]), t64([[1.0, 0.0], [0.0, 4.0]])
    assert EmbeddingRegressionLoss("mse")(s, t).item() == pytest.approx((0 + 4 + 9 + 0) / 4)
    cos0, cos1 = 1 / math.sqrt(5), 16 / (5 * 4)
    assert EmbeddingRegressionLoss("cosine")(s, t).item() == pytest.approx(((1 - cos0) + (1 - cos1)) / 2)
    x = s.clone().requires_grad_()
    torch.autograd.gradcheck(lambda x: EmbeddingRegressionLoss("cosine")(x, t), (x,))
    with pytest.raises(ValueError):
        EmbeddingRegressionLoss("l1")


# ---------------------------------------------------------------- DIAS
def test_dimension_alignment_by_hand():
    zs = [[1.0, 2.0], [2.0, 0.0], [3.0, 1.0]]
    zt = [[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]]
    eps, lam = 1e-5, 0.5

    def standardise(z):
        cols = list(zip(*z))
        out_cols = []
        for col in cols:
            mu = sum(col) / len(col)
            var = sum((x - mu) ** 2 for x in col) / len(col)
            out_cols.append([(x - mu) / math.sqrt(var + eps) for x in col])
        return list(zip(*out_cols))

    s, t = standardise(zs), standardise(zt)
    C = [[sum(s[b][k] * t[b][l] for b in range(3)) / 3 for l in range(2)] for k in range(2)]
    expected = (1 - C[0][0]) ** 2 + (1 - C[1][1]) ** 2 + lam * (C[0][1] ** 2 + C[1][0] ** 2)
    loss = DimensionAlignmentLoss(lam, eps)
    assert loss(t64(zs), t64(zt)).item() == pytest.approx(expected, rel=1e-10)
    assert torch.allclose(loss.cross_correlation(t64(zs), t64(zt)), t64(C))
    # a student equal to the teacher (up to per-dimension affine maps) has diagonal 1
    diag = torch.diagonal(loss.cross_correlation(3 * t64(zt) + 1, t64(zt)))
    assert torch.allclose(diag, torch.ones(2, dtype=torch.float64), atol=1e-5)
    x = t64(zs).requires_grad_()
    torch.autograd.gradcheck(lambda x: loss(x, t64(zt)), (x,))
    for dtype in (torch.float16, torch.bfloat16):
        same = torch.ones(4, 2, dtype=dtype, requires_grad=True)  # zero variance
        out = loss(same, torch.ones(4, 2, dtype=dtype))
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(same.grad).all()


def test_sparse_relation_by_hand():
    X = [0.0, 0.5, 2.0]  # student, anchors = candidates
    S = [[1.0, 0.3, 0.6], [0.9, 1.0, 0.1], [0.2, 0.4, 1.0]]  # teacher; diagonal = self
    # k = 1: row 0 -> col 2 (0.6 > 0.3), row 1 -> col 0, row 2 -> col 1
    picks = [(0, 2), (1, 0), (2, 1)]
    expected = sum((math.cos(X[i] - X[j]) - S[i][j]) ** 2 for i, j in picks) / 3
    assert SparseRelationLoss(1)(vecs(X), vecs(X), t64(S)).item() == pytest.approx(expected, rel=1e-10)
    # excluding (0, 2) makes row 0 fall back to col 1
    ex = torch.zeros(3, 3, dtype=torch.bool)
    ex[0, 2] = True
    picks = [(0, 1), (1, 0), (2, 1)]
    expected = sum((math.cos(X[i] - X[j]) - S[i][j]) ** 2 for i, j in picks) / 3
    assert SparseRelationLoss(1)(vecs(X), vecs(X), t64(S), exclude=ex).item() == pytest.approx(expected, rel=1e-10)
    # k larger than the number of non-self columns uses them all
    all_pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    expected = sum((math.cos(X[i] - X[j]) - S[i][j]) ** 2 for i, j in all_pairs) / 6
    assert SparseRelationLoss(10)(vecs(X), vecs(X), t64(S)).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- MMRef
def test_build_references_by_hand():
    img = t64([[2.0, 0.0], [0.0, 1.0]])
    caps = t64([[[0.0, 3.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 2.0]]])
    r0 = norm([0.5 * 1 + 0.5 * 0.5, 0.5 * 0 + 0.5 * 0.5])
    c1 = [(1 / math.sqrt(2) + 0) / 2, (1 / math.sqrt(2) + 1) / 2]
    r1 = norm([0.3 * 0 + 0.7 * c1[0], 0.3 * 1 + 0.7 * c1[1]])
    assert torch.allclose(build_references(img, caps, 0.5)[0], t64(r0))
    assert torch.allclose(build_references(img, caps, 0.3)[1], t64(r1))
    # flat captions + grouping; image 2 has no caption -> its reference is the image itself
    img3 = torch.cat([img, t64([[3.0, 4.0]])])
    flat, index = caps.reshape(4, 2), torch.tensor([0, 0, 1, 1])
    refs = build_references(img3, flat, 0.3, caption_image_index=index)
    assert torch.allclose(refs[:2], build_references(img, caps, 0.3))
    assert torch.allclose(refs[2], t64([0.6, 0.8]))
    with pytest.raises(ValueError):
        build_references(img, flat, 0.5)


def test_reference_alignment_by_hand():
    caps, refs, target = [0.1, 1.0, 1.5], [0.0, 1.2, 2.5], [0, 1, 1]  # two captions of image 1
    tau = 0.05
    expected = sum(-math.log(softmax([math.cos(c - r) / tau for r in refs])[y]) for c, y in zip(caps, target)) / 3
    loss = ReferenceAlignmentLoss(tau)
    assert loss(vecs(caps), vecs(refs), torch.tensor(target)).item() == pytest.approx(expected, rel=1e-10)
    # with a projection: a scaling changes nothing (cosine)
    proj = torch.nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        proj.weight.copy_(2 * torch.eye(2))
    projected = ReferenceAlignmentLoss(tau, proj)(vecs(caps), vecs(refs), torch.tensor(target))
    assert projected.item() == pytest.approx(expected)
    # exclude never removes the target
    ex = torch.ones(3, 3, dtype=torch.bool)
    assert loss(vecs(caps), vecs(refs), torch.tensor(target), ex).item() == pytest.approx(0.0, abs=1e-12)


def test_rerank_by_hand():
    ti, tr = t64([[0.2, 0.9], [0.5, 0.1]]), t64([[0.8, 0.1], [0.3, 0.7]])
    out = rerank_with_references(ti, tr, 0.25)
    assert torch.allclose(out, t64([[0.75 * 0.2 + 0.25 * 0.8, 0.75 * 0.9 + 0.25 * 0.1],
                                    [0.75 * 0.5 + 0.25 * 0.3, 0.75 * 0.1 + 0.25 * 0.7]]))
    assert torch.equal(rerank_with_references(ti, tr, 0.0), ti)


# ---------------------------------------------------------------- AAHR
def test_momentum_queue_fifo():
    q = MomentumQueue(size=3, dim=2)
    assert q.negatives.shape == (0, 2) and len(q) == 0
    x = torch.arange(10.0).reshape(5, 2).requires_grad_()
    q.enqueue(x[:2], ids=torch.tensor([10, 11]))
    assert torch.equal(q.negatives, x[:2].detach()) and q.ids.tolist() == [10, 11]
    q.enqueue(x[2:4])  # no ids -> -1
    assert torch.equal(q.negatives, x[1:4].detach()) and q.ids.tolist() == [11, -1, -1]
    assert not q.negatives.requires_grad
    q.enqueue(x, ids=torch.arange(5))  # more rows than capacity: keep the newest 3
    assert torch.equal(q.negatives, x[2:].detach()) and q.ids.tolist() == [2, 3, 4]
    q.enqueue(x[:1].half())
    assert torch.equal(q.negatives, torch.cat([x[3:], x[:1]]).detach()) and q.negatives.dtype == torch.float32
    assert set(q.state_dict()) == {"queue", "queue_ids", "ptr", "count"}


def test_online_prototypes_deterministic_init_and_ema_by_hand():
    x = t64([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.1], [0.6, 0.8]]).float()
    p1, p2 = OnlinePrototypes(2, 2, momentum=0.9, seed=3), OnlinePrototypes(2, 2, momentum=0.9, seed=3)
    p1._init_from(torch.nn.functional.normalize(x, dim=-1))
    p2._init_from(torch.nn.functional.normalize(x, dim=-1))
    assert torch.equal(p1.centroids, p2.centroids)
    rows = torch.nn.functional.normalize(x, dim=-1)
    for c in p1.centroids:  # every centroid is one of the (normalised) batch rows
        assert any(torch.allclose(c, r) for r in rows)
    # one EMA step by hand
    C = p1.centroids.tolist()
    xs = [norm(r) for r in x.tolist()]
    assign = [max(range(2), key=lambda k: dot(v, C[k])) for v in xs]
    expected = []
    for k in range(2):
        members = [v for v, a in zip(xs, assign) if a == k]
        if not members:
            expected.append(C[k])
            continue
        mean = [sum(col) / len(members) for col in zip(*members)]
        expected.append(norm([0.9 * C[k][d] + 0.1 * mean[d] for d in range(2)]))
    assert p1.update(x).tolist() == assign
    assert torch.allclose(p1.centroids, torch.tensor(expected), atol=1e-6)
    # fewer rows than prototypes: distinct, unit-norm, deterministic
    p3, p4 = OnlinePrototypes(5, 2, seed=1), OnlinePrototypes(5, 2, seed=1)
    p3.update(x[:2]), p4.update(x[:2])
    assert torch.equal(p3.centroids, p4.centroids)
    assert torch.allclose(p3.centroids.norm(dim=1), torch.ones(5))
    assert len({tuple(c) for c in p3.centroids.tolist()}) == 5
