"""docs/own_data.md's example (the README's "Your own data" points there), run as written with tiny models.

The data script and the run config are read out of docs/own_data.md, so the page cannot drift from
what works. Only the model names (tiny random BERT for the student and the teacher's text tower,
the shipped EfficientNet-Lite0 for its image tower) and the run length are overridden.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from teacher_cache import TeacherCache

ROOT = Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
    """The fenced block that follows ``<!-- own-data-example: name -->`` in docs/own_data.md."""
    match = re.search(rf"<!-- own-data-example: {re.escape(name)} -->\n```\w*\n(.*?)```",
                      (ROOT / "docs" / "own_data.md").read_text(), re.DOTALL)
    assert match, f"docs/own_data.md has no own-data-example block {name}"
    return match.group(1)


def train_script():
    spec = importlib.util.spec_from_file_location("train_student_script", ROOT / "scripts" / "train_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def example_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("make_my_data.py"), "make_my_data.py", "exec"), {})
    (tmp_path / "my_run.yaml").write_text(readme_block("my_run.yaml"))
    return tmp_path


def tiny_models(tiny_bert_dir: Path) -> list[str]:
    return [f"student.model={tiny_bert_dir}", "student.layers=1", "student.grounding_dim=16",
            f"teacher.text_model={tiny_bert_dir}", "teacher.image_model=offline:efficientnet-lite0"]


@pytest.mark.slow  # the documented example trained end to end
def test_readme_own_data_example_trains_and_loads(example_dir, tiny_bert_dir, tiny_senteval_dir):
    tiny = [*tiny_models(tiny_bert_dir), "train.max_steps=4", "train.eval_every=2", "train.eval_batch_size=512"]
    code = train_script().main(["--config", "my_run.yaml", "--eval-data-dir", str(tiny_senteval_dir), *tiny])
    assert code == 0

    run = example_dir / "runs" / "my_run"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 4 and [step for step, _ in summary["dev_history"]] == [2, 4]
    (cache,) = (example_dir / "cache" / "teacher").glob("*/manifest.json")
    opened = TeacherCache.open(cache.parent)
    text_ids = list(opened.text_ids)
    assert text_ids[:6] == [f"sentences:{i}" for i in range(6)]
    assert text_ids[6:8] == ["photos:red.jpg:0", "photos:red.jpg:1"] and len(text_ids) == 6 + 4 * 2
    assert opened.image_ids.take(opened.caption_image_rows[6:8]) == ["photos:red.jpg", "photos:red.jpg"]
    assert list(opened.image_ids) == ["photos:red.jpg", "photos:green.jpg", "photos:blue.jpg", "photos:yellow.jpg"]

    model = SentenceTransformer(str(run / "model"), device="cpu")
    assert model.encode(["a red square"]).shape == (1, 32)

    # the shipped recipe on the same sources and steps: the same run, so the same STS-B dev
    shipped = ["--config", str(ROOT / "configs" / "offline_default.yaml"), "--eval-data-dir", str(tiny_senteval_dir),
               "data.text_sources=[{path: my_data/sentences.txt}]", "data.image_sources=[{images: my_data/photos, "
               "captions: my_data/photos/captions.jsonl, image_column: file, caption_column: captions}]",
               "train.batch_size=4", "train.output_dir=runs/shipped", *tiny]
    assert train_script().main(shipped) == 0
    recipe = json.loads((example_dir / "runs" / "shipped" / "train_summary.json").read_text())
    assert abs(recipe["best_stsb_dev"] - summary["best_stsb_dev"]) <= 0.5


def test_an_edited_sentence_gives_a_new_cache(example_dir, tiny_bert_dir):
    from distill.config import load_config
    from teacher_cache import collect_rows, dataset_fingerprint

    cfg = load_config("my_run.yaml")
    before = dataset_fingerprint(collect_rows(cfg.data, None))
    sentences = example_dir / "my_data" / "sentences.txt"
    sentences.write_text(sentences.read_text().replace("guitar", "violin"))
    assert dataset_fingerprint(collect_rows(cfg.data, None)) != before


def test_a_data_mistake_exits_2_with_one_line(example_dir, tiny_bert_dir, tiny_senteval_dir, capsys):
    with (example_dir / "my_data" / "photos" / "captions.jsonl").open("a") as captions:
        captions.write('{"file": "grey.jpg"}\n')
    code = train_script().main(["--config", "my_run.yaml", "--eval-data-dir", str(tiny_senteval_dir),
                                *tiny_models(tiny_bert_dir)])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the teacher's loading bars
    assert code == 2
    assert last_line == ("error: my_data/photos/captions.jsonl:5: no key 'captions' (keys: ['file']); "
                   "name the right column in the source's config")


def test_the_example_is_the_shipped_recipe_on_its_own_data(example_dir):
    """Apart from its data, name, folder and budget, my_run.yaml resolves to configs/offline_default.yaml,
    so it trains the project's best recipe (the same sources and steps give the same run)."""
    from dataclasses import replace

    from distill.config import load_config

    mine = load_config("my_run.yaml")
    shipped = load_config(ROOT / "configs" / "offline_default.yaml")
    budget = dict(output_dir=mine.train.output_dir, batch_size=4, max_steps=20, eval_every=10)
    assert mine == replace(shipped, name="my_run", data=mine.data, train=replace(shipped.train, **budget))
    assert mine.train.output_dir == "runs/my_run" and [s.name for s in mine.data.text_sources] == ["sentences"]


@pytest.mark.slow  # the documented example trained end to end
def test_the_python_entry_point_example_trains(example_dir, tiny_bert_dir, tiny_senteval_dir, monkeypatch, capsys):
    """README's from_python.py block as written; only the models, budget and STS-B dev folder are swapped."""
    import kdmcse
    from distill.config import load_config

    tiny = [*tiny_models(tiny_bert_dir), "train.max_steps=2", "train.eval_every=2", "train.eval_batch_size=512",
            f"eval_data_dir={tiny_senteval_dir}"]
    monkeypatch.setattr(kdmcse, "load_config", lambda path, overrides: load_config(path, [*overrides, *tiny]))
    exec(compile(readme_block("from_python.py"), "from_python.py", "exec"), {})
    assert capsys.readouterr().out.strip().endswith("(1, 32)")
    assert json.loads((example_dir / "runs" / "my_run" / "train_summary.json").read_text())["steps"] == 2
