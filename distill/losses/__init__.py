"""Losses for distilling a vision-language teacher into a sentence encoder (KDMCSE and relatives).

One loss per file; every loss is an ``nn.Module`` on tensors (the trainer computes embeddings, heads
and teacher targets). Shared conventions (see ``_common``): anchors ``[B, d]``, candidates ``[N, d]``,
positive of anchor ``i`` at ``positive_offset + i``, ``exclude [B, N]`` bool removes false negatives
(never the positive), cosines of L2-normalised inputs computed in float32 or higher.
"""
from ._common import cosine_logits, cosine_matrix, positive_mask
from .aahr import MomentumQueue, OnlinePrototypes, same_cluster_weights
from .adapacse import AdapACSELoss, adaptive_margin_logits
from .angular_margin import AngularMarginLoss, angular_margin_cosines, angular_margin_logits
from .dias import DimensionAlignmentLoss, SparseRelationLoss, top_k_neighbours
from .false_negatives import cross_modal_mask, gist_mask, same_image_mask, threshold_mask
from .mcse import MCSEGroundingLoss
from .mmref import ReferenceAlignmentLoss, build_references, rerank_with_references
from .regression import EmbeddingRegressionLoss
from .simcse import SimCSELoss
from .soft_target import SoftTargetKLLoss, soft_target_kl
from .weighted_info_nce import WeightedInfoNCELoss, focal_weights

__all__ = [
    # contrastive losses
    "SimCSELoss",
    "AngularMarginLoss",
    "AdapACSELoss",
    "MCSEGroundingLoss",
    "WeightedInfoNCELoss",
    "ReferenceAlignmentLoss",
    # distillation losses
    "SoftTargetKLLoss",
    "EmbeddingRegressionLoss",
    "DimensionAlignmentLoss",
    "SparseRelationLoss",
    # state
    "MomentumQueue",
    "OnlinePrototypes",
    # false-negative masks and weights
    "same_image_mask",
    "threshold_mask",
    "gist_mask",
    "cross_modal_mask",
    "same_cluster_weights",
    # pure functions
    "cosine_matrix",
    "cosine_logits",
    "positive_mask",
    "angular_margin_cosines",
    "angular_margin_logits",
    "adaptive_margin_logits",
    "soft_target_kl",
    "focal_weights",
    "top_k_neighbours",
    "build_references",
    "rerank_with_references",
]
