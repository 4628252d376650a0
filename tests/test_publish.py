"""A trained model/ is publishable: its card names a licence and no local path, training-only files
stay behind, scripts/publish.py checks it and (dry run, or a stand-in hub client) uploads it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import load_config
from distill.model_card import card_header_of, record_scores
from eval.report import render_markdown
from distill.trainer import train
from eval.sts import stsb_dev_evaluator
from kdmcse_cli import publish

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("publish")
    overrides = [f"student.model={tiny_bert_dir}", "student.layers=1", f"teacher.text_model={tiny_bert_dir}",
                 "data.limits={wiki1m: 48, coco2017_mini: 8}", "train.retrieval_holdout_images=2",
                 "train.max_steps=2", "train.eval_every=2", "train.batch_size=8", "train.eval_batch_size=512",
                 f"train.output_dir={tmp / 'run'}", f"train.cache_root={tmp / 'cache'}"]
    cfg = load_config(ROOT / "configs" / "offline_default.yaml", overrides)
    return train(cfg, stsb_dev_evaluator(cfg))


def test_the_card_names_no_local_path_and_the_heads_stay_in_the_run(trained, tiny_bert_dir):
    card = (trained / "README.md").read_text()
    assert str(trained.parent) not in card and str(tiny_bert_dir) not in card
    assert f"<local>/{tiny_bert_dir.name}" in card and 'SentenceTransformer("path/to/this/folder")' in card
    assert card_header_of(card).get("license") is None  # the tiny base model's folder names none
    assert not (trained / "grounding_heads.pt").exists()
    # regression alone reads no grounding space, so the objective trained no grounding heads to keep
    assert not (trained.parent / "grounding_heads.pt").exists()


def test_publish_refuses_a_card_without_a_licence_then_lists_what_goes_up(trained, tmp_path, capsys):
    assert publish.main([str(trained), "--repo-id", "you/tiny", "--dry-run"]) == 2
    assert "names no licence: set card.license" in capsys.readouterr().err
    assert publish.main([str(trained.parent), "--repo-id", "you/tiny", "--dry-run"]) == 2
    assert f"its model is {trained}" in capsys.readouterr().err

    readme = trained / "README.md"
    readme.write_text(readme.read_text().replace("---\n", "---\nlicense: mit\n", 1))
    assert publish.main([str(trained), "--repo-id", "you/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[-1] for line in out.splitlines() if line.startswith(" ")]
    assert "README.md" in listed and "modules.json" in listed and "model.safetensors" in listed
    assert ".trainer_files.json" not in listed and not any("grounding" in f for f in listed)
    assert "-> https://huggingface.co/you/tiny" in out and out.rstrip().endswith("dry run: nothing uploaded")


@pytest.mark.parametrize("stray", ["checkpoint.pt", "notes/plan.txt", "1_Pooling/old_config.json"])
def test_publish_refuses_a_file_that_is_not_part_of_the_model_even_in_a_dry_run(trained, capsys, stray):
    readme = trained / "README.md"
    if "license:" not in readme.read_text():
        readme.write_text(readme.read_text().replace("---\n", "---\nlicense: mit\n", 1))
    (trained / stray).parent.mkdir(parents=True, exist_ok=True)
    (trained / stray).write_bytes(b"x" * 1000)
    try:
        assert publish.main([str(trained), "--repo-id", "you/tiny", "--dry-run"]) == 2
    finally:
        (trained / stray).unlink()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {trained} holds files that are not part of the model ({stray}); move them out of the folder "
        "before publishing")


def test_publish_uploads_through_the_hub_client_and_points_the_card_at_the_repo(trained, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, ignore_patterns, commit_message):
            calls.append(("upload", folder_path, repo_id, tuple(ignore_patterns)))
            return "https://huggingface.co/you/tiny/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    readme = trained / "README.md"
    if "license:" not in readme.read_text():
        readme.write_text(readme.read_text().replace("---\n", "---\nlicense: mit\n", 1))
    assert publish.main([str(trained), "--repo-id", "you/tiny", "--private", "--token", "t"]) == 0
    assert calls[0] == ("token", "t") and calls[1] == ("create", "you/tiny", True, True)
    assert calls[2][:3] == ("upload", str(trained), "you/tiny") and ".trainer_files.json" in calls[2][3]
    assert 'SentenceTransformer("you/tiny")' in readme.read_text()
    if "model-index" in readme.read_text():  # scored before: the hub shows the results under the repo's name
        assert card_header_of(readme.read_text())["model-index"][0]["name"] == "you/tiny"


def test_evaluation_scores_go_into_the_card_text_and_model_index(trained):
    payload = {"model": "tiny", "sts": {"aggregation": "all", "pooler": "cls", "average": 70.0, "tasks": {
        "STS12": {"spearman": 65.0}, "STSBenchmark": {"spearman": 75.0}}}}
    assert record_scores(trained, payload, render_markdown([payload]))
    payload["sts"]["tasks"]["STS12"]["spearman"] = 66.0
    tables = render_markdown([payload])
    assert record_scores(trained, payload, tables)  # a second evaluation replaces the first
    card = (trained / "README.md").read_text()
    assert card.count("## Test scores") == 1 and tables.strip() in card and "65.00" not in card
    assert card.index("## Test scores") < card.index("## Training")
    (entry,) = card_header_of(card)["model-index"]
    published = 'SentenceTransformer("you/tiny")' in card  # the upload test ran first: named after the repo
    assert entry["name"] == ("you/tiny" if published else trained.parent.name)  # else the run's, never "model"
    assert [(r["dataset"]["type"], r["metrics"][0]["value"]) for r in entry["results"]] == [
        ("mteb/sts12-sts", 66.0), ("mteb/stsbenchmark-sts", 75.0)]
    assert not record_scores(trained.parent, payload, tables)  # no card of this project there: untouched
    assert json.loads((trained.parent / "train_summary.json").read_text())["baseline_stsb_dev"] is not None


def test_evaluate_py_on_a_runs_model_writes_its_scores_into_the_card(trained, tiny_senteval_dir, tmp_path):
    from kdmcse_cli import evaluate

    assert evaluate.main(["--model", str(trained), "--data-dir", str(tiny_senteval_dir), "--no-progress",
                          "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    card = (trained / "README.md").read_text()
    sts12 = result["sts"]["tasks"]["STS12"]["spearman"]
    section = card.split("## Test scores", 1)[1].split("## Training", 1)[0]
    assert f"| {sts12:.2f} |" in section and "| this model |" in section and str(tmp_path) not in card
    assert card_header_of(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == round(sts12, 2)
