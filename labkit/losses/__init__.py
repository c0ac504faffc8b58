"""Losses for embedding-based instance segmentation, one module per method family.

* :mod:`labkit.losses.discriminative`: De Brabandere et al. 2017 (pull / push / regularise).
* :mod:`labkit.losses.recurrent`: Kong & Fowlkes 2018 pairwise cosine loss and
  its accumulation over recurrent mean-shift iterates.
* :mod:`labkit.losses.margins`: Kong & Fowlkes Sec. 3.2, how far apart N instances
  can be placed on a sphere (choice of the margin alpha).
* :mod:`labkit.losses.lovasz`: Berman et al. 2018 Lovász hinge and Lovász-softmax (IoU surrogates).
* :mod:`labkit.losses.dvis`: DVIS (NeurIPS 2020) binary, permutation-invariant pairwise,
  Mumford-Shah and quantisation terms on a one-channel label map.
* :mod:`labkit.losses.irnet`: IRNet (Ahn et al. 2019) pair offsets, boundary affinities (Eq. 7),
  displacement and boundary losses (Eq. 5, 6, 8, 9).
"""
from labkit.losses.discriminative import DiscriminativeLoss, discriminative_loss
from labkit.losses.dvis import DVISLoss, dvis_loss, stratified_offsets
from labkit.losses.irnet import IRNetLoss, irnet_loss, pair_affinity, pair_offsets
from labkit.losses.lovasz import LovaszHinge, LovaszSoftmax, lovasz_binary, lovasz_grad, lovasz_hinge, lovasz_softmax
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
    "IRNetLoss",
    "LovaszHinge",
    "LovaszSoftmax",
    "PairwiseEmbeddingLoss",
    "PixelSample",
    "RecurrentGroupingLoss",
    "discriminative_loss",
    "lovasz_binary",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_softmax",
    "dvis_loss",
    "irnet_loss",
    "max_instances_for_margin",
    "max_margin_for_instances",
    "pair_affinity",
    "pair_loss",
    "pair_offsets",
    "pairwise_embedding_loss",
    "recurrent_grouping_loss",
    "sample_pixels",
    "spread_on_sphere",
    "stratified_offsets",
    "tammes_alpha_bound",
]
