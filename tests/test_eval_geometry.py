"""eval.geometry: alignment and uniformity against hand-computed values, and on a tiny STS-B file."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from eval.encode import encode
from eval.geometry import alignment, alignment_uniformity, uniformity

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_retrieval.py"


def test_alignment_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # squared distances 0, 2, 2
    assert alignment(x, y) == pytest.approx(4 / 3)
    assert alignment(x, y, alpha=1) == pytest.approx(2 * math.sqrt(2) / 3)
    assert alignment(5 * x, 0.1 * y) == pytest.approx(4 / 3)  # rows are L2-normalised first


def test_uniformity_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # pairs (1,2), (1,3), (2,3): squared distances 2, 4, 2
    expected = math.log((math.exp(-4) + math.exp(-8) + math.exp(-4)) / 3)
    assert uniformity(x) == pytest.approx(expected)
    assert uniformity(x, t=1) == pytest.approx(math.log((2 * math.exp(-2) + math.exp(-4)) / 3))


def test_identical_vectors_score_zero():
    x = torch.tensor([[0.6, 0.8, 0.0]] * 4)
    assert uniformity(x) == pytest.approx(0.0, abs=1e-7)
    y = torch.randn(5, 3)
    assert alignment(y, y) == 0.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="N >= 2"):
        uniformity(torch.ones(1, 3))
    with pytest.raises(ValueError, match="one shape"):
        alignment(torch.ones(2, 3), torch.ones(3, 3))


STSB_ROWS = [  # score, sentence1, sentence2
    (4.8, "a man plays the guitar", "a man is playing a guitar"),
    (4.0, "a dog runs fast", "the dog is running"),
    (1.2, "a man plays the guitar", "a cat eats food"),
    (3.9, "a red car", "a blue house"),
]


@pytest.fixture
def stsb_dir(tmp_path) -> Path:
    folder = tmp_path / "senteval" / "STS" / "STSBenchmark"
    folder.mkdir(parents=True)
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\t{a}\t{b}" for i, (score, a, b) in enumerate(STSB_ROWS)]
    (folder / "sts-test.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_alignment_uniformity_on_stsb(tiny_st, stsb_dir):
    result = alignment_uniformity(tiny_st, stsb_dir)
    vectors = lambda sentences: torch.from_numpy(encode(tiny_st, sentences, show_progress=False)).double()  # noqa: E731
    positives = STSB_ROWS[:2]  # gold >= 4.0
    distinct = list(dict.fromkeys(s for _, a, b in STSB_ROWS for s in (a, b)))
    assert (result.n_positive_pairs, result.n_sentences, result.split, result.pooler) == (2, 7, "test", "model")
    assert result.alignment == pytest.approx(alignment(vectors([a for _, a, _ in positives]), vectors([b for _, _, b in positives])))
    assert result.uniformity == pytest.approx(uniformity(vectors(distinct)))
    assert 0 <= result.alignment <= 4 and -8 <= result.uniformity <= 0
    assert result.to_dict()["positive_threshold"] == 4.0


def test_cli_geometry_only(tiny_bert_dir, stsb_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evaluate_retrieval_cli_geometry", SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "geometry.json"
    argv = ["--geometry", str(tiny_bert_dir), "--data-dir", str(stsb_dir), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 0
    assert "alignment (lower better)" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["geometry"][str(tiny_bert_dir)]["n_positive_pairs"] == 2
