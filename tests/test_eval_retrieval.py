"""eval.retrieval: recalls against hand-made score matrices, re-ranking, a run directory; the CLI."""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

import eval.retrieval as retrieval
from distill.losses.mmref import build_references
from distill.student import GroundingHeads
from eval.encode import encode
from teacher_cache.rows import StringColumn
from eval.retrieval import (
    RetrievalRunError,
    evaluate_retrieval,
    evaluate_run_retrieval,
    reference_similarity,
    retrieval_metrics,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_retrieval.py"
WORDS = "a man woman dog cat plays guitar runs fast slowly red blue big small car house eats food".split()
STUDENT_DIM, GROUNDING_DIM, TEACHER_TEXT_DIM, TEACHER_IMAGE_DIM = 32, 8, 10, 12


def _column(n_rows: int, own_rows: list[int], own_positions: list[int]) -> np.ndarray:
    """Scores of one gallery column: ``own_rows`` land at ``own_positions`` of the descending order,
    the other rows fill the remaining positions in row order; distinct values, no ties."""
    order = [None] * n_rows
    for row, position in zip(own_rows, own_positions):
        order[position] = row
    others = iter(r for r in range(n_rows) if r not in own_rows)
    order = [row if row is not None else next(others) for row in order]
    scores = np.empty(n_rows)
    scores[order] = np.arange(n_rows, 0, -1)
    return scores


# --- retrieval_metrics -----------------------------------------------------------------------------


def test_text_to_image_recall_from_known_ranks():
    # 12 captions, caption q belongs to image q; own image at these 0-based ranks of each row.
    ranks = [0, 0, 0, 1, 2, 4, 5, 7, 9, 10, 11, 3]
    sim = np.stack([_column(12, [q], [rank]) for q, rank in enumerate(ranks)])  # rows built like columns
    result = retrieval_metrics(sim, list(range(12)))
    # R@1: ranks < 1 -> 3 of 12; R@5: ranks 0,0,0,1,2,4,3 -> 7 of 12; R@10: all but 10, 11 -> 10 of 12.
    assert (result.t2i_r1, result.t2i_r5, result.t2i_r10) == (25.0, 58.33, 83.33)
    assert result.n_captions == 12 and result.n_images == 12


def test_image_to_text_counts_an_image_found_when_any_caption_is_in_the_top_k():
    index = [0] * 5 + [1] * 3 + [2] * 3 + [3] * 3  # 14 captions, 4 images
    members = {m: [q for q, i in enumerate(index) if i == m] for m in range(4)}
    positions = {
        0: [7, 0, 12, 13, 9],  # its 2nd caption is the best of all 14: found at k=1 (its 1st is 8th)
        1: [3, 8, 11],         # 3 other captions ahead of the best own one: found at 5 and 10
        2: [6, 9, 10],         # 6 ahead: found at 10 only
        3: [11, 12, 13],       # 11 ahead: never found
    }
    sim = np.stack([_column(14, members[m], positions[m]) for m in range(4)], axis=1)
    result = retrieval_metrics(sim, index)
    assert (result.i2t_r1, result.i2t_r5, result.i2t_r10) == (25.0, 50.0, 75.0)


def test_perfect_scores_give_rsum_600():
    index = np.repeat(np.arange(20), 2)
    sim = np.zeros((40, 20))
    sim[np.arange(40), index] = 1.0
    result = retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(index))
    assert result.rsum == 600.0
    assert {result.i2t_r1, result.i2t_r5, result.i2t_r10, result.t2i_r1, result.t2i_r5, result.t2i_r10} == {100.0}


def test_ties_are_ranked_pessimistically():
    result = retrieval_metrics(np.ones((6, 3)), [0, 0, 1, 1, 2, 2])
    # t2i: both other images tie with the right one -> rank 2; i2t: the 4 other captions tie -> rank 4.
    assert (result.t2i_r1, result.t2i_r5, result.i2t_r1, result.i2t_r5) == (0.0, 100.0, 0.0, 100.0)


def test_rsum_is_the_sum_of_the_six_recalls():
    rng = np.random.default_rng(0)
    result = retrieval_metrics(rng.normal(size=(30, 15)), np.arange(30) % 15)
    six = [result.i2t_r1, result.i2t_r5, result.i2t_r10, result.t2i_r1, result.t2i_r5, result.t2i_r10]
    assert result.rsum == pytest.approx(sum(six), abs=1e-9)
    assert result.to_dict()["rsum"] == result.rsum and result.rerank_beta is None


@pytest.mark.parametrize("sim, index, message", [
    (np.full((2, 2), np.nan), [0, 1], "NaN"),
    (np.ones((3, 3)), [0, 0, 1], "no caption"),
    (np.ones((3, 2)), [0, 1], r"\[Q, M\]"),
    (np.ones((2, 2)), [0, 2], "caption_image_index"),
])
def test_bad_inputs_are_refused(sim, index, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sim, index)


# --- evaluate_retrieval with tiny random modules ---------------------------------------------------


def _heads(seed: int = 0) -> GroundingHeads:
    torch.manual_seed(seed)
    layer = lambda d_in: nn.Sequential(nn.Linear(d_in, GROUNDING_DIM), nn.Tanh())  # noqa: E731
    return GroundingHeads(layer(STUDENT_DIM), layer(TEACHER_IMAGE_DIM), layer(TEACHER_TEXT_DIM)).eval()


@pytest.fixture(scope="module")
def gallery():
    """12 images with 2-3 random captions each, and random teacher vectors for both."""
    rng = random.Random(7)
    index = [m for m in range(12) for _ in range(2 + m % 2)]
    captions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + f" {q}" for q in range(len(index))]
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(12, TEACHER_IMAGE_DIM, generator=generator)
    teacher_captions = torch.randn(len(index), TEACHER_TEXT_DIM, generator=generator)
    return captions, np.array(index), images, teacher_captions


def test_evaluate_retrieval_scores_the_grounding_space(tiny_st, gallery):
    captions, index, images, _ = gallery
    heads = _heads()
    result = evaluate_retrieval(tiny_st, heads, images, captions, index)
    with torch.no_grad():
        text = heads.ground(torch.from_numpy(encode(tiny_st, captions, show_progress=False)))
        expected = retrieval_metrics(text @ heads.adapt_images(images).T, index)
    assert result == expected
    values = [result.i2t_r1, result.i2t_r5, result.i2t_r10, result.t2i_r1, result.t2i_r5, result.t2i_r10]
    assert all(np.isfinite(values)) and all(0 <= v <= 100 for v in values)
    assert (result.n_images, result.n_captions) == (12, len(captions))


def test_rerank_with_beta_zero_equals_no_rerank(tiny_st, gallery):
    captions, index, images, teacher_captions = gallery
    plain = evaluate_retrieval(tiny_st, _heads(), images, captions, index)
    reranked = evaluate_retrieval(tiny_st, _heads(), images, captions, index, teacher_captions=teacher_captions,
                                  rerank_beta=0.0)
    assert (reranked.rerank_beta, reranked.alpha, reranked.leave_query_out) == (0.0, 0.5, True)
    metrics = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("rerank_beta", "alpha", "leave_query_out")}  # noqa: E731
    assert metrics(reranked) == metrics(plain)


def test_rerank_changes_scores_and_checks_its_inputs(tiny_st, gallery):
    captions, index, images, teacher_captions = gallery
    heads = _heads()
    result = evaluate_retrieval(tiny_st, heads, images, captions, index, teacher_captions=teacher_captions,
                                rerank_beta=1.0, alpha=0.0)
    # beta 1, alpha 0: a query is scored against the mean of the *other* captions of each image only
    with torch.no_grad():
        text = heads.ground(torch.from_numpy(encode(tiny_st, captions, show_progress=False)))
        adapted = heads.adapt_captions(teacher_captions)
    scores = torch.empty(len(captions), 12)
    for q in range(len(captions)):
        for m in range(12):
            others = [c for c in range(len(captions)) if index[c] == m and c != q]
            scores[q, m] = text[q] @ torch.nn.functional.normalize(adapted[others].mean(0), dim=0)
    expected = retrieval_metrics(scores, index)
    assert result.to_dict() | {"rerank_beta": None, "alpha": None, "leave_query_out": None} == expected.to_dict() | {
        "rerank_beta": None, "alpha": None, "leave_query_out": None}
    plain = evaluate_retrieval(tiny_st, heads, images, captions, index)
    assert (result.i2t_r1, result.t2i_r1, result.rsum) != (plain.i2t_r1, plain.t2i_r1, plain.rsum)
    with pytest.raises(ValueError, match="teacher_captions"):
        evaluate_retrieval(tiny_st, _heads(), images, captions, index, rerank_beta=0.5)
    with pytest.raises(ValueError, match="rerank_beta"):
        evaluate_retrieval(tiny_st, _heads(), images, captions, index, teacher_captions=teacher_captions, rerank_beta=1.5)


def test_reference_similarity_matches_a_brute_force_loop():
    generator = torch.Generator().manual_seed(3)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)  # noqa: E731
    index = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])  # image 2 has a single caption
    queries, images, captions = unit(8, 5), unit(4, 5), unit(8, 5)
    alpha = 0.3
    for leave_out in (False, True):
        expected = torch.empty(8, 4)
        for q in range(8):
            for m in range(4):
                members = [c for c in range(8) if index[c] == m and not (leave_out and c == q)]
                mean = captions[members].mean(0) if members else torch.zeros(5)
                reference = images[m] if not members else torch.nn.functional.normalize(alpha * images[m] + (1 - alpha) * mean, dim=0)
                expected[q, m] = queries[q] @ reference
        ours = reference_similarity(queries, images, captions, index, alpha, leave_query_out=leave_out)
        torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    full = queries @ build_references(images, captions, alpha, caption_image_index=index).T
    torch.testing.assert_close(reference_similarity(queries, images, captions, index, alpha, False), full)


# --- a run directory -------------------------------------------------------------------------------


class _FakeCache:
    """Stands in for TeacherCache: two plain sentences, then 3 Flickr30k captions for each of 6 images
    (any image source: the cache records each caption's image); a fixed random vector per row."""

    def __init__(self, n_images: int = 6):
        generator = torch.Generator().manual_seed(5)
        rng = random.Random(1)
        self.image_ids = [f"flickr30k:{100 + i}" for i in range(n_images)]
        self.text_ids = ["wiki1m:0", "wiki1m:1"] + [f"flickr30k:train:{i}:{k}" for i in range(n_images) for k in (1, 2, 3)]
        self.caption_image_rows = np.array([-1, -1] + [image for image in range(n_images) for _ in range(3)])
        self.texts = StringColumn(pa.chunked_array([[" ".join(rng.choice(WORDS) for _ in range(5))
                                                     for _ in self.text_ids]]))
        self.image_vectors = torch.randn(len(self.image_ids), TEACHER_IMAGE_DIM, generator=generator)
        self.text_vectors = torch.randn(len(self.text_ids), TEACHER_TEXT_DIM, generator=generator)

    def image_index(self, ids):
        return np.array([self.image_ids.index(i) for i in ids])

    def image(self, idx, device="cpu"):
        return self.image_vectors[torch.as_tensor(idx)].to(device)

    def text(self, idx, device="cpu"):
        return self.text_vectors[torch.as_tensor(idx)].to(device)


@pytest.fixture
def run_dir(tmp_path, tiny_st, monkeypatch):
    """A finished run: tiny model + heads, config, summary holding out 3 of 6 images; cache faked."""
    data_dir, run = tmp_path / "data", tmp_path / "run"
    data_dir.mkdir()
    tiny_st.save(str(run / "model"))
    _heads().save(run / "grounding_heads.pt")  # in the run folder, beside model/
    (run / "config.yaml").write_text(f"name: tiny\ndata_dir: {data_dir}\ntrain:\n  cache_root: {tmp_path / 'cache'}\n")
    heldout = ["flickr30k:104", "flickr30k:101", "flickr30k:103"]
    (run / "train_summary.json").write_text(json.dumps({"heldout_image_ids": heldout}))
    cache = _FakeCache()
    monkeypatch.setattr(retrieval, "open_run_cache", lambda *args, **kwargs: cache)
    return run, heldout, cache


def test_evaluate_run_retrieval_uses_the_heldout_images_and_their_captions(run_dir, tiny_st):
    run, heldout, cache = run_dir
    loaded = retrieval.load_retrieval_run(run, with_teacher_captions=True, device="cpu")
    assert loaded.image_ids == heldout
    # captions come in cache order (images 101, 103, 104), each mapped to its image's gallery column
    caption_rows = [5, 6, 7, 11, 12, 13, 14, 15, 16]
    assert loaded.captions == [cache.texts[row] for row in caption_rows]
    assert loaded.caption_image_index.tolist() == [1, 1, 1, 2, 2, 2, 0, 0, 0]
    torch.testing.assert_close(loaded.teacher_images, cache.image_vectors[[4, 1, 3]])
    torch.testing.assert_close(loaded.teacher_captions, cache.text_vectors[caption_rows])

    for beta in (None, 0.5):
        ours = evaluate_run_retrieval(run, rerank_beta=beta, device="cpu")
        direct = evaluate_retrieval(tiny_st, _heads(), cache.image_vectors[[4, 1, 3]], loaded.captions,
                                    loaded.caption_image_index, teacher_captions=loaded.teacher_captions,
                                    rerank_beta=beta)
        assert ours == direct


@pytest.mark.parametrize("breakage, message", [
    ("no_model", "model/ folder"),
    ("no_heads", "grounding_heads.pt is missing"),
    ("no_summary", "train_summary.json is missing"),
    ("no_heldout", "train.retrieval_holdout_images"),
])
def test_incomplete_runs_say_what_is_missing(run_dir, breakage, message):
    run = run_dir[0]
    if breakage == "no_model":
        import shutil
        shutil.rmtree(run / "model")
    elif breakage == "no_heads":
        (run / "grounding_heads.pt").unlink()
    elif breakage == "no_summary":
        (run / "train_summary.json").unlink()
    else:
        (run / "train_summary.json").write_text(json.dumps({"heldout_image_ids": []}))
    with pytest.raises(RetrievalRunError, match=message):
        evaluate_run_retrieval(run, device="cpu")


# --- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("evaluate_retrieval_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_help_and_argument_checks(cli, capsys):
    with pytest.raises(SystemExit) as done:
        cli.parse_args(["--help"])
    assert done.value.code == 0 and "--rerank-beta" in capsys.readouterr().out
    for argv in ([], ["--geometry", "m", "--rerank-beta", "0.5"], ["--run", "r", "--rerank-beta", "2"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)


def test_cli_writes_json_and_markdown(run_dir, cli, tmp_path, capsys):
    run = run_dir[0]
    out = tmp_path / "results" / "tiny.json"
    assert cli.main(["--run", str(run), "--rerank-beta", "0.5", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| run | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | rSum |" in printed
    assert "MMRef re-rank (beta=0.5, alpha=0.5)" in printed
    payload = json.loads(out.read_text())
    assert set(payload["retrieval"]) == {"run", "run + MMRef re-rank (beta=0.5, alpha=0.5)"}
    assert out.with_suffix(".md").read_text().count("| run") == 3  # header + 2 rows


def test_cli_reports_an_incomplete_run(run_dir, cli, tmp_path, capsys):
    run = run_dir[0]
    (run / "grounding_heads.pt").unlink()
    assert cli.main(["--run", str(run), "--out", str(tmp_path / "x.json")]) == 2
    assert "grounding_heads.pt is missing" in capsys.readouterr().err
