"""The recipes this project names: each one a set of overrides of ``configs/kdmcse_offline.yaml``.

The offline benchmarks (``benchmarks/offline_distill.py``, ``benchmarks/race_st.py``) train and compare
them, and ``tests/test_modules_objective_recorded.py`` records every objective they train, so a change
to a loss term shows up against each recipe that uses it. A recipe of ``trainer="sentence_transformers"``
is that library's own training recipe (``benchmarks/st_recipe.py``); its overrides only say what it
optimises.
"""
from __future__ import annotations

from dataclasses import dataclass

from distill.config import configs_dir

CONFIG = configs_dir() / "kdmcse_offline.yaml"  # every recipe is overrides of the KDMCSE setup

_PLAIN = ["loss.false_negative_filter=none", "loss.soft_target_weight=0", "loss.regression_weight=0"]
_KDMCSE = ["loss.text=angular", "loss.multimodal=adapacse", "loss.false_negative_filter=threshold",
           "loss.same_image_mask=true", "loss.soft_target_weight=0", "loss.regression_weight=0"]

_REGRESSION = ("loss.text=none", "loss.multimodal=none", *_PLAIN[:2], "loss.regression_weight=1")
# Spread layers, and text batches of sentences of similar length: 1.77x the steps/s of padding every batch
# to its longest sentence, at equal STS-B dev for equal steps (reports/step_levers.md).
_SPREAD = ("student.layer_choice=spread", "train.length_grouped=true")
# A static student's step is a tokeniser and an embedding bag: larger batches and a larger learning rate
# than a transformer's (chosen on STS-B dev: reports/student_frontier.md).
_STATIC = ("student.kind=static", "student.layers=null", "student.static_dim=256", "train.batch_size=256",
           "train.lr=0.003")
_DIAS = ["loss.dias.dimension_weight=0.0001", "loss.dias.relation_weight=1.0", "loss.dias.top_k=5"]


@dataclass(frozen=True)
class Method:
    """A named recipe: ``overrides`` of ``CONFIG``; ``multimodal``: it trains on image-caption batches."""

    name: str
    label: str
    overrides: tuple[str, ...]
    multimodal: bool
    trainer: str = "project"
    """``project``: distill.trainer; ``sentence_transformers``: that library's own recipe (st_recipe.py)."""


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("simcse", "SimCSE", ("loss.text=simcse", "loss.multimodal=none", "loss.same_image_mask=false",
                                *_PLAIN), False),
    Method("mcse", "MCSE", ("loss.text=simcse", "loss.multimodal=mcse", *_PLAIN), True),
    Method("kdmcse", "KDMCSE", tuple(_KDMCSE), True),
    Method("kdmcse_kl", "KDMCSE + soft-target KL", (*_KDMCSE, "loss.soft_target_weight=1"), True),
    Method("regression", "Embedding regression (MSE)", _REGRESSION, False),
    Method("kdmcse_kl_mse", "KDMCSE + KL + regression", (*_KDMCSE, "loss.soft_target_weight=1",
                                                         "loss.regression_weight=100"), True),
    # Ablations: each related method added to the KDMCSE configuration (docs/modules.md).
    Method("kdmcse_aahr", "KDMCSE + AAHR", (*_KDMCSE, "loss.aahr.queue_size=512", "loss.aahr.prototypes=32",
                                            "loss.aahr.weight=0.1", "loss.aahr.cluster_negative_weight=0.5"), True),
    Method("kdmcse_softmask", "KDMCSE + soft masks / focal", (*_KDMCSE, "loss.focal_gamma=2.0",
                                                               "loss.soft_mask.weight=1.0",
                                                               "loss.soft_mask.strength=1.0"), True),
    Method("kdmcse_mmref", "KDMCSE + MMRef", (*_KDMCSE, "loss.mmref.weight=0.01", "loss.mmref.alpha=0.5"), True),
    Method("kdmcse_dias", "KDMCSE + DIAS", (*_KDMCSE, *_DIAS), True),
    # Combinations that try to beat plain regression: keep the pointwise target, add relational ones.
    Method("regression_kl", "Regression + soft-target KL", ("loss.text=none", "loss.multimodal=none",
                                                            *_PLAIN[:1], "loss.soft_target_weight=1",
                                                            "loss.regression_weight=100"), False),
    Method("adapacse_kl_mse", "AdapACSE + KL + regression (no text contrast)",
           (*_KDMCSE, "loss.text=none", "loss.soft_target_weight=1", "loss.regression_weight=100"), True),
    Method("kdmcse_kl_mse_dias", "KDMCSE + KL + regression + DIAS",
           (*_KDMCSE, "loss.soft_target_weight=1", "loss.regression_weight=100", *_DIAS), True),
    # The anchor users would otherwise pick, and the layer choice it makes, in the project's trainer.
    Method("st_recipe", "sentence-transformers recipe (spread layers, MSELoss)", (*_REGRESSION, "train.precision=fp32"),
           False, trainer="sentence_transformers"),  # its own trainer, in fp32 as its example trains
    Method("st_recipe_bf16", "sentence-transformers recipe (spread layers, MSELoss, bf16)", _REGRESSION, False,
           trainer="sentence_transformers"),  # the same under the bf16 autocast the project's rows use
    Method("regression_spread", "Embedding regression, spread layers", (*_REGRESSION, *_SPREAD), False),
    Method("regression_spread_two_views", "Embedding regression, spread layers, two dropout views",
           (*_REGRESSION, *_SPREAD, "loss.dropout_views=two"), False),
    Method("kdmcse_kl_mse_spread", "KDMCSE + KL + regression, spread layers",
           (*_KDMCSE, "loss.soft_target_weight=1", "loss.regression_weight=100", *_SPREAD), True),
    # The student frontier (benchmarks/student_frontier.py): other depths of the cut, and a static student.
    *(Method(f"regression_cut{k}", f"Embedding regression, {k} spread layer{'s' if k > 1 else ''}",
             (*_REGRESSION, *_SPREAD, f"student.layers={k}"), False) for k in (1, 2, 4)),
    Method("static_regression", "Static embeddings (Model2Vec init), regression", (*_REGRESSION, *_STATIC), False),
]}
