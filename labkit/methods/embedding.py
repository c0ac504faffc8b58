"""Pieces shared by the embedding methods (``discriminative``, ``recurrent``).

Both train a semantic head alongside the embedding (cross-entropy against
:func:`semantic_target`) and decode by clustering the embeddings of the
predicted foreground pixels (:func:`foreground`); :func:`build_prediction`
turns the resulting cluster map into a prediction (DESIGN.md, "Data contract"):

* clusters smaller than ``min_area`` pixels are dropped;
* clusters thinner than ``min_radius`` (off by default) give their pixels to
  their neighbours (:func:`absorb_thin_instances`): mean shift leaves the
  pixels on the border between two touching objects, whose embeddings lie
  between the two objects', as a band of their own, a false positive;
* an instance's class is the *foreground* class (one of ``1..K-1``, never
  background) with the highest mean log-probability over its pixels, the
  pooling :func:`labkit.methods.semantic.instance_cross_entropy` trains (a
  few sure pixels outvote many unsure ones, unlike a majority of pixel votes);
* its score is ``confidence * class_share * quality``: ``confidence`` is the
  mean predicted foreground probability ``1 - p(background)`` over the
  instance's pixels, ``class_share`` the mean share of that foreground
  probability that goes to the instance's class (1 with a single class), and
  ``quality`` (in ``[0, 1]``) a per-cluster compactness supplied by the
  method.  All three make AP meaningful: a blob the semantic head is unsure
  about, an instance whose class is in doubt (per-class AP ranks it below the
  sure ones), or a loose cluster that mean shift
  barely held together ranks below a confident, tight one.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from skimage import measure
from torch import Tensor

from labkit.clustering.thin import absorb_thin_instances
from labkit.methods.base import Batch, Prediction


def unet_defaults(params: Any, backbone: str, backbone_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``backbone_kwargs`` with the method's ``width``, ``depth`` and ``coords`` filled in for the UNet."""
    kwargs = dict(backbone_kwargs)
    if backbone == "unet":
        for name in ("width", "depth", "coords"):
            kwargs.setdefault(name, getattr(params, name))
    return kwargs


def foreground(logits: Tensor, things: tuple[int, ...] | list[int] | None = None) -> tuple[Tensor, Tensor]:
    """``(probabilities [K,H,W], mask [H,W])`` of one image's semantic logits ``[K,H,W]``.

    A pixel is foreground when the background probability is below 1/2 (not
    when background is merely the single most likely class: with ten digit
    classes sharing the foreground probability, background would win the
    argmax on most object pixels) and, when ``things`` is given, its most
    likely foreground class is one of those countable classes.
    """
    probs = torch.softmax(logits.float(), dim=0)
    mask = probs[0] < 0.5
    if things is not None:
        best = probs[1:].argmax(dim=0) + 1
        mask &= torch.isin(best, torch.as_tensor(list(things), dtype=best.dtype, device=best.device))
    return probs, mask


def empty_prediction(height: int, width: int, device: torch.device | str = "cpu") -> Prediction:
    """A prediction without any instance."""
    return {
        "instances": torch.zeros(height, width, dtype=torch.int64, device=device),
        "ids": torch.zeros(0, dtype=torch.int64, device=device),
        "classes": torch.zeros(0, dtype=torch.int64, device=device),
        "scores": torch.zeros(0, dtype=torch.float32, device=device),
    }


def build_prediction(
    labels: Tensor,
    probs: Tensor,
    quality: Tensor | None = None,
    *,
    min_area: int = 1,
    min_radius: float = 0.0,
) -> Prediction:
    """A scored prediction from a cluster map.

    Args:
        labels: int ``[H,W]``; ``0`` = no instance, ``1..N`` = cluster ``k-1``.
        probs: float ``[K,H,W]`` class probabilities (``K >= 2``, 0 = background).
        quality: float ``[N]`` in ``[0, 1]``, one per cluster (default 1); ``N`` may
            exceed ``labels.max()`` (clusters without pixels are dropped).
        min_area: clusters with fewer pixels are dropped.
        min_radius: clusters thinner than this give their pixels to their
            neighbours first (:func:`absorb_thin_instances`; 0 = off).

    Returns:
        ``instances`` (ids renumbered ``1..M`` by decreasing score), ``ids``,
        ``classes``, ``scores``.
    """
    height, width = labels.shape
    labels = labels.to(torch.int64)
    labels = absorb_thin_instances(labels, min_radius)
    n = int(labels.max()) if labels.numel() else 0
    if quality is not None:
        n = max(n, len(quality))
    if n == 0:
        return empty_prediction(height, width, labels.device)
    quality = torch.ones(n, device=labels.device) if quality is None else quality.float().to(labels.device)
    flat = labels.reshape(-1)
    inside = flat > 0
    cluster = flat[inside] - 1
    area = torch.bincount(cluster, minlength=n)
    fg_classes = probs[1:].reshape(probs.shape[0] - 1, -1)[:, inside]  # [K-1, P]
    log_probs = fg_classes.float().clamp(min=1e-12).log().t()  # [P, K-1]
    pooled = torch.zeros(n, probs.shape[0] - 1, device=labels.device).index_add_(0, cluster, log_probs)
    cls = pooled.argmax(dim=1)  # [N], foreground class index - 1: highest mean log-probability
    pixel_conf = 1 - probs[0].reshape(-1)[inside].float()
    confidence = torch.zeros(n, device=labels.device).index_add_(0, cluster, pixel_conf) / area.clamp(min=1)
    share = fg_classes.gather(0, cls[cluster][None])[0] / pixel_conf.clamp(min=1e-6)
    class_share = torch.zeros(n, device=labels.device).index_add_(0, cluster, share.float()) / area.clamp(min=1)
    scores = (confidence * quality.clamp(0, 1) * class_share).clamp(0, 1)
    keep = (area >= max(int(min_area), 1)).nonzero(as_tuple=True)[0]
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    remap = torch.zeros(n + 1, dtype=torch.int64, device=labels.device)
    remap[keep + 1] = torch.arange(1, len(keep) + 1, device=labels.device)
    return {
        "instances": remap[labels],
        "ids": torch.arange(1, len(keep) + 1, dtype=torch.int64, device=labels.device),
        "classes": cls[keep] + 1,
        "scores": scores[keep].float(),
    }


#: ``min_radius`` on an image folder (``folder_params``), pixels: bands up to 6 pixels wide between touching
#: objects join their neighbours, objects 7 or more pixels across are kept (the ``nuclei`` family's smallest
#: have a semi-minor axis of 4.8); the measurement: benchmarks/RESULTS.md, own-images section
THIN_RADIUS = 4.0


def radius_grid(default: float) -> list[float]:
    """The ``min_radius`` values ``labkit tune`` tries: off, :data:`THIN_RADIUS` and the method's default."""
    return sorted({0.0, THIN_RADIUS, float(default)})


def semantic_target(batch: Batch) -> Tensor:
    """The batch's ``semantic`` map, or ``instances > 0`` when the data has none."""
    semantic = batch.get("semantic")
    if semantic is None:
        semantic = (batch["instances"] > 0).long()
    return semantic


def split_components(labels: Tensor, quality: Tensor, min_fraction: float = 0.25) -> tuple[Tensor, Tensor]:
    """Give every substantial 8-connected piece of every cluster its own label.

    A translation-equivariant network can map two look-alike objects in
    different places to the same embedding; their pixels then form one
    cluster of several separate pieces.  A piece becomes an instance of its
    own when it has at least ``min_fraction`` of the pixels of its cluster's
    largest piece; smaller crumbs (a ragged foreground) stay with the largest
    piece.  ``labels`` int ``[H,W]`` (0 = none, ``k`` = cluster ``k-1``),
    ``quality [N]``; returns the new label map and each label's quality (its
    cluster's).
    """
    return _regroup_pieces(labels, quality, min_fraction, lambda piece, inside: piece)


def split_classes(
    labels: Tensor, classes: Tensor, quality: Tensor, min_fraction: float = 0.25
) -> tuple[Tensor, Tensor]:
    """Split every cluster into its spatially separate pieces of different classes.

    For an embedding trained per semantic class, instances of different
    classes are never pushed apart, so one cluster may hold, say, a disk and
    a square in different places.  Each cluster is cut into its 8-connected
    pieces; pieces with fewer than ``min_fraction`` of the pixels of the
    largest piece (crumbs of a ragged foreground) join the largest; each
    remaining piece is given its majority predicted class, and the pieces of
    one class stay together as one instance.  A cluster of one class (every
    cluster, with one class) is left whole, so a stick cut in two by a
    crossing stick stays one instance.  ``labels`` int ``[H,W]`` (0 = none,
    ``k`` = cluster ``k-1``), ``classes`` int ``[H,W]`` (the predicted class per
    pixel), ``quality [N]``; returns the new label map and each label's
    quality (its cluster's).
    """
    cls = classes.cpu().numpy()

    def majority_class(piece: np.ndarray, inside: np.ndarray) -> np.ndarray:
        votes = np.zeros((piece.max() + 1, int(cls.max()) + 1), dtype=np.int64)
        np.add.at(votes, (piece, cls[inside]), 1)
        return votes.argmax(axis=1)[piece]

    return _regroup_pieces(labels, quality, min_fraction, majority_class)


def _regroup_pieces(
    labels: Tensor, quality: Tensor, min_fraction: float, key: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[Tensor, Tensor]:
    """Relabel each cluster of ``labels`` by a key of its 8-connected pieces.

    A cluster's pieces with fewer than ``min_fraction`` of the pixels of its
    largest piece (the first in raster order among equals) join the largest;
    ``key(piece, inside)`` maps every clustered pixel (``piece``: its piece
    index, ``inside``: the mask of clustered pixels) to a group, and each
    (cluster, group) becomes one label with its cluster's quality, numbered by
    cluster, then by group.  Returns the new label map and each label's quality.
    The pieces of every cluster come from one labelling of the whole map
    (neighbours with equal labels connect), not one pass per cluster.
    """
    arr = labels.cpu().numpy()
    out = np.zeros_like(arr)
    inside = arr > 0
    if not inside.any():
        return torch.from_numpy(out).to(labels.device), torch.zeros(0, dtype=torch.float32)
    components = measure.label(arr, background=0, connectivity=2)
    count = int(components.max())
    sizes = np.bincount(components[inside], minlength=count + 1)[1:]
    pieces = np.arange(1, count + 1)
    cluster = np.zeros(count, dtype=np.int64)
    cluster[components[inside] - 1] = arr[inside]
    order = np.lexsort((pieces, -sizes, cluster))  # by cluster, then largest first, then raster order
    first = order[np.r_[True, cluster[order][1:] != cluster[order][:-1]]]
    largest = np.zeros(int(arr.max()) + 1, dtype=np.int64)
    largest[cluster[first]] = pieces[first]
    piece = np.arange(count + 1)
    crumbs = sizes < min_fraction * sizes[largest[cluster] - 1]
    piece[1:][crumbs] = largest[cluster][crumbs]
    group = np.asarray(key(piece[components[inside]], inside), dtype=np.int64)
    width = int(group.max()) + 1
    values, new = np.unique(arr[inside].astype(np.int64) * width + group, return_inverse=True)  # (cluster, group)
    out[inside] = new.reshape(-1) + 1
    clusters = values // width
    return torch.from_numpy(out).to(labels.device), quality.detach().float().cpu()[torch.from_numpy(clusters - 1)]
