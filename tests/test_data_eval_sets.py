"""Evaluation-set loaders: the verified counts of shared/data/MANIFEST.md, row ids, and clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from teacher_cache.corpora import DataFormatError, read_data_lines, resolve_data_dir
from eval.data import (
    STS_YEAR_SUBSETS,
    load_binary_task,
    load_mrpc,
    load_sick,
    load_sst2,
    load_sts_subset,
    load_sts_year,
    load_stsb,
    load_trec,
)

STS_SUBSET_COUNTS = {
    "STS12": {"MSRpar": 750, "MSRvid": 750, "SMTeuroparl": 459, "surprise.OnWN": 750, "surprise.SMTnews": 399},
    "STS13": {"FNWN": 189, "headlines": 750, "OnWN": 561},
    "STS14": {"deft-forum": 450, "deft-news": 300, "headlines": 750, "images": 750, "OnWN": 750, "tweet-news": 750},
    "STS15": {"answers-forums": 375, "answers-students": 750, "belief": 375, "headlines": 750, "images": 750},
    "STS16": {"answer-answer": 254, "headlines": 249, "plagiarism": 230, "postediting": 244, "question-question": 209},
}
STS_YEAR_TOTALS = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186}


@pytest.fixture(scope="module")
def data_dir() -> Path:
    try:
        return resolve_data_dir()
    except DataFormatError as err:  # pragma: no cover - only without the shared data
        pytest.skip(f"shared SentEval data not found: {err}")


# --- verified counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("year", sorted(STS_SUBSET_COUNTS))
def test_sts_year_subset_counts(data_dir, year):
    pairs = load_sts_year(year, data_dir)
    assert {subset: len(rows) for subset, rows in pairs.items()} == STS_SUBSET_COUNTS[year]
    assert list(pairs) == list(STS_YEAR_SUBSETS[year])  # SentEval's order
    assert sum(len(rows) for rows in pairs.values()) == STS_YEAR_TOTALS[year]


def test_sts13_has_no_smt(data_dir):
    assert "SMT" not in STS_YEAR_SUBSETS["STS13"]
    with pytest.raises(ValueError, match="no subset 'SMT'"):
        load_sts_subset("STS13", "SMT", data_dir)


def test_sts_row_ids_are_input_line_indices(data_dir):
    msrpar = load_sts_subset("STS12", "MSRpar", data_dir)
    assert msrpar[17].row_id == "sts12:MSRpar:17" and msrpar[17].subset == "MSRpar"
    # STS15 answers-forums scores only some of its 2000 input lines: ids keep the input line index.
    forums = load_sts_subset("STS15", "answers-forums", data_dir)
    assert len(forums) == 375 and int(forums[-1].row_id.rsplit(":", 1)[1]) < 2000
    assert len({p.row_id for p in forums}) == 375


@pytest.mark.parametrize(("split", "count"), [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_stsb_counts(data_dir, split, count):
    pairs = load_stsb(split, data_dir)
    assert len(pairs) == count
    assert pairs[5].row_id == f"stsb:{split}:5"
    assert all(0.0 <= p.score <= 5.0 for p in pairs)


@pytest.mark.parametrize(("split", "count"), [("train", 4500), ("trial", 500), ("test", 4927)])
def test_sick_counts(data_dir, split, count):
    pairs = load_sick(split, data_dir)
    assert len(pairs) == count
    assert pairs[12].row_id == f"sick:{split}:12"
    assert all(1.0 <= p.score <= 5.0 for p in pairs)
    assert not any("\r" in p.sentence2 for p in pairs)  # the test file has CRLF endings


@pytest.mark.parametrize(
    ("task", "positives", "negatives", "first_id"),
    [
        ("MR", 5331, 5331, "mr:pos:0"),
        ("CR", 2407, 1368, "cr:pos:0"),
        ("SUBJ", 5000, 5000, "subj:objective:0"),
        ("MPQA", 3312, 7294, "mpqa:pos:0"),
    ],
)
def test_binary_task_counts(data_dir, task, positives, negatives, first_id):
    rows = load_binary_task(task, data_dir)
    assert sum(r.label for r in rows) == positives
    assert len(rows) == positives + negatives
    assert rows[0].row_id == first_id
    assert len({r.row_id for r in rows}) == len(rows)


@pytest.mark.parametrize(
    ("split", "count", "positives"), [("train", 67349, 37569), ("dev", 872, 444), ("test", 1821, 909)]
)
def test_sst2_counts(data_dir, split, count, positives):
    rows = load_sst2(split, data_dir)
    assert (len(rows), sum(r.label for r in rows)) == (count, positives)


@pytest.mark.parametrize(("split", "count"), [("train", 5452), ("test", 500)])
def test_trec_counts(data_dir, split, count):
    rows = load_trec(split, data_dir)
    assert len(rows) == count
    assert {r.label for r in rows} == set(range(6))


def test_trec_label_is_the_coarse_class(data_dir):
    first = load_trec("test", data_dir)[0]  # "NUM:dist How far is it from Denver to Aspen ?"
    assert (first.label, first.text) == (5, "How far is it from Denver to Aspen ?")


@pytest.mark.parametrize(("split", "count", "positives"), [("train", 4076, 2753), ("test", 1725, 1147)])
def test_mrpc_counts(data_dir, split, count, positives):
    rows = load_mrpc(split, data_dir)
    assert (len(rows), sum(r.label for r in rows)) == (count, positives)
    assert rows[10].row_id == f"mrpc:{split}:10"


# --- errors on broken copies --------------------------------------------------------------------------


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _tiny_sts12(root: Path, gold_lines: list[str]) -> None:
    folder = root / "senteval" / "STS" / "STS12-en-test"
    _write(folder / "STS.input.MSRpar.txt", "".join(f"a b {i}\tc d {i}\n" for i in range(len(gold_lines))))
    _write(folder / "STS.gs.MSRpar.txt", "".join(f"{g}\n" for g in gold_lines))


def test_empty_gold_line_means_unscored(tmp_path):
    _tiny_sts12(tmp_path, ["1.0", "", "4.5"])
    pairs = load_sts_subset("STS12", "MSRpar", tmp_path)
    assert [(p.row_id, p.score) for p in pairs] == [("sts12:MSRpar:0", 1.0), ("sts12:MSRpar:2", 4.5)]


def test_non_numeric_gold_line_names_file_and_line(tmp_path):
    _tiny_sts12(tmp_path, ["1.0", "2.0", "n/a"])
    with pytest.raises(DataFormatError, match=r"STS\.gs\.MSRpar\.txt:3: gold score 'n/a'") as info:
        load_sts_subset("STS12", "MSRpar", tmp_path)
    assert info.value.line == 3


def test_sts_input_without_tab_names_line(tmp_path):
    _tiny_sts12(tmp_path, ["1.0", "2.0"])
    _write(tmp_path / "senteval/STS/STS12-en-test/STS.input.MSRpar.txt", "a\tb\nno tab here\n")
    with pytest.raises(DataFormatError, match=r"STS\.input\.MSRpar\.txt:2: expected 2 tab-separated"):
        load_sts_subset("STS12", "MSRpar", tmp_path)


def test_gold_and_input_line_counts_must_match(tmp_path):
    _tiny_sts12(tmp_path, ["1.0", "2.0"])
    _write(tmp_path / "senteval/STS/STS12-en-test/STS.gs.MSRpar.txt", "1.0\n")
    with pytest.raises(DataFormatError, match="1 gold lines but STS.input.MSRpar.txt has 2"):
        load_sts_subset("STS12", "MSRpar", tmp_path)


def test_stsb_short_row_and_bad_score(tmp_path):
    path = tmp_path / "senteval/STS/STSBenchmark/sts-test.csv"
    _write(path, "g\td\ty\t1\t2.5\ta b\tc d\ng\td\ty\t2\t3.0\tonly one sentence\n")
    with pytest.raises(DataFormatError, match=r"sts-test\.csv:2: expected at least 7"):
        load_stsb("test", tmp_path)
    _write(path, "g\td\ty\t1\tfive\ta b\tc d\n")
    with pytest.raises(DataFormatError, match=r"sts-test\.csv:1: gold score 'five'"):
        load_stsb("test", tmp_path)


def test_sick_crlf_header_and_bad_score(tmp_path):
    path = tmp_path / "senteval/SICK/SICK_test_annotated.txt"
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n"
    _write(path, header + "1\ta b\tc d\t4.5\tNEUTRAL\r\n")
    assert load_sick("test", tmp_path)[0].sentence2 == "c d"
    _write(path, header + "1\ta b\tc d\t4.5\tNEUTRAL\r\n2\ta b\tc d\t?\tNEUTRAL\r\n")
    with pytest.raises(DataFormatError, match=r"SICK_test_annotated\.txt:3: gold score '\?'"):
        load_sick("test", tmp_path)
    _write(path, "1\ta b\tc d\t4.5\tNEUTRAL\n")
    with pytest.raises(DataFormatError, match=r"SICK_test_annotated\.txt:1: expected the SICK header"):
        load_sick("test", tmp_path)


def test_transfer_malformed_lines(tmp_path):
    _write(tmp_path / "senteval/SST/binary/sentiment-dev", "good film\t1\nbad film\tmaybe\n")
    with pytest.raises(DataFormatError, match=r"sentiment-dev:2:"):
        load_sst2("dev", tmp_path)
    _write(tmp_path / "senteval/TREC/TREC_10.label", "NUM:dist How far ?\nWHAT:x Who ?\n", "latin-1")
    with pytest.raises(DataFormatError, match=r"TREC_10\.label:2:"):
        load_trec("test", tmp_path)
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    _write(tmp_path / "senteval/MRPC/msr_paraphrase_test.txt", header + "1\t1\t2\ta\tb\nyes\t3\t4\tc\td\n")
    with pytest.raises(DataFormatError, match=r"msr_paraphrase_test\.txt:3:"):
        load_mrpc("test", tmp_path)


def test_mrpc_bom_header_is_accepted(tmp_path):
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    _write(tmp_path / "senteval/MRPC/msr_paraphrase_train.txt", header + "1\t1\t2\ta  b\tc d\n")
    (row,) = load_mrpc("train", tmp_path)
    assert (row.row_id, row.sentence1, row.label) == ("mrpc:train:0", "a b", 1)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"STS\.input\.FNWN\.txt: file not found") as info:
        load_sts_year("STS13", tmp_path)
    assert info.value.line is None
    with pytest.raises(DataFormatError, match=r"rt-polarity\.pos: file not found"):
        load_binary_task("MR", tmp_path)
    with pytest.raises(DataFormatError, match=r"msr_paraphrase_test\.txt: file not found"):
        load_mrpc("test", tmp_path)


def test_undecodable_bytes_name_the_line(tmp_path):
    path = _write(tmp_path / "bad.txt", "ok\n")
    path.write_bytes(b"fine\nalso fine\nbroken \xff byte\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:3: cannot decode as utf-8"):
        read_data_lines(path, "utf-8")


def test_read_data_lines_keeps_blank_lines_and_strips_crlf(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"one\r\n\r\nthree\xc2\x85still three\n")
    assert read_data_lines(path) == ["one", "", "three\x85still three"]
