"""Loaders for the SentEval transfer tasks, read exactly as SentEval reads them.

* MR, CR, SUBJ, MPQA: one sentence a line in a positive and a negative file, latin-1 (SentEval's
  encoding; the files are ASCII). Label 1 is ``pos`` (for SUBJ: ``objective``, as SentEval labels
  it), label 0 the other file. Blank lines are kept as empty sentences: SentEval keeps them, and the
  official counts (CR 3775, MPQA 10606) include them.
* SST2: ``SST/binary/sentiment-{train,dev,test}``, ``sentence<TAB>label`` in UTF-8.
* TREC: ``TREC/train_5500.label`` (train) and ``TREC/TREC_10.label`` (test), latin-1,
  ``COARSE:fine question``; the label is the coarse class, indexed as in ``TREC_CLASSES``.
* MRPC: ``MRPC/msr_paraphrase_{train,test}.txt``, UTF-8 with a byte-order mark and a header line,
  ``Quality  #1 ID  #2 ID  #1 String  #2 String``.

Sentences are whitespace-normalised as SentEval does (``str.split`` then joined by spaces).
Row ids: ``mr:pos:3`` (line of the file), ``sst2:dev:7``, ``trec:train:9``, ``mrpc:train:10``
(data rows, header excluded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from kdmcse_base.data_files import DataFormatError, read_data_lines, resolve_data_dir

from .records import LabeledPair, LabeledSentence
from .sts import normalize_whitespace

BinaryTask = Literal["MR", "CR", "SUBJ", "MPQA"]

BINARY_TASK_FILES: dict[str, tuple[str, str, str]] = {
    # task: (folder, file with label 1, file with label 0)
    "MR": ("MR", "rt-polarity.pos", "rt-polarity.neg"),
    "CR": ("CR", "custrev.pos", "custrev.neg"),
    "SUBJ": ("SUBJ", "subj.objective", "subj.subjective"),
    "MPQA": ("MPQA", "mpqa.pos", "mpqa.neg"),
}
"""The two files of each single-sentence binary task; the first file is label 1, as in SentEval."""

TREC_CLASSES: tuple[str, ...] = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
"""TREC coarse classes; a label is the index in this tuple (SentEval's mapping)."""

_TREC_FILES = {"train": "train_5500.label", "test": "TREC_10.label"}
_MRPC_HEADER = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")


def load_binary_task(task: BinaryTask, data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """All sentences of MR, CR, SUBJ or MPQA: the label-1 file first, then the label-0 file."""
    if task not in BINARY_TASK_FILES:
        raise ValueError(f"unknown binary task {task!r}; known: {', '.join(BINARY_TASK_FILES)}")
    folder, positive_file, negative_file = BINARY_TASK_FILES[task]
    root = resolve_data_dir(data_dir) / "senteval" / folder
    rows = []
    for file_name, label in ((positive_file, 1), (negative_file, 0)):
        part = file_name.rsplit(".", 1)[-1]  # pos / neg / objective / subjective
        for index, line in enumerate(read_data_lines(root / file_name, "latin-1")):
            rows.append(LabeledSentence(f"{task.lower()}:{part}:{index}", normalize_whitespace(line), label))
    return rows


def load_mr(data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """Movie-review polarity (Pang & Lee 2005): 5331 positive + 5331 negative."""
    return load_binary_task("MR", data_dir)


def load_cr(data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """Customer-review polarity (Hu & Liu 2004): 2407 positive + 1368 negative."""
    return load_binary_task("CR", data_dir)


def load_subj(data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """Subjectivity (Pang & Lee 2004): 5000 objective (label 1) + 5000 subjective (label 0)."""
    return load_binary_task("SUBJ", data_dir)


def load_mpqa(data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """MPQA opinion polarity (Wiebe et al. 2005): 3312 positive + 7294 negative."""
    return load_binary_task("MPQA", data_dir)


def load_sst2(split: Literal["train", "dev", "test"], data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """Binary SST (Socher et al. 2013) in SentEval's split: 67349 / 872 / 1821 sentences."""
    if split not in ("train", "dev", "test"):
        raise ValueError(f"SST2 split must be train, dev or test, not {split!r}")
    path = resolve_data_dir(data_dir) / "senteval" / "SST" / "binary" / f"sentiment-{split}"
    rows = []
    for index, line in enumerate(read_data_lines(path, "utf-8")):
        sentence, separator, label = line.rpartition("\t")
        if not separator or label.strip() not in ("0", "1"):
            raise DataFormatError(path, index + 1, "expected 'sentence<TAB>label' with label 0 or 1")
        rows.append(LabeledSentence(f"sst2:{split}:{index}", normalize_whitespace(sentence), int(label)))
    return rows


def load_trec(split: Literal["train", "test"], data_dir: str | Path | None = None) -> list[LabeledSentence]:
    """TREC question types (Li & Roth 2002): train 5452, test 500; labels index ``TREC_CLASSES``."""
    if split not in _TREC_FILES:
        raise ValueError(f"TREC split must be train or test, not {split!r}")
    path = resolve_data_dir(data_dir) / "senteval" / "TREC" / _TREC_FILES[split]
    rows = []
    for index, line in enumerate(read_data_lines(path, "latin-1")):
        coarse, colon, rest = line.strip().partition(":")
        _fine, space, question = rest.partition(" ")
        if not colon or not space or coarse not in TREC_CLASSES:
            raise DataFormatError(path, index + 1, "expected 'COARSE:fine question' with a known coarse class")
        label = TREC_CLASSES.index(coarse)
        rows.append(LabeledSentence(f"trec:{split}:{index}", normalize_whitespace(question), label))
    return rows


def load_mrpc(split: Literal["train", "test"], data_dir: str | Path | None = None) -> list[LabeledPair]:
    """MSR paraphrase pairs (Dolan & Brockett 2005): train 4076, test 1725; label 1 = paraphrase."""
    if split not in ("train", "test"):
        raise ValueError(f"MRPC split must be train or test, not {split!r}")
    path = resolve_data_dir(data_dir) / "senteval" / "MRPC" / f"msr_paraphrase_{split}.txt"
    lines = read_data_lines(path, "utf-8-sig")  # -sig drops the byte-order mark
    header = tuple(column.strip() for column in lines[0].split("\t")) if lines else ()
    if header != _MRPC_HEADER:
        raise DataFormatError(path, 1, f"expected the MRPC header {'<TAB>'.join(_MRPC_HEADER)}")
    rows = []
    for index, line in enumerate(lines[1:]):
        columns = line.split("\t")
        if len(columns) != len(_MRPC_HEADER) or columns[0].strip() not in ("0", "1"):
            raise DataFormatError(path, index + 2, "expected 5 tab-separated columns with Quality 0 or 1")
        sentence1, sentence2 = normalize_whitespace(columns[3]), normalize_whitespace(columns[4])
        rows.append(LabeledPair(f"mrpc:{split}:{index}", sentence1, sentence2, int(columns[0])))
    return rows
