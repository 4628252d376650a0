"""The evaluation's named choices: poolers, STS aggregations, transfer protocols and the default precision.

Apart from the code that loads models, so that a command's ``--help`` answers before torch and
sentence-transformers are imported.
"""
from __future__ import annotations

from typing import Literal, get_args

Pooler = Literal["model", "cls", "cls_before_pooler", "mean"]
POOLERS: tuple[str, ...] = get_args(Pooler)

DEFAULT_BF16 = False
"""Default precision of ``encode``: float32, so numbers compare with the papers' to the last digit.
``bf16=True`` (``--bf16``) runs the forward pass under bfloat16 autocast, a speed option:
``benchmarks/eval_speed.py`` (``reports/eval_speed.md``) measured 2.4x faster encoding of the STS
suite with all-MiniLM-L6-v2 on CPUs with native bf16 (AMX / AVX512-BF16), moving no task's Spearman
x100 by more than 0.02; on CPUs without native bf16, autocast can be slower than fp32."""

Aggregation = Literal["all", "wmean", "mean"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)

Protocol = Literal["senteval", "fast"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
DEFAULT_PROTOCOL: Protocol = "senteval"
