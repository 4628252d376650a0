"""Every dataset the project reads, as plain typed records with stable row ids.

One place knows each file layout; callers never open data files themselves. The data directory is
resolved by ``resolve_data_dir`` (``--data-dir``, ``$DISTILL_DATA_DIR``, ``../shared/data``).
"""
from .paths import ENV_VAR, resolve_data_dir
from .records import (
    CaptionRow,
    DataFormatError,
    ImageRow,
    LabeledPair,
    LabeledSentence,
    STSPair,
    TextRow,
    read_data_lines,
)
from .sts import (
    STS_YEAR_SUBSETS,
    load_sick,
    load_sts_subset,
    load_sts_year,
    load_stsb,
    normalize_whitespace,
    sts_year_dir,
)
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

# --- training corpora (Wiki1M, Flickr30k, COCO): distill/data/corpora.py adds its import here ---
from .corpora import *  # noqa: E402,F401,F403
