"""Each mistake a user can make in a training config is one line on stderr and exit 2, no traceback.

Run in-process through ``scripts/train_student.py``'s ``main`` with a tiny student and teacher, so
the mistakes that only show once data or models are loaded are reached too.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kdmcse_cli import train_student

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tiny_args(tiny_bert_dir, tmp_path) -> list[str]:
    return ["--config", "offline_default", f"student.model={tiny_bert_dir}", "student.layers=1",
            f"teacher.text_model={tiny_bert_dir}", "data.limits={wiki1m: 48, coco2017_mini: 8}",
            "train.retrieval_holdout_images=2", "train.max_steps=2", "train.batch_size=8",
            f"train.output_dir={tmp_path / 'run'}", f"train.cache_root={tmp_path / 'cache'}"]


def one_line_error(capsys, args: list[str]) -> str:
    try:
        code = train_student.main(args)
    except SystemExit as exit_:  # a config that does not parse: argparse's exit, before anything loads
        code = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(("error: ", "config error: "))]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (code, err[-2000:])
    return errors[0]  # progress bars of what ran before it share stderr


@pytest.mark.parametrize("override, message", [
    ("train.lr=.inf", "train.lr must be a finite number, got inf"),
    ("train.lr=.nan", "train.lr must be a finite number, got nan"),
    ("data.limits={wiki1m: -5}", "limits must keep at least 1 item per source, got {'wiki1m': -5}"),
    ("teacher.max_seq_length=-3", "max_seq_length must be >= 1"),
    ("train.device=tpu0", "device 'tpu0' is not a torch device"),
    ("data.text_sources=[]", "no sources: name at least one in text_sources or image_sources"),
])
def test_a_bad_value_is_refused_before_anything_loads(override, message, capsys, tmp_path):
    args = ["--config", "offline_default", override, "data.image_sources=[]" if "sources" in override else
            "train.max_steps=1", f"train.output_dir={tmp_path / 'run'}"]
    assert message in one_line_error(capsys, args)
    assert not (tmp_path / "run").exists()


def test_a_misspelled_key_names_the_key_it_most_likely_meant(capsys, tmp_path):
    line = one_line_error(capsys, ["--config", "offline_default", "train.lrr=3e-4", "student.layrs=2"])
    assert "unknown key(s) student.layrs (did you mean student.layers?)" in line  # the first section that has one


def test_the_cache_script_refuses_a_misspelled_section_of_its_config(capsys, tmp_path):
    from kdmcse_cli import cache_teacher

    config = tmp_path / "cache.yaml"
    config.write_text("teachr:\n  backend: composite\ncache_root: cache\n")
    assert cache_teacher.main(["--config", str(config), "--cache-root", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) teachr (did you mean teacher?)" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_more_student_layers_than_the_model_has(tiny_args, capsys):
    assert one_line_error(capsys, tiny_args + ["student.layers=7"]).endswith(
        "student.layers=7: the model has 2 layers; choose 1 to 2")


def test_a_holdout_larger_than_the_image_set(tiny_args, capsys, tmp_path):
    assert one_line_error(capsys, tiny_args + ["train.retrieval_holdout_images=8"]).endswith(
        "train.retrieval_holdout_images=8: cannot hold out 8 of 8 images (at least one must stay for training); "
        "choose 0 to 7")
    assert not (tmp_path / "run").exists()  # a run that failed at start leaves no folder behind


def test_a_source_smaller_than_one_batch(tiny_bert_dir, tmp_path, capsys):
    sentences = tmp_path / "mine.txt"
    sentences.write_text("one sentence\nanother sentence\na third sentence\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"""
student: {{model: {tiny_bert_dir}, layers: 1}}
teacher: {{text_model: {tiny_bert_dir}}}
data:
  text_sources: [{{name: mine, path: {sentences}}}]
  image_sources: []
loss: {{text: none, multimodal: none, regression_weight: 1.0}}
train: {{output_dir: {tmp_path / 'run'}, cache_root: {tmp_path / 'cache'}, batch_size: 8, max_steps: 2}}
""")
    assert one_line_error(capsys, ["--config", str(config)]).endswith(
        "train.batch_size=8 is more than any pool holds (3 text rows, 0 image-caption pairs): no complete batch; "
        "lower train.batch_size or add rows")


@pytest.mark.slow  # a training run end to end builds the cache first
def test_a_cache_manifest_that_is_not_json(tiny_args, tmp_path, capsys):
    assert train_student.main(tiny_args) == 0  # builds the cache
    capsys.readouterr()
    (manifest,) = (tmp_path / "cache").glob("*/manifest.json")
    manifest.write_text("{not json")
    line = one_line_error(capsys, tiny_args[:-2] + [f"train.output_dir={tmp_path / 'run2'}",
                                                    f"train.cache_root={tmp_path / 'cache'}"])
    assert f"{manifest} is not valid JSON" in line


def test_eval_data_dir_pointing_at_senteval_itself_names_its_parent(tiny_args, tmp_path, capsys):
    senteval = tmp_path / "data" / "senteval"
    (senteval / "STS").mkdir(parents=True)
    line = one_line_error(capsys, tiny_args + [f"eval_data_dir={senteval}"])
    assert line == (f"error: {senteval}: this is SentEval's folder itself; pass the folder that holds senteval/ "
                    f"(eval_data_dir={tmp_path / 'data'})")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("student.model=offline:all-MiniLM-L6", "student: model=offline:all-MiniLM-L6 is no offline model; did you "
                                            "mean offline:all-MiniLM-L6-v2?"),
    ("teacher.image_model=offline:effnet", "teacher: image_model=offline:effnet is no offline model; did you mean "
                                           "offline:efficientnet-lite0?"),
])
def test_a_misspelt_offline_model_is_named_before_anything_loads(override, message, capsys, tmp_path):
    assert one_line_error(capsys, ["--config", "offline_default", override,
                                   f"train.output_dir={tmp_path / 'run'}"]) == f"config error: {message}"
