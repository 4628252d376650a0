"""Loaders for the STS evaluation sets, read exactly as SentEval reads them.

* STS12-16: ``STS/STS1X-en-test/STS.input.<subset>.txt`` (two tab-separated sentences a line) beside
  ``STS.gs.<subset>.txt`` (one gold score a line). A pair counts only when its gold line is
  non-empty: the STS15/16 input files hold more pairs than were scored. STS13 has no SMT subset
  (its text cannot be redistributed).
* STS-B: ``STS/STSBenchmark/sts-{train,dev,test}.csv``, tab-separated, score in column 4 and the two
  sentences in columns 5 and 6 (0-based); later columns (source notes in some copies) are ignored.
* SICK-R: ``SICK/SICK_{train,trial,test_annotated}.txt``, a header line then
  ``pair_ID  sentence_A  sentence_B  relatedness_score  entailment_judgment``; CRLF endings allowed.

Sentences are whitespace-normalised (split on whitespace, joined by one space) because SentEval
tokenises with ``str.split`` and the SimCSE batcher joins the tokens back with spaces.

Row ids are ``<set>:<subset or split>:<0-based row>``, e.g. ``sts12:MSRpar:17`` (the line of the input
file, scored or not), ``stsb:test:5`` and ``sick:test:12`` (data rows, header excluded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from kdmcse_base.data_files import DataFormatError, read_data_lines, resolve_data_dir

from .records import STSPair

STS_YEAR_SUBSETS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
"""Subsets of each SemEval STS year, in SentEval's order."""

STSBSplit = Literal["train", "dev", "test"]
SICKSplit = Literal["train", "trial", "dev", "test"]

_SICK_FILES = {"train": "SICK_train.txt", "trial": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
_SICK_HEADER = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score")
_STSB_MIN_COLUMNS = 7


def normalize_whitespace(text: str) -> str:
    """SentEval's view of a sentence: its whitespace tokens joined by single spaces."""
    return " ".join(text.split())


def parse_score(text: str, path: Path, line: int) -> float:
    """A gold score as a float, or a DataFormatError naming the file and the 1-based line."""
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(path, line, f"gold score {text!r} is not a number") from None


def sts_year_dir(year: str, data_dir: str | Path | None = None) -> Path:
    """Folder of one SemEval STS year, e.g. ``<data>/senteval/STS/STS12-en-test``."""
    _check_year(year)
    return resolve_data_dir(data_dir) / "senteval" / "STS" / f"{year}-en-test"


def load_sts_subset(year: str, subset: str, data_dir: str | Path | None = None) -> list[STSPair]:
    """Gold-scored pairs of one subset of one STS year (e.g. ``"STS12", "MSRpar"``)."""
    _check_year(year)
    if subset not in STS_YEAR_SUBSETS[year]:
        raise ValueError(f"{year} has no subset {subset!r}; known: {', '.join(STS_YEAR_SUBSETS[year])}")
    folder = sts_year_dir(year, data_dir)
    input_path = folder / f"STS.input.{subset}.txt"
    gold_path = folder / f"STS.gs.{subset}.txt"
    input_lines = read_data_lines(input_path, "utf-8")
    gold_lines = read_data_lines(gold_path, "utf-8")
    if len(gold_lines) != len(input_lines):
        raise DataFormatError(
            gold_path, None, f"{len(gold_lines)} gold lines but {input_path.name} has {len(input_lines)}"
        )
    pairs = []
    for index, (text_line, gold_line) in enumerate(zip(input_lines, gold_lines)):
        if not gold_line.strip():
            continue  # an unscored pair: SentEval drops it, and so do the official counts
        score = parse_score(gold_line.strip(), gold_path, index + 1)
        sentence1, sentence2 = _split_sentence_pair(text_line, input_path, index + 1)
        pairs.append(STSPair(f"{year.lower()}:{subset}:{index}", sentence1, sentence2, score, subset))
    return pairs


def load_sts_year(year: str, data_dir: str | Path | None = None) -> dict[str, list[STSPair]]:
    """Every subset of one STS year, ``{subset: pairs}`` in SentEval's order."""
    _check_year(year)
    return {subset: load_sts_subset(year, subset, data_dir) for subset in STS_YEAR_SUBSETS[year]}


def load_stsb(split: STSBSplit, data_dir: str | Path | None = None) -> list[STSPair]:
    """STS Benchmark pairs of one split (train 5749, dev 1500, test 1379)."""
    if split not in ("train", "dev", "test"):
        raise ValueError(f"STS-B split must be train, dev or test, not {split!r}")
    path = resolve_data_dir(data_dir) / "senteval" / "STS" / "STSBenchmark" / f"sts-{split}.csv"
    pairs = []
    for index, line in enumerate(read_data_lines(path, "utf-8")):
        columns = line.split("\t")
        if len(columns) < _STSB_MIN_COLUMNS:
            raise DataFormatError(path, index + 1, f"expected at least 7 tab-separated columns, got {len(columns)}")
        score = parse_score(columns[4].strip(), path, index + 1)
        sentence1, sentence2 = (_sentence(c, path, index + 1) for c in columns[5:7])
        pairs.append(STSPair(f"stsb:{split}:{index}", sentence1, sentence2, score, split))
    return pairs


def load_sick(split: SICKSplit, data_dir: str | Path | None = None) -> list[STSPair]:
    """SICK relatedness pairs of one split (train 4500, trial 500, test 4927); ``"dev"`` means trial."""
    split = "trial" if split == "dev" else split
    if split not in _SICK_FILES:
        raise ValueError(f"SICK split must be train, trial (dev) or test, not {split!r}")
    path = resolve_data_dir(data_dir) / "senteval" / "SICK" / _SICK_FILES[split]
    lines = read_data_lines(path, "utf-8")
    _check_sick_header(lines, path)
    pairs = []
    for index, line in enumerate(lines[1:]):
        columns = line.split("\t")
        if len(columns) < len(_SICK_HEADER):
            raise DataFormatError(path, index + 2, f"expected at least 4 tab-separated columns, got {len(columns)}")
        score = parse_score(columns[3].strip(), path, index + 2)
        sentence1, sentence2 = (_sentence(c, path, index + 2) for c in columns[1:3])
        pairs.append(STSPair(f"sick:{split}:{index}", sentence1, sentence2, score, split))
    return pairs


def _check_year(year: str) -> None:
    if year not in STS_YEAR_SUBSETS:
        raise ValueError(f"unknown STS year {year!r}; known: {', '.join(STS_YEAR_SUBSETS)}")


def _split_sentence_pair(line: str, path: Path, line_number: int) -> tuple[str, str]:
    columns = line.split("\t")
    if len(columns) != 2:
        raise DataFormatError(path, line_number, f"expected 2 tab-separated sentences, got {len(columns)} fields")
    return _sentence(columns[0], path, line_number), _sentence(columns[1], path, line_number)


def _sentence(text: str, path: Path, line_number: int) -> str:
    sentence = normalize_whitespace(text)
    if not sentence:
        raise DataFormatError(path, line_number, "a sentence of a gold-scored pair is empty")
    return sentence


def _check_sick_header(lines: list[str], path: Path) -> None:
    header = tuple(column.strip() for column in lines[0].split("\t")) if lines else ()
    if header[: len(_SICK_HEADER)] != _SICK_HEADER:
        raise DataFormatError(path, 1, f"expected the SICK header {'<TAB>'.join(_SICK_HEADER)}...")
