"""A loss term written outside the package, as a user would (docs/extending.md): an alignment term
``weight * mean ||z1 - z2||^2`` over the two dropout views, with its own typed config section
``loss.toy``. Importing this module registers it; nothing in distill/ names it."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from distill.step import StepTensors
from distill.term import Needs, Term, register_term
from kdmcse_base.typed_config import POSITIVE


@dataclass(frozen=True)
class ToyConfig:
    weight: float = field(default=1.0, metadata=POSITIVE)


@register_term("toy", section=ToyConfig)
class ToyAlignment(Term):
    needs = Needs(two_views=True)
    citation = "tests/toy_term.py"

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.weight = cfg.weight
        self.steps_seen = 0

    def observe(self, step: StepTensors) -> None:
        self.steps_seen += 1

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        return {"toy": self.weight * (step.z1 - step.z2).pow(2).sum(-1).mean()}
