import itertools

import numpy as np
import pytest

from distill.schedule import BatchPlan, epoch_steps, iterate_steps, paired_interval, total_steps


def test_paired_interval_matches_kdmcse_ratios():
    # docs/reference.md: at batch 64, Flickr gives k = 6 and COCO k = 2.
    wiki_batches = 1_000_000 // 64
    assert paired_interval(wiki_batches, 145_000 // 64 + 1, None) == 6
    assert paired_interval(10, 5, None) == 2
    assert paired_interval(10, 0, None) == 0
    assert paired_interval(10, 5, 3) == 3
    with pytest.raises(ValueError):
        paired_interval(10, 5, 0)


def test_every_kth_step_is_paired_and_rows_are_a_partition():
    steps = epoch_steps(BatchPlan(640, 128, 64), seed=0, epoch=0)
    kinds = [s.kind for s in steps]
    assert kinds == ["text"] * 4 + ["paired"] + ["text"] * 4 + ["paired"] + ["text"] * 2
    text_rows = np.concatenate([s.rows for s in steps if s.kind == "text"])
    paired_rows = np.concatenate([s.rows for s in steps if s.kind == "paired"])
    assert sorted(text_rows) == list(range(640))
    assert sorted(paired_rows) == list(range(128))


def test_incomplete_batches_are_dropped():
    steps = epoch_steps(BatchPlan(100, 0, 32), seed=0, epoch=0)
    assert [len(s.rows) for s in steps] == [32, 32, 32]


def test_orders_depend_on_seed_and_epoch_only():
    a = epoch_steps(BatchPlan(256, 64, 32), seed=7, epoch=1)
    b = epoch_steps(BatchPlan(256, 64, 32), seed=7, epoch=1)
    c = epoch_steps(BatchPlan(256, 64, 32), seed=7, epoch=2)
    assert all(np.array_equal(x.rows, y.rows) for x, y in zip(a, b))
    assert not all(np.array_equal(x.rows, y.rows) for x, y in zip(a, c))


def test_resume_replays_the_same_batches():
    full = list(iterate_steps(BatchPlan(256, 64, 32), seed=3, epochs=3, max_steps=None))
    resumed = list(iterate_steps(BatchPlan(256, 64, 32), seed=3, epochs=3, max_steps=None, start_step=13))
    assert [i for i, _ in resumed] == list(range(13, len(full)))
    assert all(np.array_equal(a.rows, b.rows) for (_, a), (_, b) in zip(full[13:], resumed))


def test_max_steps_crosses_epochs():
    steps = list(iterate_steps(BatchPlan(128, 0, 32), seed=0, epochs=1, max_steps=10))
    assert len(steps) == 10 == total_steps(BatchPlan(128, 0, 32), 1, 10)
    assert total_steps(BatchPlan(128, 0, 32), 2, None) == 8


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="no complete batch"):
        list(iterate_steps(BatchPlan(10, 0, 32), seed=0, epochs=1, max_steps=None))


# --- the official (released KDMCSE) schedule ------------------------------------------------------


def _official_reference(n_text, n_paired, batch_size, seed, epochs):
    """The released loop written plainly: two endless reshuffling loaders (short last batch kept),
    ceil(n_text/B) + ceil(n_paired/B) steps an epoch, paired at step % k == 0, loaders carried over."""
    def loader(n, pool):
        for pass_number in itertools.count():
            order = np.random.default_rng([seed, pool, pass_number]).permutation(n)
            yield from (order[i:i + batch_size] for i in range(0, n, batch_size))

    text, paired = loader(n_text, 0), loader(n_paired, 1)
    text_batches, paired_batches = -(-n_text // batch_size), -(-n_paired // batch_size)
    k = text_batches // paired_batches
    return [[("paired", next(paired)) if step % k == 0 else ("text", next(text))
             for step in range(text_batches + paired_batches)] for _ in range(epochs)]


def test_official_paired_steps_per_epoch_match_the_released_formula():
    """Wiki1M + 145k Flickr30k captions at batch 64: 15,625 + 2,266 batches, k = 6, so paired steps
    are 0, 6, ..., 17,886: 2,982 (1.32 passes over the pairs); one_pass gives 2,265."""
    official = epoch_steps(BatchPlan(1_000_000, 145_000, 64, schedule="official"), seed=0, epoch=0)
    assert len(official) == 15_625 + 2_266 == total_steps(BatchPlan(1_000_000, 145_000, 64, schedule="official"), 1, None)
    assert sum(s.kind == "paired" for s in official) == 2_982
    assert [s.kind for s in official[:7]] == ["paired"] + ["text"] * 5 + ["paired"]
    one_pass = epoch_steps(BatchPlan(1_000_000, 145_000, 64), seed=0, epoch=0)
    assert sum(s.kind == "paired" for s in one_pass) == 2_265


def test_official_epochs_are_the_released_loop_cut_by_epoch():
    reference = _official_reference(n_text=300, n_paired=100, batch_size=32, seed=5, epochs=3)
    for epoch, expected in enumerate(reference):
        steps = epoch_steps(BatchPlan(300, 100, 32, schedule="official"), seed=5, epoch=epoch)
        assert [s.kind for s in steps] == [kind for kind, _ in expected]
        assert all(np.array_equal(s.rows, rows) for s, (_, rows) in zip(steps, expected))
    # 10 + 4 batches a pass, k = 10 // 4 = 2: 14 steps, paired at 0, 2, ..., 12 (7 of them), so the
    # pairs loader wraps within the epoch after its short batch (100 = 3*32 + 4).
    assert [len(rows) for kind, rows in reference[0] if kind == "paired"] == [32, 32, 32, 4, 32, 32, 32]
    assert [len(rows) for kind, rows in reference[0] if kind == "text"] == [32] * 7


def test_official_resume_replays_the_same_batches():
    full = list(iterate_steps(BatchPlan(300, 100, 32, schedule="official"), seed=3, epochs=3, max_steps=None))
    resumed = list(iterate_steps(BatchPlan(300, 100, 32, schedule="official"), seed=3, epochs=3, max_steps=None,
                                 start_step=20))
    assert len(full) == 3 * 14 and [i for i, _ in resumed] == list(range(20, 42))
    assert all(np.array_equal(a.rows, b.rows) for (_, a), (_, b) in zip(full[20:], resumed))


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        BatchPlan(64, 0, 32, schedule="twice")
