"""Levers on a training step's cost. Length-grouped text batches (``train.length_grouped``): the same
rows, steps and paired batches as the random order, each text batch of similar token lengths, the
batches still in random order. Frozen word embeddings (``student.freeze_word_embeddings``): that matrix
gets no gradient and no optimiser state, everything else trains."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.config import ConfigError, load_config
from distill.run import compiled_graphs
from distill.run_folder import TrainSummary
from distill.schedule import GROUP_BATCHES, BatchPlan, epoch_steps, iterate_steps
from distill.step_loader import text_token_lengths
from distill.schedule import Step
from distill.trainer import training_step
from train_testkit import tiny_run

PLAN = BatchPlan(n_text=8 * GROUP_BATCHES * 3 + 5, n_paired=40, batch_size=8)
LENGTHS = np.random.default_rng(7).integers(3, 33, PLAN.n_text)


def padding(steps, lengths) -> float:
    text = [lengths[s.rows] for s in steps if s.kind == "text"]
    return 1 - sum(t.sum() for t in text) / sum(t.max() * len(t) for t in text)


def test_the_same_rows_and_steps_with_less_padding():
    plain, grouped = epoch_steps(PLAN, 3, 0), epoch_steps(PLAN, 3, 0, LENGTHS)
    assert [s.kind for s in plain] == [s.kind for s in grouped]
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(plain, grouped) if a.kind == "paired")
    rows = lambda steps: np.sort(np.concatenate([s.rows for s in steps if s.kind == "text"]))  # noqa: E731
    assert np.array_equal(rows(plain), rows(grouped))
    assert padding(grouped, LENGTHS) < padding(plain, LENGTHS) / 3
    longest = [LENGTHS[s.rows].max() for s in grouped if s.kind == "text"]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # batch order stays random


def test_the_order_is_a_function_of_seed_and_epoch():
    again = list(iterate_steps(PLAN, 3, 2, None, text_lengths=LENGTHS))
    once = list(iterate_steps(PLAN, 3, 2, None, text_lengths=LENGTHS))
    assert all(a == b and np.array_equal(x.rows, y.rows) for (a, x), (b, y) in zip(again, once))
    resumed = list(iterate_steps(PLAN, 3, 2, None, start_step=17, text_lengths=LENGTHS))
    assert all(np.array_equal(x.rows, y.rows) for (_, x), (_, y) in zip(once[17:], resumed))
    assert not np.array_equal(epoch_steps(PLAN, 3, 1, LENGTHS)[0].rows, epoch_steps(PLAN, 3, 0, LENGTHS)[0].rows)


@pytest.mark.parametrize("overrides, message", [
    (["train.length_grouped=true", "train.schedule=official"], "length_grouped reorders the one_pass schedule"),
    (["train.length_grouped=true", "student.kind=static", "student.layers=null"], "a static student pads nothing"),
])
def test_settings_it_cannot_serve_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_lengths_are_the_students_own_token_counts(tiny_bert_dir):
    run = tiny_run(tiny_bert_dir)
    lengths = text_token_lengths(run, chunk=5)
    student, pools = run.trainable.student, run.pools
    expected = [int(student.tokenise([pools.sentences[i]])["attention_mask"].sum()) for i in pools.text_rows]
    assert lengths.tolist() == expected


def test_frozen_word_embeddings_stay_and_the_rest_trains(tiny_bert_dir):
    run = tiny_run(tiny_bert_dir, overrides=("student.freeze_word_embeddings=true",))
    encoder = run.trainable.student.encoder
    words = encoder[0].auto_model.get_input_embeddings().weight
    layer = next(p for name, p in encoder.named_parameters() if "layer.0" in name and name.endswith("weight"))
    before_words, before_layer = words.detach().clone(), layer.detach().clone()
    training_step(run, Step("text", np.arange(8)))
    assert torch.equal(words, before_words) and words.grad is None and words not in run.optimizer.state
    assert not torch.equal(layer, before_layer)


def test_a_static_student_cannot_freeze_its_only_weights():
    with pytest.raises(ConfigError, match="would freeze all of a static student"):
        load_config(None, ["student.kind=static", "student.layers=null", "student.freeze_word_embeddings=true"])


def test_a_compiled_step_counts_its_graphs_and_the_summary_says_so(tiny_bert_dir, monkeypatch):
    # dynamo's "eager" backend: the same capture and graph count as inductor, without its C++ compile
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: compile_(*args, **{**kwargs, "backend": "eager"}))
    for _ in range(2):  # a second run in the same process counts its own graphs, not the first run's
        run = tiny_run(tiny_bert_dir, overrides=("train.compile=true",))
        assert compiled_graphs() == 0
        run.pools.sentences[:8] = [" ".join(["word"] * n) for n in range(1, 9)]  # a batch of other lengths
        training_step(run, Step("text", np.arange(8)))
        training_step(run, Step("text", np.arange(8, 16)))
        assert 1 <= compiled_graphs() <= 3  # one graph, another once dynamic shapes start; not one per batch
    summary = TrainSummary(steps=2, best_step=2, best_stsb_dev=1.0, train_seconds=1.0, dev_history=[],
                           device="cpu", effective_batch_size=8, compiled_graphs=compiled_graphs())
    assert f"fp32, cpu, torch.compile: {compiled_graphs()} graph" in summary.describe(Path("model"), "fp32")
    assert "compile" not in replace(summary, compiled_graphs=None).describe(Path("model"), "fp32")
    assert "no graph compiled, every step ran eagerly" in replace(summary, compiled_graphs=0).describe(Path("m"), "fp32")
