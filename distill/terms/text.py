"""L_intra, KDMCSE's text loss over the two dropout views (``loss.text``): SimCSE's InfoNCE or the
angular margin contrast (formulas: ``distill/losses/simcse.py``, ``distill/losses/angular_margin.py``).
When a term reshapes the text contrast (``Needs.reshapes_text``: AAHR's queue and cluster weights) or
``loss.focal_gamma`` > 0, the term is the general contrast's loss over the logits the objective built
(:class:`distill.losses.WeightedInfoNCELoss`)."""
from __future__ import annotations

from torch import Tensor

from distill.losses.angular_margin import AngularMarginLoss
from distill.losses.simcse import SimCSELoss
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Term, register_term


@register_term("text", order=10)
class TextTerm(Term):
    """``text``, weight 1: the plain loss, or the general contrast's when the step reshaped it."""

    citation = "SimCSE: Gao et al., EMNLP 2021; angular margin: KDMCSE, Nguyen et al., NAACL 2024"

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.text_loss = SimCSELoss(temperature=cfg.temperature) if cfg.text == "simcse" else \
            AngularMarginLoss(margin=cfg.text_margin, temperature=cfg.temperature)

    @classmethod
    def build(cls, loss: LossConfig, section: None, dims: Dims) -> TextTerm | None:
        return cls(loss) if loss.text != "none" else None

    @classmethod
    def card_rows(cls, loss: LossConfig, section: None) -> list[CardRow]:
        if loss.text == "simcse":
            return [("SimCSE InfoNCE (text)", 1.0, f"temperature {loss.temperature}")]
        if loss.text == "angular":
            return [("angular margin contrastive (text)", 1.0,
                     f"temperature {loss.temperature}, margin {loss.text_margin}")]
        return []

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        if not step.text_reshaped:
            return {"text": self.text_loss(step.z1, step.candidates, exclude=step.exclude, positive_offset=step.offset)}
        return {"text": step.text_contrast.from_logits(step.text_logits, step.offset, step.text_exclude)}
