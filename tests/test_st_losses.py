"""The sentence-transformers wrappers: same values as the tensor losses, and training with
SentenceTransformerTrainer exactly as docs/sentence_transformers.md shows it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from distill.losses import AdapACSELoss
from distill.st_losses import (
    AdapACSEModelLoss,
    AngularMarginModelLoss,
    MCSEModelLoss,
    RegressionModelLoss,
    SimCSEModelLoss,
    cache_dataset,
    with_teacher_label,
)
from distill.student import GroundingHeads

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["a dog runs on the beach", "two people ride bikes", "a bowl of soup", "a red bus",
             "a child with a kite", "a cat on a sofa"]


@pytest.fixture
def model(tiny_bert_dir) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_bert_dir), device="cpu").eval()  # eval: both views identical


def features(model: SentenceTransformer, sentences: list[str]) -> list[dict]:
    return [model.preprocess(sentences)]


def test_simcse_wrapper_is_infonce_of_the_models_embeddings(model):
    loss = SimCSEModelLoss(model, temperature=0.05)
    h = F.normalize(model.encode(SENTENCES, convert_to_tensor=True), dim=-1)
    by_hand = F.cross_entropy(h @ h.T / 0.05, torch.arange(len(SENTENCES)))
    with torch.no_grad():
        assert loss(features(model, SENTENCES)).item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_two_columns_are_anchor_and_positive(model):
    loss = AngularMarginModelLoss(model)
    with torch.no_grad():
        same = loss(features(model, SENTENCES) * 2).item()
        shifted = loss(features(model, SENTENCES) + features(model, SENTENCES[1:] + SENTENCES[:1])).item()
    assert shifted > same  # the positive is the second column's row, not the anchor itself


def test_adapacse_wrapper_splits_the_label_and_matches_the_tensor_loss(model):
    torch.manual_seed(0)
    teacher_text, teacher_image = torch.randn(6, 5), torch.randn(6, 7)
    loss = AdapACSEModelLoss(model, teacher_text_dim=5, teacher_image_dim=7, grounding_dim=4, weight=0.5)
    t, v = F.normalize(teacher_text, dim=-1), F.normalize(teacher_image, dim=-1)
    with torch.no_grad():
        got = loss(features(model, SENTENCES), torch.cat([teacher_text, teacher_image], dim=1))
        g = loss.heads.ground(model.encode(SENTENCES, convert_to_tensor=True))
        want = 0.5 * AdapACSELoss()([g, g], loss.heads.adapt_images(v), loss.heads.adapt_captions(t),
                                    s_vv=v @ v.T, s_cc=t @ t.T)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert {name for name, _ in loss.named_parameters() if not name.startswith("model.")} == {
        f"heads.{part}.0.{kind}" for part in ("grounding", "image_adapter", "caption_adapter")
        for kind in ("weight", "bias")}


def test_mcse_returns_named_terms_and_needs_a_label(model):
    loss = MCSEModelLoss(model, teacher_image_dim=7, grounding_dim=4, text_loss=SimCSEModelLoss(model))
    assert loss.heads.caption_adapter is None
    with torch.no_grad():
        terms = loss(features(model, SENTENCES), torch.randn(6, 7))
    assert set(terms) == {"text", "mcse"} and all(torch.isfinite(v) for v in terms.values())
    with pytest.raises(ValueError, match="'label' column"):
        loss(features(model, SENTENCES), None)


def test_with_teacher_label_concatenates_and_names_missing_columns():
    data = Dataset.from_dict({"sentence": ["a", "b"], "teacher_text": [[1.0, 2.0], [3.0, 4.0]],
                              "teacher_image": [[5.0], [6.0]]})
    labelled = with_teacher_label(data)
    assert labelled.column_names == ["sentence", "label"] and labelled["label"] == [[1, 2, 5], [3, 4, 6]]
    with pytest.raises(ValueError, match=r"no column\(s\) \['teacher_image'\]"):
        with_teacher_label(data.remove_columns("teacher_image"))


def doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "sentence_transformers.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def substitute(block: str, replacements: dict[str, str]) -> str:
    for pattern, value in replacements.items():
        block, count = re.subn(pattern, value, block)
        assert count == 1, f"docs/sentence_transformers.md changed: {pattern!r} not found once"
    return block


@pytest.mark.slow  # the documented example trained end to end
def test_the_documented_example_trains_with_sentence_transformer_trainer(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, setup, training = doc_blocks()
    namespace: dict = {}
    exec(substitute(setup, {  # the tiny student and teacher text tower instead of MiniLM
        r'STUDENT = StudentConfig\(.*\)': f'STUDENT = StudentConfig(model={str(tiny_bert_dir)!r}, layers=1)',
        r'TEACHER = TeacherConfig\(device="cpu"\)': f'TEACHER = TeacherConfig(device="cpu", text_model={str(tiny_bert_dir)!r})',
    }), namespace)
    student, loss, data = namespace["student"], namespace["loss"], namespace["train_dataset"]
    before = {name: p.detach().clone() for name, p in loss.named_parameters()}
    batch = [student.preprocess(data["sentence"])], torch.tensor(data["label"])

    def eval_loss() -> float:
        student.eval()
        with torch.no_grad():
            return sum(loss(*batch).values()).item()

    start = eval_loss()
    exec(substitute(training, {r"max_steps=20": "max_steps=8", r"learning_rate=3e-5": "learning_rate=1e-3"}),
         namespace)

    assert eval_loss() < start
    changed = {name for name, p in loss.named_parameters() if not torch.equal(p, before[name])}
    assert "heads.image_adapter.0.weight" in changed and "heads.caption_adapter.0.weight" in changed
    assert "model.0.model.encoder.layer.0.attention.self.query.weight" in changed  # the encoder trains too
    logged = [entry for entry in namespace["trainer"].state.log_history if "loss" in entry]
    assert len(logged) == 8 and all({"text", "adapacse"} <= set(entry) for entry in logged)
    saved = tmp_path / "runs" / "st_adapacse" / "model"
    assert SentenceTransformer(str(saved), device="cpu").get_embedding_dimension() == 32
    assert GroundingHeads.load(saved / "grounding_heads.pt").image_adapter[0].in_features == 1280


@pytest.fixture(scope="module")
def tiny_cache(tiny_bert_dir, tmp_path_factory) -> Path:
    """A real cache of the tiny text tower over 10 sentences and 3 images' captions."""
    from teacher_cache import TeacherConfig, ensure_cache
    from teacher_testkit import small_data_config

    cfg = TeacherConfig(device="cpu", batch_size=8, text_model=str(tiny_bert_dir))
    return ensure_cache(cfg, small_data_config(images=3, sentences=10), tmp_path_factory.mktemp("cache"),
                        shard_rows=8, progress=False)


def test_cache_dataset_holds_each_rows_sentence_and_teacher_vector(tiny_cache):
    from teacher_cache import TeacherCache

    cache = TeacherCache.open(tiny_cache)
    data = cache_dataset(tiny_cache)
    assert data.column_names == ["sentence", "label"] and len(data) == len(cache.text_ids)
    assert data["sentence"] == list(cache.texts)
    torch.testing.assert_close(torch.tensor(data["label"]), cache.text(range(len(data))).float())
    picked = cache_dataset(cache, rows=[4, 1])
    assert picked["sentence"] == [cache.texts[4], cache.texts[1]]


def test_regression_wrapper_is_sentence_transformers_mse_or_maps_the_width_first(model):
    from sentence_transformers.sentence_transformer.losses import MSELoss

    batch = features(model, SENTENCES[:4])
    teacher = F.normalize(torch.randn(4, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    same = RegressionModelLoss(model, teacher_text_dim=32)  # the tiny student is 32 wide
    torch.testing.assert_close(same(batch, teacher), MSELoss(model)(batch, teacher))
    wider = RegressionModelLoss(model, teacher_text_dim=48)
    h = model(dict(batch[0]))["sentence_embedding"]
    torch.testing.assert_close(wider(batch, teacher.repeat(1, 2)[:, :48]),
                               F.mse_loss(wider.regression(h), teacher.repeat(1, 2)[:, :48]))
    with pytest.raises(ValueError, match="reads one sentence column, got 2"):
        same(batch * 2, teacher)


@pytest.mark.slow  # the documented example trained end to end
def test_the_documented_regression_example_trains(tiny_bert_dir, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    regression = doc_blocks()[0]
    namespace: dict = {}
    exec(substitute(regression, {
        r'CACHE = ".*?"': f"CACHE = {str(tiny_cache)!r}",
        r'model="offline:all-MiniLM-L6-v2", layers=3': f"model={str(tiny_bert_dir)!r}, layers=1",
        r"max_steps=20": "max_steps=4", r"per_device_train_batch_size=64": "per_device_train_batch_size=8",
    }), namespace)
    from distill.config import StudentConfig
    from distill.student import build_encoder

    data = namespace["train_dataset"]
    labels = torch.tensor(data["label"])

    def mse(encoder) -> float:
        return F.mse_loss(encoder.encode(data["sentence"], convert_to_tensor=True), labels).item()

    saved = SentenceTransformer(str(tmp_path / "runs" / "st_regression" / "model"), device="cpu")
    assert isinstance(namespace["loss"].regression, torch.nn.Identity)  # tiny teacher and student: both 32 wide
    assert mse(saved) < mse(build_encoder(StudentConfig(model=str(tiny_bert_dir), layers=1, layer_choice="spread")))


def test_check_columns_refuses_what_the_loss_cannot_read_before_training(model):
    from datasets import Dataset

    from distill.st_losses import AngularMarginModelLoss, RegressionModelLoss, check_columns

    rows = {"sentence": ["a", "b"], "source": ["wiki", "coco"], "label": [[0.0] * 32, [1.0] * 32]}
    regression = RegressionModelLoss(model, teacher_text_dim=32)
    with pytest.raises(ValueError) as err:
        check_columns(Dataset.from_dict(rows), regression)
    assert str(err.value) == ("RegressionModelLoss reads 1 sentence column(s) besides 'label'; the dataset has 2 "
                              "(sentence, source): keep only those it reads, e.g. "
                              "dataset.select_columns(['sentence', 'label'])")
    check_columns(Dataset.from_dict(rows).select_columns(["sentence", "label"]), regression)
    with pytest.raises(ValueError, match="needs the teacher's vectors in a 'label' column; the dataset has sentence"):
        check_columns(Dataset.from_dict({"sentence": ["a"]}), regression)
    three = Dataset.from_dict({"a": ["x"], "b": ["y"], "c": ["z"]})
    with pytest.raises(ValueError, match=r"AngularMarginModelLoss reads 1 or 2 sentence column\(s\)"):
        check_columns(three, AngularMarginModelLoss(model))
