"""Shared pytest fixtures. Add new fixtures under a section header; keep each builder small."""
from __future__ import annotations

import random
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

# --- tiny random models -----------------------------------------------------------------------------

# initializer_range 0.5 (BERT's default is 0.02): with tiny random weights every [CLS] vector is nearly
# the same (pair cosines 0.99998 +- 1e-8), so rankings would hinge on float noise; 0.5 spreads them.
TINY_BERT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, initializer_range=0.5
)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Bit-identity of cache bytes is a promise for equal intra-op thread counts (teacher_cache/writer.py):
    a module comparing builds byte for byte runs with one thread (``pytestmark = usefixtures(...)``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A saved SentenceTransformer folder: random 2-layer, 32-d BERT (with its pooler) + mean pooling.

    Uses all-MiniLM-L6-v2's tokenizer (real vocabulary, offline), so any English text tokenises.
    Weights are seeded, hence identical across runs.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kdmcse_base.offline_models import minilm_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, **TINY_BERT)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    transformer = Transformer(str(folder / "hf"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(config.hidden_size, pooling_mode="mean")])
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="session")
def tiny_st(tiny_bert_dir):
    """The tiny SentenceTransformer, loaded once per session (patch it only through monkeypatch)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bert_dir), device="cpu")


# --- tiny SentEval data layout ----------------------------------------------------------------------

_WORDS = "a man woman dog cat plays guitar runs fast slowly red blue big small car house eats food".split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9)))


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding=encoding)


def write_tiny_sts(root: Path, rng: random.Random, pairs_per_subset: int = 12) -> None:
    """Every STS12-16 subset, STS-B train/dev/test and SICK, with random sentences and scores.

    Each subset also has one unscored pair (empty gold line), which loaders must skip.
    """
    from eval.data import STS_YEAR_SUBSETS

    for year, subsets in STS_YEAR_SUBSETS.items():
        for subset in subsets:
            folder = root / "senteval" / "STS" / f"{year}-en-test"
            inputs = [f"{_sentence(rng)}\t{_sentence(rng)}" for _ in range(pairs_per_subset + 1)]
            gold = [f"{rng.uniform(0, 5):.2f}" for _ in range(pairs_per_subset)] + [""]
            _write(folder / f"STS.input.{subset}.txt", inputs)
            _write(folder / f"STS.gs.{subset}.txt", gold)
    for split in ("train", "dev", "test"):
        rows = [
            f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{_sentence(rng)}\t{_sentence(rng)}"
            for i in range(pairs_per_subset)
        ]
        _write(root / "senteval" / "STS" / "STSBenchmark" / f"sts-{split}.csv", rows)
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        rows = [
            f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.uniform(1, 5):.1f}\tNEUTRAL"
            for i in range(pairs_per_subset)
        ]
        _write(root / "senteval" / "SICK" / name, [header, *rows])


def write_tiny_transfer(root: Path, rng: random.Random, per_class: int = 10) -> None:
    """MR, CR, SUBJ, MPQA, SST2, TREC and MRPC files in SentEval's formats (labels are random)."""
    from eval.data import BINARY_TASK_FILES, TREC_CLASSES

    for folder, first, second in BINARY_TASK_FILES.values():
        for name in (first, second):
            _write(root / "senteval" / folder / name, [_sentence(rng) for _ in range(per_class)], "latin-1")
    for split in ("train", "dev", "test"):
        rows = [f"{_sentence(rng)} \t{i % 2}" for i in range(2 * per_class)]
        _write(root / "senteval" / "SST" / "binary" / f"sentiment-{split}", rows)
    for name in ("train_5500.label", "TREC_10.label"):
        rows = [f"{TREC_CLASSES[i % 6]}:other {_sentence(rng)} ?" for i in range(6 * 4)]
        _write(root / "senteval" / "TREC" / name, rows, "latin-1")
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    for split in ("train", "test"):
        rows = [f"{i % 2}\t{i}\t{i + 1000}\t{_sentence(rng)}\t{_sentence(rng)}" for i in range(2 * per_class)]
        _write(root / "senteval" / "MRPC" / f"msr_paraphrase_{split}.txt", [header, *rows])


@pytest.fixture(scope="session")
def tiny_senteval_dir(tmp_path_factory) -> Path:
    """A data root with every STS and transfer file of the SentEval layout, tiny and random."""
    root = tmp_path_factory.mktemp("tiny_data")
    rng = random.Random(1234)
    write_tiny_sts(root, rng)
    write_tiny_transfer(root, rng)
    return root


@pytest.fixture()
def encoded_sentences(tiny_st, monkeypatch) -> Counter:
    """How many times each sentence goes through ``tiny_st``'s tokenizer during the test."""
    seen: Counter[str] = Counter()
    original = tiny_st.preprocess

    def counting_preprocess(batch, *args, **kwargs):
        seen.update(batch)
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(tiny_st, "preprocess", counting_preprocess)
    return seen


@pytest.fixture(scope="session")
def tiny_static_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """Model2Vec's distillation of the tiny BERT into an 8-dimensional static student (its init folder)."""
    from distill.config import StudentConfig
    from distill.static_student import build_static_encoder, static_init_folder

    cfg = StudentConfig(kind="static", model=str(tiny_bert_dir), static_dim=8,
                        init_cache=str(tmp_path_factory.mktemp("student_init")))
    build_static_encoder(cfg)
    return static_init_folder(cfg)


# --- real filesystems: a full disk, a read-only mount ---------------------------------------------


@pytest.fixture()
def mounted(tmp_path):
    """Mount a real filesystem on a tmp folder or ``point`` (``kind`` ``tmpfs:SIZE``, or ``ro``: the folder
    itself, read-only); skipped where this machine does not allow mounts (no privilege)."""
    points = []

    def mount(kind: str, point: Path | None = None) -> Path:
        point = point or tmp_path / f"mount{len(points)}"
        point.mkdir(exist_ok=True)
        if kind.startswith("tmpfs:"):
            command = ["mount", "-t", "tmpfs", "-o", f"size={kind.split(':')[1]}", "tmpfs", str(point)]
        else:
            command = ["mount", "--bind", "-o", "ro", str(point), str(point)]
        if shutil.which("mount") is None or subprocess.run(command, capture_output=True).returncode != 0:
            pytest.skip("mounting a filesystem needs privileges this machine does not give")
        points.append(point)
        return point

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True)  # lazy: a test may still map its files
