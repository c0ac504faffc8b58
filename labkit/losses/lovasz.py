"""Lovász losses: convex surrogates of the Jaccard (IoU) loss (Berman, Rannen Triki & Blaschko, CVPR 2018).

The Jaccard loss of a set of mispredicted pixels ``M`` is
``Delta_J(M) = |M| / |F u M|`` (``F`` the ground-truth positives), i.e.
``1 - IoU``.  It is submodular, so its Lovász extension is convex and
piecewise linear: sort the per-pixel errors ``xi`` in decreasing order
(permutation ``pi``), and

    ``loss(xi) = sum_i xi_{pi_i} g_i``,   ``g_i = Delta_J({pi_1..pi_i}) - Delta_J({pi_1..pi_{i-1}})``

(HLE paper, Kerola et al. 2021, Eq. 3-5, written there with IoU differences
``IoU(pi_1..pi_{i-1}) - IoU(pi_1..pi_i)``, the same numbers).  On binary
errors (``xi`` in ``{0, 1}``) the extension is exact: it equals ``1 - IoU``.
``g`` is what :func:`lovasz_grad` computes, with the reference implementation's
closed form ``Delta_J = 1 - I/U``, ``I = sum(t) - cumsum(t_sorted)``,
``U = sum(t) + cumsum(1 - t_sorted)``.  With no positive at all
(``sum(t) = 0``) the IoU of the empty prediction is taken as 1, so the loss is
the largest error (any false positive makes the IoU 0).

Functions (pure, differentiable with respect to the scores):

* :func:`lovasz_binary` (Eq. 3-5): probabilities ``p`` in ``[0, 1]``, errors
  ``xi = 1 - p`` on positives and ``p`` on negatives (Eq. 4).
* :func:`lovasz_hinge`: Berman's binary hinge on real-valued logits ``s``
  (errors ``[1 - s (2t - 1)]_+``); ``lovasz_hinge(2p - 1, t) = 2 lovasz_binary(p, t)``,
  which is how SpatialEmbeddings (Neven et al. 2019) and HLE apply it to a
  kernel value.
* :func:`lovasz_softmax` (Eq. 6): one binary problem per class on the class
  probabilities, errors ``|t^c - p^c|``, averaged over the classes.

The paper's Eq. 6 averages over all classes ``C``; Berman's reference code
defaults to the classes present in the ground truth.  ``classes="all"`` (the
paper, our default) or ``"present"`` selects between them.  Pixels labelled
``ignore_index`` take no part.  Bad shapes, non-integer or out-of-range
labels, NaNs and unknown options raise :class:`labkit.errors.LabkitError`.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from labkit.errors import LabkitError

IGNORE_INDEX = 255


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """``g`` of the Lovász extension of the Jaccard loss for labels sorted by decreasing error.

    ``gt_sorted`` ``[..., N]`` binary (any dtype), one set per row; returns
    ``[..., N]`` float, the increments ``Delta_J(first i) - Delta_J(first i-1)`` (Eq. 5).
    """
    gts = gt_sorted.sum(-1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(-1)
    union = gts + (1 - gt_sorted).cumsum(-1)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[-1] > 1:
        jaccard = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
    return jaccard


def _flat_binary(scores: Tensor, labels: Tensor, ignore_index: int | None, name: str) -> tuple[Tensor, Tensor]:
    if scores.shape != labels.shape:
        raise LabkitError(f"{name}: scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ in shape")
    if labels.is_floating_point() or labels.is_complex():
        raise LabkitError(f"{name}: labels must be an integer or bool tensor, got {labels.dtype}")
    if not scores.is_floating_point():
        raise LabkitError(f"{name}: scores must be floating point, got {scores.dtype}")
    if torch.isnan(scores).any():
        raise LabkitError(f"{name}: scores contain NaN")
    scores, labels = scores.reshape(-1), labels.reshape(-1).long()
    if ignore_index is not None:
        keep = labels != ignore_index
        scores, labels = scores[keep], labels[keep]
    if ((labels != 0) & (labels != 1)).any():
        raise LabkitError(f"{name}: labels must be 0 or 1 (or ignore_index), got {sorted(labels.unique().tolist())[:5]}")
    return scores, labels


def _extension(errors: Tensor, labels: Tensor) -> Tensor:
    """``sum_i errors_sorted_i g_i`` along the last dimension, one set per row (``[..., N] -> [...]``;
    0, still attached to ``errors``, where there is no pixel)."""
    if errors.shape[-1] == 0:
        return errors.sum(-1) * 0.0
    errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)
    grad = lovasz_grad(labels.gather(-1, perm).to(errors.dtype))
    return (errors_sorted * grad).sum(-1)


def lovasz_binary(probs: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """Eq. 3-5: the Lovász extension of ``1 - IoU`` at the errors ``xi`` of Eq. 4.

    ``probs`` any shape, values in ``[0, 1]`` (the score of the positive
    class); ``labels`` the same shape, 0/1 (``ignore_index`` pixels left out).
    All pixels form one set (flatten per image and call once per image for a
    per-image loss).
    """
    probs, labels = _flat_binary(probs, labels, ignore_index, "lovasz_binary")
    errors = torch.where(labels == 1, 1 - probs, probs)
    return _extension(errors, labels)


def lovasz_binary_rows(probs: Tensor, labels: Tensor) -> Tensor:
    """:func:`lovasz_binary` of each row of ``probs [R, N]`` against 0/1 ``labels [R, N]``: ``[R]``.

    One sort per row in a single call (HLE's Eq. 11 scores every instance of an image this way)."""
    if probs.ndim != 2 or probs.shape != labels.shape:
        raise LabkitError(f"lovasz_binary_rows: probs and labels must be [R, N] alike, got "
                          f"{tuple(probs.shape)} and {tuple(labels.shape)}")
    labels = labels.long()
    errors = torch.where(labels == 1, 1 - probs, probs)
    return _extension(errors, labels)


def lovasz_hinge(logits: Tensor, labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """Berman et al.'s binary Lovász hinge on real scores: errors ``[1 - s (2t - 1)]_+``, sorted, dotted with ``g``.

    ``logits`` any shape, real; ``labels`` 0/1 of the same shape.  One set of
    pixels, like :func:`lovasz_binary`.
    """
    logits, labels = _flat_binary(logits, labels, ignore_index, "lovasz_hinge")
    signs = 2.0 * labels.to(logits.dtype) - 1.0
    errors = torch.relu(1.0 - logits * signs)
    return _extension(errors, labels)


def lovasz_softmax(
    probs: Tensor,
    labels: Tensor,
    classes: Literal["all", "present"] = "all",
    ignore_index: int | None = IGNORE_INDEX,
) -> Tensor:
    """Eq. 6: mean over classes of the Lovász extension of each class's Jaccard loss.

    ``probs`` ``[B, K, H, W]`` (or ``[N, K]``) class probabilities;
    ``labels`` ``[B, H, W]`` (or ``[N]``) integer classes in ``0..K-1`` or
    ``ignore_index``.  All pixels of the batch form one set per class.
    ``classes="all"`` averages over the ``K`` classes (Eq. 6), ``"present"``
    over those in ``labels`` (Berman's default; 0 when none is).
    """
    if classes not in ("all", "present"):
        raise LabkitError(f"lovasz_softmax: classes must be 'all' or 'present', got {classes!r}")
    if probs.ndim == 4:
        if labels.shape != (probs.shape[0], *probs.shape[2:]):
            raise LabkitError(
                f"lovasz_softmax: probs [B,K,H,W] {tuple(probs.shape)} and labels [B,H,W] {tuple(labels.shape)} do not match"
            )
        probs = probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1])
    elif probs.ndim == 2:
        if labels.shape != probs.shape[:1]:
            raise LabkitError(
                f"lovasz_softmax: probs [N,K] {tuple(probs.shape)} and labels [N] {tuple(labels.shape)} do not match"
            )
    else:
        raise LabkitError(f"lovasz_softmax: probs must be [B,K,H,W] or [N,K], got {tuple(probs.shape)}")
    if labels.is_floating_point():
        raise LabkitError(f"lovasz_softmax: labels must be integers, got {labels.dtype}")
    if not probs.is_floating_point() or torch.isnan(probs).any():
        raise LabkitError("lovasz_softmax: probs must be floating point without NaN")
    labels = labels.reshape(-1).long()
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    num_classes = probs.shape[1]
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise LabkitError(f"lovasz_softmax: labels must lie in 0..{num_classes - 1}, got {sorted(labels.unique().tolist())[:5]}")
    wanted = range(num_classes) if classes == "all" else labels.unique().tolist()
    losses = []
    for c in wanted:
        fg = (labels == c).long()
        errors = (fg.to(probs.dtype) - probs[:, c]).abs()
        losses.append(_extension(errors, fg))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


class LovaszHinge(nn.Module):
    """Module form of :func:`lovasz_hinge` (``forward(logits, labels)``)."""

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return lovasz_hinge(logits, labels, self.ignore_index)


class LovaszSoftmax(nn.Module):
    """Module form of :func:`lovasz_softmax` on logits or probabilities.

    ``from_logits=True`` applies a softmax over dimension 1 first.
    """

    def __init__(
        self, classes: Literal["all", "present"] = "all", ignore_index: int | None = IGNORE_INDEX,
        from_logits: bool = True,
    ) -> None:
        super().__init__()
        if classes not in ("all", "present"):
            raise LabkitError(f"LovaszSoftmax: classes must be 'all' or 'present', got {classes!r}")
        self.classes, self.ignore_index, self.from_logits = classes, ignore_index, from_logits

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        probs = scores.softmax(dim=1) if self.from_logits else scores
        return lovasz_softmax(probs, labels, self.classes, self.ignore_index)


__all__ = ["LovaszHinge", "LovaszSoftmax", "lovasz_binary", "lovasz_grad", "lovasz_hinge", "lovasz_softmax"]
