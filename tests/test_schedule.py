import numpy as np
import pytest

from distill.schedule import epoch_steps, iterate_steps, paired_interval, total_steps


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
    steps = epoch_steps(n_text=640, n_paired=128, batch_size=64, seed=0, epoch=0)
    kinds = [s.kind for s in steps]
    assert kinds == ["text"] * 4 + ["paired"] + ["text"] * 4 + ["paired"] + ["text"] * 2
    text_rows = np.concatenate([s.rows for s in steps if s.kind == "text"])
    paired_rows = np.concatenate([s.rows for s in steps if s.kind == "paired"])
    assert sorted(text_rows) == list(range(640))
    assert sorted(paired_rows) == list(range(128))


def test_incomplete_batches_are_dropped():
    steps = epoch_steps(n_text=100, n_paired=0, batch_size=32, seed=0, epoch=0)
    assert [len(s.rows) for s in steps] == [32, 32, 32]


def test_orders_depend_on_seed_and_epoch_only():
    a = epoch_steps(256, 64, 32, seed=7, epoch=1)
    b = epoch_steps(256, 64, 32, seed=7, epoch=1)
    c = epoch_steps(256, 64, 32, seed=7, epoch=2)
    assert all(np.array_equal(x.rows, y.rows) for x, y in zip(a, b))
    assert not all(np.array_equal(x.rows, y.rows) for x, y in zip(a, c))


def test_resume_replays_the_same_batches():
    full = list(iterate_steps(256, 64, 32, seed=3, epochs=3, max_steps=None))
    resumed = list(iterate_steps(256, 64, 32, seed=3, epochs=3, max_steps=None, start_step=13))
    assert [i for i, _ in resumed] == list(range(13, len(full)))
    assert all(np.array_equal(a.rows, b.rows) for (_, a), (_, b) in zip(full[13:], resumed))


def test_max_steps_crosses_epochs():
    steps = list(iterate_steps(128, 0, 32, seed=0, epochs=1, max_steps=10))
    assert len(steps) == 10 == total_steps(128, 0, 32, 1, 10)
    assert total_steps(128, 0, 32, 2, None) == 8


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="no complete batch"):
        list(iterate_steps(10, 0, 32, seed=0, epochs=1, max_steps=None))
