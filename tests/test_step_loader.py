"""The trainer's step loader (issue 11 item 3): inputs are prepared ahead, in worker processes when
``train.loader_workers`` > 0, and the run is the same number for number whatever the worker count."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.config import load_config, save_config
from distill.schedule import BatchPlan, Step, iterate_steps
from distill.student import Student
from distill.run_folder import check_resumable
from distill.step_loader import prepare_inputs, step_loader
from distill.trainer import train, training_step
from eval.sts import stsb_dev_evaluator

from train_testkit import ROOT, assert_same_weights, tiny_overrides, tiny_run

LONG = " ".join(["a very long sentence about dogs running in the park"] * 8)  # > 32 tokens: truncated


def run_steps(tiny_bert_dir, workers: int | None) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses and final weights of 4 steps (text and paired) with dropout on; ``workers=None``: each
    step prepared inside ``training_step``, as before the loader existed."""
    run = tiny_run(tiny_bert_dir)
    run.pools.sentences[3] = LONG
    steps = list(iterate_steps(BatchPlan(16, 16, 4, paired_every=2), seed=7, epochs=1, max_steps=4))
    losses = []
    if workers is None:
        for _, step in steps:
            losses.append(training_step(run, step)["loss"].item())
    else:
        run.cfg.train.loader_workers = workers
        for prepared in step_loader(run, steps):
            losses.append(training_step(run, prepared.step, prepared.inputs.to(run.env.device))["loss"].item())
    return losses, {k: v.clone() for k, v in run.trainable.state_dict().items()}


@pytest.mark.slow  # loader worker processes
def test_zero_and_two_workers_train_identically(tiny_bert_dir):
    reference_losses, reference_weights = run_steps(tiny_bert_dir, None)
    assert len(set(reference_losses)) == 4  # the steps differ: a real comparison
    for workers in (0, 2):
        losses, weights = run_steps(tiny_bert_dir, workers)
        assert losses == reference_losses, workers
        for key, value in reference_weights.items():
            assert torch.equal(weights[key], value), (workers, key)


def test_the_student_receives_the_tokenised_texts_of_the_step(tiny_bert_dir, monkeypatch):
    run = tiny_run(tiny_bert_dir)
    run.pools.sentences[3] = LONG
    rows = np.array([3, 0, 5, 1])
    received = []
    original = Student.embed_features
    monkeypatch.setattr(Student, "embed_features",
                        lambda self, features: received.append(features) or original(self, features))
    prepared = prepare_inputs(run, Step("text", rows))
    training_step(run, Step("text", rows), prepared)

    texts = [run.pools.sentences[i] for i in rows]
    assert prepared.sentences == texts
    # the reference: the HF tokenizer itself, padded to the longest, cut at student.max_seq_length=32
    expected = run.trainable.student.encoder.tokenizer(texts, padding=True, truncation=True, max_length=32,
                                                       return_tensors="pt")
    assert expected["input_ids"].shape == (4, 32)
    features = received[0]  # the two dropout views: the batch twice
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(features[key], torch.cat([expected[key], expected[key]])), key
    # what Student.embed (and encode, below the maximum length) tokenises today
    assert all(torch.equal(prepared.features[k], v) for k, v in run.trainable.student.tokenise(texts).items()
               if isinstance(v, torch.Tensor))


@pytest.mark.slow  # two training runs end to end, one with loader worker processes
def test_a_run_with_two_loader_workers_equals_one_without(tiny_bert_dir, tmp_path):
    """The whole trainer, real teacher cache read in forked workers: same weights and dev scores."""
    folders = {}
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        cfg = load_config(ROOT / "configs" / "kdmcse_offline.yaml", tiny_overrides(
            tiny_bert_dir, tmp_path, **{"train.output_dir": out, "train.loader_workers": workers}))
        folders[workers] = train(cfg, stsb_dev_evaluator(cfg))
    assert_same_weights(folders[0], folders[2])
    history = [json.loads((f.parent / "train_summary.json").read_text())["dev_history"] for f in folders.values()]
    assert history[0] == history[1] and len(history[0]) == 2



def test_a_run_resumes_with_another_worker_count(tmp_path):
    """Workers change no number of the run, so resuming with another count is allowed; other keys are not."""
    config = ROOT / "configs" / "kdmcse_offline.yaml"
    save_config(load_config(config, ["train.loader_workers=0"]), tmp_path / "config.yaml")
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    check_resumable(load_config(config, ["train.loader_workers=4"]), tmp_path)
    with pytest.raises(ValueError, match=r"different config \(train.lr\)"):
        check_resumable(load_config(config, ["train.loader_workers=4", "train.lr=1e-3"]), tmp_path)
