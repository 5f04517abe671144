"""Losses: GHM-C and the GHM ranking loss, the multi-task losses, and ways to weight tasks.

- :mod:`~gradkit.losses.ghm`        ``GHMC``, ``GHMRanking``: gradient-harmonised losses
- :mod:`~gradkit.losses.ranking`    the smooth pairwise ranking loss of the score head
- :mod:`~gradkit.losses.tasks`      detection and classification losses of notebook 04
- :mod:`~gradkit.losses.weighting`  ``FixedWeights``, ``GradNorm``, ``UncertaintyWeighting``,
  ``PCGrad``
"""

from gradkit.losses.ghm import GHMC, GHMRanking, bin_edges, bin_index, ghm_weights
from gradkit.losses.ranking import pairwise_ranking_loss, ranking_margins, ranking_pairs
from gradkit.losses.tasks import (
    box_iou,
    classification_loss,
    decode_boxes,
    detection_loss,
    encode_boxes,
)
from gradkit.losses.weighting import (
    FixedWeights,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    pcgrad_project,
)

__all__ = [
    "GHMC", "FixedWeights", "GHMRanking", "GradNorm", "PCGrad", "UncertaintyWeighting",
    "bin_edges", "bin_index", "box_iou", "classification_loss", "decode_boxes",
    "detection_loss", "encode_boxes", "ghm_weights", "pairwise_ranking_loss", "pcgrad_project",
    "ranking_margins", "ranking_pairs",
]
