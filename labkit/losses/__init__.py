"""Losses for embedding-based instance segmentation, one module per method family.

* :mod:`labkit.losses.discriminative`: De Brabandere et al. 2017 (pull / push / regularise).
* :mod:`labkit.losses.recurrent`: Kong & Fowlkes 2018 pairwise cosine loss and
  its accumulation over recurrent mean-shift iterates.
* :mod:`labkit.losses.margins`: Kong & Fowlkes Sec. 3.2, how far apart N instances
  can be placed on a sphere (choice of the margin alpha).
* :mod:`labkit.losses.dvis`: DVIS (NeurIPS 2020) binary, permutation-invariant pairwise,
  Mumford-Shah and quantisation terms on a one-channel label map.
"""
from labkit.losses.discriminative import DiscriminativeLoss, discriminative_loss
from labkit.losses.dvis import DVISLoss, dvis_loss, stratified_offsets
from labkit.losses.margins import (
    max_instances_for_margin,
    max_margin_for_instances,
    spread_on_sphere,
    tammes_alpha_bound,
)
from labkit.losses.recurrent import (
    PairwiseEmbeddingLoss,
    PixelSample,
    RecurrentGroupingLoss,
    pair_loss,
    pairwise_embedding_loss,
    recurrent_grouping_loss,
    sample_pixels,
)

__all__ = [
    "DVISLoss",
    "DiscriminativeLoss",
    "PairwiseEmbeddingLoss",
    "PixelSample",
    "RecurrentGroupingLoss",
    "discriminative_loss",
    "dvis_loss",
    "max_instances_for_margin",
    "max_margin_for_instances",
    "pair_loss",
    "pairwise_embedding_loss",
    "recurrent_grouping_loss",
    "sample_pixels",
    "spread_on_sphere",
    "stratified_offsets",
    "tammes_alpha_bound",
]
