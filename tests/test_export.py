"""ONNX export of a saved student (distill/export.py, scripts/export.py) and the card's Speed section."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill import export
from distill.export import EXPORT_FILES, ExportError, export_model, load_onnx_student
from distill.model_card import set_card_section, speed_section
from distill.run_folder import LISTING, is_complete, seal

# Varied lengths (1 to ~60 tokens) so padding inside a batch is exercised.
SENTENCES = ["Hi.", "A man is playing a guitar.", "Two dogs run across the snowy field near a red barn.",
             "The stock market fell sharply on Tuesday after the central bank raised interest rates again, "
             "surprising analysts who had expected a pause until the end of the year."] * 3 + \
            [f"sentence number {i} about {'cats ' * (i % 7)}and dogs" for i in range(20)]
# int8 keeps the tiny random BERT's embeddings within this cosine distance (0.007 measured)
# (the real 3-layer MiniLM student: reports/student_speed.md measures the STS cost instead)
INT8_MAX_COSINE_DISTANCE = 0.02


@pytest.fixture(scope="module")
def exported(tiny_bert_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(tiny_bert_dir, folder)
    written = export_model(folder, ["onnx", "onnx-int8"])
    assert written == [folder / EXPORT_FILES["onnx"], folder / EXPORT_FILES["onnx-int8"]]
    return folder


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - (a * b).sum(axis=1)


def test_onnx_fp32_embeddings_equal_torch(exported, tiny_st):
    reference = tiny_st.encode(SENTENCES, batch_size=8)
    onnx = load_onnx_student(exported, EXPORT_FILES["onnx"], threads=1)
    for batch_size in (1, 8, 64):  # dynamic batch and length: padding differs per batch size
        embeddings = onnx.encode(SENTENCES, batch_size=batch_size)
        assert embeddings.shape == reference.shape
        assert cosine_distances(embeddings, reference).max() <= 1e-4


def test_onnx_int8_stays_within_the_stated_bound(exported, tiny_st):
    reference = tiny_st.encode(SENTENCES, batch_size=8)
    int8 = load_onnx_student(exported, EXPORT_FILES["onnx-int8"], threads=1).encode(SENTENCES, batch_size=8)
    distances = cosine_distances(int8, reference)
    assert distances.max() <= INT8_MAX_COSINE_DISTANCE
    assert distances.max() > 0  # it is quantised: not the float32 graph again
    assert (exported / EXPORT_FILES["onnx-int8"]).stat().st_size < (exported / EXPORT_FILES["onnx"]).stat().st_size


def test_files_follow_sentence_transformers_layout(exported):
    import onnx

    graph = onnx.load(str(exported / EXPORT_FILES["onnx"])).graph
    assert [node.name for node in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [node.name for node in graph.output] == ["last_hidden_state"]
    assert sorted(p.name for p in (exported / "onnx").iterdir()) == ["model.onnx", "model_qint8.onnx"]  # no temp left


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx", "onnxscript"])
def test_a_missing_extra_is_one_line_naming_it(missing, tiny_bert_dir, monkeypatch):
    real = export._importable
    monkeypatch.setattr(export, "_importable", lambda name: name != missing and real(name))
    with pytest.raises(ExportError, match=rf"^ONNX export needs {missing} \(the 'export' extra\): "
                                          r"pip install 'kdmcse-distill\[export\]'$"):
        export_model(tiny_bert_dir, ["onnx"])


def test_training_with_export_refuses_before_anything_runs(tmp_path, monkeypatch, capsys):
    from kdmcse_cli import train_student

    monkeypatch.setattr(export, "_importable", lambda name: name != "onnxruntime")
    code = train_student.main(["--config", "offline_default", "train.export=[onnx-int8]",
                               f"train.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "kdmcse-distill[export]" in err
    assert not (tmp_path / "run").exists()


def _placeholder_graph(encoder, path: Path) -> Path:
    path.write_bytes(b"not a graph")
    return path


def test_export_command_reseals_a_trainer_folder_and_writes_the_deploy_section(tiny_bert_dir, tmp_path, capsys,
                                                                                monkeypatch):
    """The command's folder and card work; the graphs themselves are the tests above and
    test_student_kinds.py's, so placeholders stand in for them here (a dynamo export costs seconds)."""
    from kdmcse_cli import export as export_cli

    monkeypatch.setattr(export, "export_fp32", _placeholder_graph)
    monkeypatch.setattr(export, "export_sentence_graph", _placeholder_graph)
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "README.md").write_text("---\ntags:\n- kdmcse-distill\n---\n\n# run\n\n## Results of this checkpoint\n\n"
                                      "r\n\n## Training\n\nt\n")
    seal(folder)  # as the trainer leaves model/, with its card
    assert export_cli.main([str(folder), "--formats", "onnx"]) == 0
    assert is_complete(folder) and EXPORT_FILES["onnx"] in json.loads((folder / LISTING).read_text())
    assert f"wrote {folder / EXPORT_FILES['onnx']}" in capsys.readouterr().out
    card = (folder / "README.md").read_text()
    assert card.count("## Deploy") == 1 and card.index("## Deploy") < card.index("## Results of this checkpoint")
    assert "`onnx/model.onnx` (float32)" in card and "sentence_model" not in card
    assert export_cli.main([str(folder), "--formats", "onnx-sentence"]) == 0  # a later export: replaced, not added
    card = (folder / "README.md").read_text()
    assert card.count("## Deploy") == 1 and "`onnx/model.onnx` (float32)" in card
    assert "`onnx/sentence_model.onnx` (float32): the whole model in one graph" in card
    assert is_complete(folder)
    capsys.readouterr()
    assert export_cli.main([str(tmp_path)]) == 2  # not a model folder: one line, exit 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} is not a saved SentenceTransformer")


def test_unknown_format_is_refused(tiny_bert_dir):
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(tiny_bert_dir, ["tensorrt"])


ROWS = [
    {"model": "teacher", "backend": "torch fp32", "sentences_per_second": 300.0, "ratio_to_teacher_fp32": 1.0,
     "p50_ms": 9.0, "sts_average": 78.87},
    {"model": "teacher", "backend": "ONNX int8", "sentences_per_second": 700.0, "ratio_to_teacher_fp32": 2.33,
     "p50_ms": 4.0, "sts_average": 78.5},
    {"model": "student", "backend": "torch fp32", "sentences_per_second": 690.0, "ratio_to_teacher_fp32": 2.3,
     "p50_ms": 5.0, "sts_average": 77.9},
    {"model": "student", "backend": "ONNX int8", "sentences_per_second": 1230.0, "ratio_to_teacher_fp32": 4.1,
     "p50_ms": 2.5, "sts_average": 77.4},
]


def test_speed_section_reads_the_fastest_student_row_against_the_teacher_at_the_same_backend():
    text = speed_section(ROWS, "2 CPU cores (AMD EPYC)")
    assert "**1.76x the teacher's throughput at the same backend (ONNX int8), 4.10x its torch fp32, at 98.1% " \
           "of its STS average** (2 CPU cores (AMD EPYC))." in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "sentences/s" not in line]
    assert table == ["| teacher | torch fp32 | 300 | 1.00x | 1.00x | 9.0 | 78.87 |",
                     "| teacher | ONNX int8 | 700 | 1.00x | 2.33x | 4.0 | 78.50 |",
                     "| student | torch fp32 | 690 | 2.30x | 2.30x | 5.0 | 77.90 |",
                     "| student | ONNX int8 | 1230 | 1.76x | 4.10x | 2.5 | 77.40 |"]


def test_card_section_goes_before_training_and_is_replaced_not_repeated(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\ntags: [x]\n---\n\n# run\n\n## Results\n\nr\n\n## Training\n\nt\n")
    set_card_section(tmp_path, "speed", "## Speed\n\nfirst")
    set_card_section(tmp_path, "speed", "## Speed\n\nsecond")
    text = card.read_text()
    assert text.count("## Speed") == 1 and "second" in text and "first" not in text
    assert text.index("## Results") < text.index("## Speed") < text.index("## Training")
    assert text.endswith("## Training\n\nt\n")

