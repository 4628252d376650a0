"""The evaluation sets (STS12-16, STS-B, SICK-R, SentEval transfer tasks), read as SentEval reads them."""
from .records import LabeledPair, LabeledSentence, STSPair
from .sts import STS_YEAR_SUBSETS, load_sick, load_sts_subset, load_sts_year, load_stsb, normalize_whitespace
from .transfer import (
    BINARY_TASK_FILES,
    TREC_CLASSES,
    load_binary_task,
    load_cr,
    load_mpqa,
    load_mr,
    load_mrpc,
    load_sst2,
    load_subj,
    load_trec,
)

__all__ = [
    "BINARY_TASK_FILES", "LabeledPair", "LabeledSentence", "STSPair", "STS_YEAR_SUBSETS", "TREC_CLASSES",
    "load_binary_task", "load_cr", "load_mpqa", "load_mr", "load_mrpc", "load_sick", "load_sst2",
    "load_sts_subset", "load_sts_year", "load_stsb", "load_subj", "load_trec", "normalize_whitespace",
]
