"""AAHR module wiring: queue contents across steps, queue negatives in the text loss, same-cluster
weights, the prototype soft-target term, checkpoint round trip, identical state on two ranks."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from distill import losses
from distill.gather import gather_with_grad
from distill.terms.aahr import AAHR, AAHRConfig
from modules_testkit import TEACHER_TEXT_DIM, captured_views, make_inputs, make_student, objective, run


@pytest.fixture(scope="module")
def student(tiny_bert_dir):
    return make_student(tiny_bert_dir)


def test_queue_holds_the_gathered_candidates_of_earlier_steps_with_their_clusters(student):
    obj = objective(aahr=AAHRConfig(queue_size=100, prototypes=3, weight=0.1, cluster_negative_weight=1.0))
    replay = losses.OnlinePrototypes(3, TEACHER_TEXT_DIM, momentum=0.99)
    z2s, clusters = [], []
    for seed in (0, 1):
        inputs = make_inputs(paired=seed == 0, seed=seed)
        with captured_views(student) as views:
            run(obj, student, inputs, seed=seed)
        z2s.append(views[1])
        clusters.append(replay.update(inputs.teacher_text))
    queue = obj.aahr.queue
    assert len(queue) == 12
    torch.testing.assert_close(queue.negatives, torch.cat(z2s), rtol=0, atol=0)
    assert queue.ids.tolist() == torch.cat(clusters).tolist()
    torch.testing.assert_close(obj.aahr.prototypes.centroids, replay.centroids, rtol=0, atol=0)


def test_a_full_queue_keeps_the_newest_rows_oldest_first(student):
    obj = objective(aahr=AAHRConfig(queue_size=8, prototypes=0, weight=0.0, cluster_negative_weight=1.0))
    z2s = []
    for seed in (0, 1):
        with captured_views(student) as views:
            run(obj, student, make_inputs(seed=seed), seed=seed)
        z2s.append(views[1])
    assert len(obj.aahr.queue) == 8 and obj.aahr.prototypes is None
    torch.testing.assert_close(obj.aahr.queue.negatives, torch.cat(z2s)[-8:], rtol=0, atol=0)
    assert obj.aahr.queue.ids.tolist() == [-1] * 8


def test_text_loss_uses_the_queue_as_extra_negatives_after_the_batch(student):
    obj = objective(aahr=AAHRConfig(queue_size=50, prototypes=0, weight=0.0, cluster_negative_weight=1.0),
                    false_negative_filter="gist")
    run(obj, student, make_inputs(seed=0), seed=0)
    queued = obj.aahr.queue.negatives.clone()
    inputs = make_inputs(seed=1)
    with captured_views(student) as views:
        terms = run(obj, student, inputs, seed=1)
    z1, z2 = views
    s_cc = inputs.teacher_text @ inputs.teacher_text.T
    exclude = losses.same_image_mask(inputs.image_ids, inputs.image_ids) | losses.gist_mask(s_cc, 0.1, "absolute")
    padded = torch.cat([exclude, torch.zeros(6, len(queued), dtype=torch.bool)], dim=1)
    expected = losses.AngularMarginLoss(0.15, 0.05)(z1, torch.cat([z2, queued]), exclude=padded)
    torch.testing.assert_close(terms["text"], expected)
    assert terms["text"] > losses.AngularMarginLoss(0.15, 0.05)(z1, z2, exclude=exclude)  # more negatives


def test_extend_pads_exclude_and_weights_same_cluster_negatives_by_hand():
    aahr = AAHR(AAHRConfig(queue_size=4, prototypes=3, cluster_negative_weight=0.5), student_dim=2, teacher_dim=2,
                teacher_temperature=0.05)
    aahr.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 2]))
    candidates = torch.eye(2).repeat(2, 1)  # N = 4 gathered rows, clusters below
    clusters = torch.tensor([1, 0, 1, 2])
    exclude = torch.tensor([[False, True, False, False], [False, False, False, True]])
    # local anchors are rows 2, 3 (positive_offset 2, batch 2): clusters 1 and 2
    out, out_exclude, weights = aahr.extend(candidates, exclude, clusters, positive_offset=2, batch=2)
    assert torch.equal(out, torch.cat([candidates, torch.tensor([[1.0, 0.0], [0.0, 1.0]])]))
    assert out_exclude.tolist() == [[False, True, False, False, False, False],
                                    [False, False, False, True, False, False]]
    #                         batch: 1    0    1    2 | queue: 1    2
    assert weights.tolist() == [[0.5, 1.0, 1.0, 1.0, 0.5, 1.0],   # anchor cluster 1, positive col 2
                                [1.0, 1.0, 1.0, 1.0, 1.0, 0.5]]   # anchor cluster 2, positive col 3


def test_prototype_term_is_the_kl_of_teacher_to_student_assignments_by_hand():
    aahr = AAHR(AAHRConfig(queue_size=0, prototypes=2, temperature=0.5), student_dim=2, teacher_dim=2,
                teacher_temperature=0.25)
    aahr.prototypes.centroids.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    teacher = F.normalize(torch.tensor([[3.0, 1.0]]), dim=-1)
    view = F.normalize(torch.tensor([[1.0, 2.0]]), dim=-1)
    adapt = lambda c: c.flip(1)  # noqa: E731  swaps the prototypes: student prototypes = [[0, 1], [1, 0]]
    q = torch.softmax(torch.tensor([3.0, 1.0]) / 10 ** 0.5 / 0.25, 0)
    p = torch.softmax(torch.tensor([2.0, 1.0]) / 5 ** 0.5 / 0.5, 0)
    expected = (q * (q.log() - p.log())).sum()
    torch.testing.assert_close(aahr.prototype_loss([view, view], teacher, adapt), expected)


def test_state_is_checkpointed_and_loads_into_a_fresh_objective(student):
    cfg = dict(aahr=AAHRConfig(queue_size=10, prototypes=3, weight=0.1, cluster_negative_weight=0.5))
    trained = objective(**cfg)
    for seed in (0, 1):
        run(trained, student, make_inputs(seed=seed), seed=seed)
    state = trained.state_dict()
    assert {"aahr.queue.queue", "aahr.queue.queue_ids", "aahr.queue.ptr", "aahr.queue.count",
            "aahr.prototypes.centroids", "aahr.prototypes.initialized"} <= set(state)
    fresh = objective(**cfg)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in state.items()}
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    a = run(trained, student, make_inputs(seed=2), seed=2)
    b = run(fresh, student, make_inputs(seed=2), seed=2)
    assert torch.equal(a["loss"], b["loss"])


def _rank_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        aahr = AAHR(AAHRConfig(queue_size=5, prototypes=2, cluster_negative_weight=0.5), student_dim=4, teacher_dim=6,
                    teacher_temperature=0.05)
        for step in range(2):
            g = torch.Generator().manual_seed(10 * step + rank)  # every rank holds different rows
            local_z, local_t = torch.randn(3, 4, generator=g), F.normalize(torch.randn(3, 6, generator=g), dim=-1)
            candidates, offset = gather_with_grad(local_z)
            teacher_all, _ = gather_with_grad(local_t)
            clusters = aahr.assign(teacher_all)
            _, _, weights = aahr.extend(candidates, None, clusters, offset, 3)
            aahr.enqueue(candidates, clusters)
        torch.save({"state": aahr.state_dict(), "weights": weights}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes (forked: a spawned one would spend seconds importing torch again)
def test_two_ranks_keep_identical_state(tmp_path):
    mp.start_processes(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert a["state"].keys() == b["state"].keys() and "queue.queue" in a["state"]
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert a["weights"].shape == (3, 6 + 5)  # 6 gathered candidates + a full queue of 5
