"""Optional objective modules from related methods (docs/modules.md), each off unless its section is set.

Each module is a ``distill.term.Term`` registered under its ``loss.<module>`` section; the objective
(:mod:`distill.objective`) builds it only when that section is present and asks it for its terms
(named, already weighted) with the step's shared tensors (docs/extending.md). Files:
``aahr.py`` (queue, prototypes, soft positives), ``soft_mask.py`` (text-driven soft-masked view),
``mmref.py`` (multi-modal references), ``dias.py`` (dimension alignment, sparse relations). The text
contrast they reshape is :class:`distill.losses.WeightedInfoNCELoss`.
"""
from .aahr import AAHR
from .dias import DIAS
from .mmref import MMRef
from .soft_mask import SoftMaskView, normalise_saliency, swap_positive

__all__ = ["AAHR", "DIAS", "MMRef", "SoftMaskView", "normalise_saliency", "swap_positive"]
