"""Student kinds under one key (``student.kind``): the static-embedding student next to the transformer
cut, trained by the same trainer; the whole-sentence ONNX graph; ``precision: auto``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer

from distill import static_student
from distill.config import ConfigError, StudentConfig, load_config
from distill.export import EXPORT_FILES, ExportError, encode_with_sentence_graph, export_model, formats_of
from distill.student import build_encoder
from distill.trainer import train, with_resolved_precision
from eval.sts import stsb_dev_evaluator
from kdmcse_base import machine
from kdmcse_base.process_group import DistEnv
from teacher_cache.towers.config import TeacherConfig
from train_testkit import ROOT, tiny_overrides

SENTENCES = ["Hi.", "A man is playing a guitar.", "Two dogs run across the snowy field near a red barn.",
             "The stock market fell sharply on Tuesday after the central bank raised interest rates again."]


def static_overrides(tiny_bert_dir: Path, tmp_path: Path, **extra) -> list[str]:
    return tiny_overrides(tiny_bert_dir, tmp_path, **{
        "student.kind": "static", "student.layers": "null", "train.length_grouped": "false", "student.static_dim": 8,
        "student.init_cache": str(tmp_path / "student_init"), "loss.text": "none", "loss.multimodal": "none",
        "loss.soft_target_weight": 0, "loss.false_negative_filter": "none", **extra})


def test_static_student_is_the_model2vec_distillation_as_a_sentence_transformer(tiny_static_dir):
    model = SentenceTransformer(str(tiny_static_dir), device="cpu")
    assert [type(m).__name__ for m in model] == ["StaticEmbedding", "Normalize"]
    assert model.get_embedding_dimension() == 8
    vectors = model.encode(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert len({tuple(v.round(4)) for v in vectors}) == len(SENTENCES)  # distinct sentences, distinct vectors


def test_the_static_initialisation_is_built_once_and_reused(tiny_bert_dir, tiny_static_dir, monkeypatch):
    cfg = StudentConfig(kind="static", model=str(tiny_bert_dir), static_dim=8,
                        init_cache=str(tiny_static_dir.parent))
    monkeypatch.setattr(static_student, "distil_into", lambda *a: pytest.fail("distilled a second time"))
    assert static_student.static_init_folder(cfg) == tiny_static_dir
    encoder = build_encoder(cfg)
    assert encoder.get_embedding_dimension() == 8
    other = StudentConfig(kind="static", model=str(tiny_bert_dir), static_dim=4, init_cache=cfg.init_cache)
    assert static_student.static_init_folder(other) != tiny_static_dir  # another dimension, another folder


@pytest.mark.slow  # training end to end
def test_static_student_trains_with_the_same_trainer_and_says_its_kind(tiny_bert_dir, tiny_static_dir, tmp_path):
    init_cache = tmp_path / "student_init"
    shutil.copytree(tiny_static_dir, init_cache / tiny_static_dir.name)  # the distillation is the fixture's
    cfg = load_config(ROOT / "configs" / "offline_default.yaml", static_overrides(tiny_bert_dir, tmp_path))
    model_dir = train(cfg, stsb_dev_evaluator(cfg))
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert [type(m).__name__ for m in model] == ["StaticEmbedding", "Normalize"]
    start = SentenceTransformer(str(tiny_static_dir), device="cpu")
    trained = model[0].embedding.weight.detach()
    assert trained.shape == start[0].embedding.weight.shape
    summary = json.loads((model_dir.parent / "train_summary.json").read_text())
    if summary["best_step"] > 0:  # the best checkpoint is a trained one: its vectors moved
        assert not torch.equal(trained, start[0].embedding.weight.detach())
    saved = yaml.safe_load((model_dir.parent / "config.yaml").read_text())
    assert saved["student"]["kind"] == "static"
    card = (model_dir / "README.md").read_text()
    assert "static-embedding model" in card and "inputs of any length are read whole" in card
    assert "student_frontier.md" in card


@pytest.mark.parametrize("overrides, key", [
    (["student.kind=static"], "student.layers"),  # offline_default cuts 3 layers; a static student has none
    (["student.kind=static", "student.layers=null", "train.export=[onnx]"], "onnx-sentence"),
    (["student.kind=static", "student.layers=null"], "train.length_grouped=false"),  # offline_default groups
    (["student.kind=dense"], "student.kind"),
])
def test_student_kind_mistakes_are_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(ROOT / "configs" / "offline_default.yaml", overrides)


def test_a_missing_vocabulary_file_names_the_key(tiny_bert_dir, tmp_path):
    cfg = StudentConfig(kind="static", model=str(tiny_bert_dir), static_vocabulary=str(tmp_path / "words.txt"),
                        init_cache=str(tmp_path))
    with pytest.raises(ConfigError, match="student.static_vocabulary"):
        build_encoder(cfg)


@pytest.mark.parametrize("kind", ["transformer", "static"])
def test_the_whole_sentence_graph_matches_encode(kind, tiny_bert_dir, tiny_static_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir if kind == "transformer" else tiny_static_dir, folder)
    formats = ["onnx-sentence", "onnx-sentence-int8"] if kind == "transformer" else ["onnx-sentence"]
    assert export_model(folder, formats) == [folder / EXPORT_FILES[f] for f in formats]
    expected = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES * 3)
    np.testing.assert_allclose(encode_with_sentence_graph(folder, SENTENCES * 3), expected, atol=1e-5, rtol=0)
    if kind == "transformer":  # int8 inside the same graph stays close (the tiny random BERT: < 0.02 cosine)
        quantised = encode_with_sentence_graph(folder, SENTENCES, EXPORT_FILES["onnx-sentence-int8"])
        assert (quantised * expected[:len(SENTENCES)]).sum(1).min() > 0.98


def test_a_static_model_exports_only_its_whole_graph(tiny_static_dir, tiny_bert_dir, tmp_path):
    assert formats_of(tiny_static_dir) == ["onnx-sentence"]
    assert formats_of(tiny_bert_dir) == list(EXPORT_FILES)
    folder = tmp_path / "model"
    shutil.copytree(tiny_static_dir, folder)
    with pytest.raises(ExportError, match="StaticEmbedding.*onnx-sentence"):
        export_model(folder, ["onnx"])
    assert not (folder / "onnx" / "model.onnx").exists()


@pytest.mark.parametrize("flags, expected", [("fpu sse avx2 fma", "fp32"),
                                             ("fpu avx512f avx512_bf16 amx_bf16", "bf16")])
def test_precision_auto_is_bf16_only_where_the_cpu_computes_it(flags, expected, monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo_field", lambda name: flags if name == "flags" else "Test CPU")
    assert machine.resolve_precision("auto", "cpu") == expected
    assert machine.resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice stands
    assert machine.emulates_bf16("cpu") == (expected == "fp32")
    assert not machine.emulates_bf16("meta")  # only CPUs and CUDA devices are judged
    teacher = TeacherConfig()
    assert teacher.precision_for("cpu", "text") == expected  # the cache's auto follows the same rule
    assert teacher.precision_for("cpu", "image") == "fp32"


@pytest.mark.parametrize("flags, warned", [("fpu avx2", True), ("fpu avx512f avx512_bf16", False)])
def test_an_explicit_bf16_says_when_the_cpu_emulates_it(flags, warned, monkeypatch, capsys):
    monkeypatch.setattr(machine, "_cpuinfo_field", lambda name: flags if name == "flags" else "Test CPU")
    cfg = load_config(ROOT / "configs" / "offline_default.yaml", ["train.precision=bf16"])
    assert with_resolved_precision(cfg, DistEnv(0, 1, torch.device("cpu"))) == cfg  # the choice stands
    out = capsys.readouterr().out
    assert ("bf16 is emulated here (Test CPU has no avx512_bf16 or AMX), usually slower than fp32" in out) == warned
    with_resolved_precision(cfg, DistEnv(1, 2, torch.device("cpu")))
    assert capsys.readouterr().out == ""  # said once, by the main process


@pytest.mark.slow  # training end to end
def test_a_run_records_the_precision_auto_resolved_to(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(machine, "_cpuinfo_field", lambda name: "fpu avx2" if name == "flags" else "Test CPU")
    cfg = load_config(ROOT / "configs" / "offline_default.yaml",
                      tiny_overrides(tiny_bert_dir, tmp_path, **{"train.precision": "auto", "train.max_steps": 2}))
    model_dir = train(cfg, stsb_dev_evaluator(cfg))
    assert "train.precision: auto -> fp32 (Test CPU has no avx512_bf16 or AMX)" in capsys.readouterr().out
    assert yaml.safe_load((model_dir.parent / "config.yaml").read_text())["train"]["precision"] == "fp32"
    assert "precision fp32" in (model_dir / "README.md").read_text()
