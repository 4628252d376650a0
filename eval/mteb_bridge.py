"""Run mteb's STS tasks on the local SentEval files: an independent check of ``eval.sts``.

mteb downloads task data from the Hugging Face hub, which these machines cannot reach. The bridge
takes mteb's own task objects (STS12-16, STSBenchmark, SICK-R), injects our loaders' pairs as their
``test`` split (columns ``sentence1``, ``sentence2``, ``score``), marks them loaded, and lets mteb do
the encoding, the cosine scoring and the Spearman. The main score (``cosine_spearman``) x100 of
each task is returned.

What to expect against ``eval.sts``:

* STS12-16: mteb scores the concatenation of a year's subsets, i.e. our ``all`` aggregation.
* STS-B: the test split, same as ours. MTEB's published all-MiniLM-L6-v2 number is 0.82032.
* SICK-R: mteb's own dataset is all 9,927 SICK pairs (train + trial + test); the SentEval protocol
  uses the 4,927 test pairs. ``sick_r_pairs`` picks which one to inject ("senteval-test" default).

With ``pooler="model"`` and fp32 (the default here) the SentenceTransformer goes to mteb unwrapped, so mteb encodes
with sentence-transformers itself and only the data is shared with ``eval.sts``. Other poolers, or
bf16, go through ``eval.encode`` inside a thin mteb wrapper.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sentence_transformers import SentenceTransformer

from eval.data import STSPair, load_sick

from .encode import Pooler, encode, load_model
from .sts import STS_TASKS, load_sts_task

MTEB_TASK_NAMES: dict[str, str] = {
    "STS12": "STS12",
    "STS13": "STS13",
    "STS14": "STS14",
    "STS15": "STS15",
    "STS16": "STS16",
    "STSBenchmark": "STSBenchmark",
    "SICKRelatedness": "SICK-R",
}
"""Our task names -> mteb task names."""

SickPairs = Literal["senteval-test", "mteb-all"]


@dataclass(frozen=True)
class MTEBResults:
    """mteb main score (cosine Spearman) x100 per task, 2 decimals."""

    scores: dict[str, float]
    mteb_version: str
    pooler: str
    sick_r_pairs: str

    def to_dict(self) -> dict:
        return asdict(self)


def local_mteb_task(task: str, data_dir: str | Path | None = None, sick_r_pairs: SickPairs = "senteval-test"):
    """mteb's task object for one of our STS tasks, with its test split injected from local files."""
    import datasets
    import mteb

    if task not in MTEB_TASK_NAMES:
        raise ValueError(f"no mteb counterpart for {task!r}; known: {', '.join(MTEB_TASK_NAMES)}")
    pairs = _pairs_for_mteb(task, data_dir, sick_r_pairs)
    columns = {
        "sentence1": [p.sentence1 for p in pairs],
        "sentence2": [p.sentence2 for p in pairs],
        "score": [p.score for p in pairs],
    }
    mteb_task = mteb.get_task(MTEB_TASK_NAMES[task])
    mteb_task.dataset = {"default": datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns)})}
    mteb_task.data_loaded = True
    return mteb_task


def evaluate_mteb_sts(
    model: str | Path | SentenceTransformer,
    data_dir: str | Path | None = None,
    tasks: Sequence[str] = STS_TASKS,
    pooler: Pooler = "model",
    batch_size: int = 128,
    bf16: bool = False,
    sick_r_pairs: SickPairs = "senteval-test",
    show_progress: bool = False,
) -> MTEBResults:
    """mteb's STS evaluation of a model on the local copies of the tasks (no hub access).

    fp32 by default (unlike ``eval.sts``): with ``pooler="model"`` the check then runs mteb's own
    sentence-transformers path end to end.
    """
    import mteb

    model = load_model(model)
    mteb_tasks = [local_mteb_task(task, data_dir, sick_r_pairs) for task in tasks]
    with _quiet_mteb():
        runnable = model if pooler == "model" and not bf16 else _wrap_for_mteb(model, pooler, batch_size, bf16)
        result = mteb.evaluate(
            runnable,
            mteb_tasks,
            cache=None,
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
            show_progress_bar=show_progress,
        )
    by_mteb_name = {task_result.task_name: task_result.get_score() for task_result in result.task_results}
    scores = {task: round(100 * float(by_mteb_name[MTEB_TASK_NAMES[task]]), 2) for task in tasks}
    return MTEBResults(scores, mteb.__version__, pooler, sick_r_pairs)


def _pairs_for_mteb(task: str, data_dir: str | Path | None, sick_r_pairs: SickPairs) -> list[STSPair]:
    if sick_r_pairs not in ("senteval-test", "mteb-all"):
        raise ValueError(f"sick_r_pairs must be 'senteval-test' or 'mteb-all', not {sick_r_pairs!r}")
    if task == "SICKRelatedness" and sick_r_pairs == "mteb-all":
        return [p for split in ("train", "trial", "test") for p in load_sick(split, data_dir)]
    return [p for subset in load_sts_task(task, data_dir).values() for p in subset]


def _wrap_for_mteb(model: SentenceTransformer, pooler: Pooler, batch_size: int, bf16: bool):
    """An mteb encoder that embeds with ``eval.encode`` (our pooler and precision)."""
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    class _PooledEncoder(SentenceTransformerEncoderWrapper):
        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs: Any):
            texts = [text for batch in inputs for text in batch["text"]]
            return encode(self.model, texts, pooler, batch_size, bf16, show_progress=False)

    return _PooledEncoder(model)


@contextlib.contextmanager
def _quiet_mteb() -> Iterator[None]:
    """Silence mteb's 'task superseded' and deprecation chatter: we run the original tasks on purpose."""
    mteb_logger = logging.getLogger("mteb")
    level = mteb_logger.level
    mteb_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        mteb_logger.setLevel(level)
