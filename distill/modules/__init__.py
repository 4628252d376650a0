"""Optional objective modules from related methods (docs/modules.md), each off by default.

The objective (:mod:`distill.objective`) builds a module only when its ``loss.*`` switch is on and calls
it with the step's tensors; each module adds named terms. Files: ``aahr.py`` (queue, prototypes, soft
positives), ``soft_mask.py`` (text-driven soft-masked view, focal weights), ``mmref.py`` (multi-modal
references), ``dias.py`` (dimension alignment, sparse relations), ``text_contrast.py`` (the text loss in
the general form those modules reshape).
"""
from .aahr import AAHR
from .dias import DIAS
from .mmref import MMRef
from .soft_mask import SoftMaskView, focal_weights, normalise_saliency
from .text_contrast import TextContrast

__all__ = ["AAHR", "DIAS", "MMRef", "SoftMaskView", "TextContrast", "focal_weights", "normalise_saliency"]
