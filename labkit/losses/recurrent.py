"""Pairwise embedding loss of Kong & Fowlkes (CVPR 2018), "Recurrent Pixel Embedding".

Embeddings live on the unit sphere.  For pixels ``i, j`` with embeddings
``x_i, x_j`` and instance labels ``y_i, y_j``:

* Eq. (1)  calibrated cosine similarity ``s_ij = (1 + x_i.x_j / (|x_i| |x_j|)) / 2`` in ``[0, 1]``;
* Eq. (2)  ``l = sum_k sum_{i,j} w_i w_j / N_k (1[y_i = y_j] (1 - s_ij) + 1[y_i != y_j] [s_ij - alpha]_+)``:
  positive pairs pay ``1 - s``, negative pairs pay a hinge once their
  similarity exceeds the margin ``alpha`` (default 0.5, the paper's setting for
  64-dim embeddings; see :mod:`labkit.losses.margins`);
* Sec. 4.2: the same loss ``l^t`` at every loop ``t`` of the unrolled recurrent
  mean shift, including the initial embedding (``t = 0``), accumulated.

Choices, where the paper and the authors' code leave room:

* Instance-aware weights (Sec. 3.1): ``w_i = 1 / |I_q|`` with ``|I_q|`` the
  number of *sampled* pixels of ``i``'s instance, so a pair weighs
  ``1 / (n_i n_j)`` (authors' code) and every pair of instances counts equally
  whatever their size.
* Normalisation: Eq. (2) divides by the pixel count ``N_k``; we divide by
  ``sum_ij w_i w_j = Q^2`` (``Q`` instances in the sample), so the loss of an
  image is a weighted *mean* of pair penalties in ``[0, 1]`` that does not
  depend on how many pixels were sampled.  With the paper's batch of one image
  the two differ by a constant factor per image.
* ``weighting="balanced"`` (deviation, off by default): the positive term is
  divided by ``Q`` (the same-instance blocks) and the negative term by
  ``Q (Q - 1)`` (the ordered pairs of different instances), i.e. each is a
  mean of its own, as in the discriminative loss.  Under Eq. 2's single
  normalisation an instance's own pairs weigh ``1 / Q`` of the whole, so
  with many instances in view (``Q`` ~ 10-16 in a 128 x 128 crop of
  touching nuclei) a nucleus embedded as two or three directions costs
  little next to the negative pairs: the positive term is ``(Q - 1)`` times
  lighter than with the balanced weights.
* The sum runs over all ordered pairs ``i, j`` including ``i = j`` (as Eq. 2
  is written); a pixel paired with itself has ``s = 1`` and costs nothing.
* Sampling (Sec. 3.1, "uniform random sampling of pixels"): at most
  ``max_pixels`` pixels per image (authors' code: <= 4000), uniformly without
  replacement among the pixels not ignored; a ``torch.Generator`` makes it
  repeatable.
* Background: the paper labels every pixel with an instance (its boundary
  detector groups two labels, boundary and non-boundary), so by default
  background (id 0) is one more group that every instance is pushed away from.
  ``include_background=False`` leaves background pixels out instead.
* Batches: the loss of each image is computed on its own and averaged over the
  ``B`` images; an image without any sampled pixel contributes zero (still
  attached to the graph).  Across loops, ``reduction="sum"`` (the paper's
  "accumulate", default) or ``"mean"``.
* The positive term is evaluated exactly in ``O(N D)``: for the pixels of one
  instance, ``1/n^2 sum_{i,j} (1 - s_ij) = (1 - |mean_i x_i/|x_i||^2) / 2``.
  The negative term needs the ``N x N`` similarity matrix.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.errors import DataError


class PixelSample(NamedTuple):
    """Pixels sampled from one image.

    ``embedding [N, D]`` their embeddings, ``ids [N]`` their instance ids,
    ``index [N]`` their flat positions ``row * W + col`` in the image.
    """

    embedding: Tensor
    ids: Tensor
    index: Tensor


def sample_pixels(
    embedding: Tensor,
    instances: Tensor,
    *,
    max_pixels: int | None = 4000,
    generator: torch.Generator | None = None,
    ignore_mask: Tensor | None = None,
    include_background: bool = True,
) -> list[PixelSample]:
    """Uniformly sample at most ``max_pixels`` usable pixels per image (Sec. 3.1).

    Args:
        embedding: ``[B, D, H, W]``.
        instances: int ``[B, H, W]``, 0 = background.
        max_pixels: cap per image; ``None`` keeps every usable pixel.
        generator: random source (its device is used to draw the permutation).
        ignore_mask: optional bool ``[B, H, W]``, true where a pixel is ignored.
        include_background: keep background pixels (one more group).

    Returns:
        One :class:`PixelSample` per image; an image may yield ``N = 0`` pixels.
    """
    _check_shapes("sample_pixels", embedding, instances, ignore_mask)
    if max_pixels is not None and max_pixels < 1:
        raise DataError(f"sample_pixels: max_pixels must be >= 1 or None, got {max_pixels}")
    batch, dim = embedding.shape[:2]
    usable = torch.ones_like(instances, dtype=torch.bool)
    if ignore_mask is not None:
        usable &= ~ignore_mask.bool()
    if not include_background:
        usable &= instances != 0
    picked = []
    for b in range(batch):
        index = usable[b].reshape(-1).nonzero(as_tuple=True)[0]
        if max_pixels is not None and index.numel() > max_pixels:
            draw_on = generator.device if generator is not None else "cpu"
            pick = torch.randperm(index.numel(), generator=generator, device=draw_on)[:max_pixels]
            index = index[pick.to(index.device)]
        picked.append(index)
    # one gather over the whole batch: its backward fills one zero gradient, not one per image
    sizes = [index.numel() for index in picked]
    device = embedding.device
    image = torch.repeat_interleave(torch.arange(batch, device=device), torch.tensor(sizes, device=device))
    pixel = torch.cat(picked).to(device) if picked else image
    rows = embedding.reshape(batch, dim, -1)[image, :, pixel]  # [N, D]
    return [
        PixelSample(embedding=rows_b, ids=instances[b].reshape(-1)[index], index=index)
        for b, (index, rows_b) in enumerate(zip(picked, rows.split(sizes)))
    ]


WEIGHTINGS = ("paper", "balanced")


def pair_loss(x: Tensor, ids: Tensor, *, alpha: float = 0.5, weighting: str = "paper") -> dict[str, Tensor]:
    """Eq. (2) on one set of pixels: ``x [N, D]`` (need not be unit norm), ``ids [N]``.

    Returns ``{"pos", "neg", "loss"}`` (scalars, ``loss = pos + neg``).
    ``weighting="paper"``: both normalised by ``sum_ij w_i w_j = Q^2``;
    ``"balanced"``: ``pos`` by the ``Q`` same-instance blocks and ``neg`` by the
    ``Q (Q - 1)`` ordered pairs of different instances (zero when ``Q = 1``).
    """
    if weighting not in WEIGHTINGS:
        raise DataError(f"pair_loss: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if x.ndim != 2 or ids.shape != x.shape[:1]:
        raise DataError(f"pair_loss: expected x [N,D] and ids [N], got {tuple(x.shape)} and {tuple(ids.shape)}")
    if x.shape[0] == 0:
        zero = x.sum() * 0.0
        return {"pos": zero, "neg": zero, "loss": zero}
    unit = F.normalize(x, dim=1)
    _, group = torch.unique(ids, return_inverse=True)
    n_groups = int(group.max()) + 1
    counts = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(
        0, group, torch.ones_like(unit[:, 0])
    )
    means = unit.new_zeros(n_groups, unit.shape[1]).index_add_(0, group, unit) / counts[:, None]
    pos = ((1 - (means**2).sum(dim=1)) / 2).sum()

    w = 1 / counts[group]
    similarity = (1 + unit @ unit.t()) / 2
    hinge = torch.relu(similarity - alpha).masked_fill(group[:, None] == group[None, :], 0.0)
    neg = w @ hinge @ w

    if weighting == "paper":
        pos, neg = pos / n_groups**2, neg / n_groups**2
    else:
        pos, neg = pos / n_groups, neg / max(n_groups * (n_groups - 1), 1)
    return {"pos": pos, "neg": neg, "loss": pos + neg}


def pairwise_embedding_loss(
    embedding: Tensor,
    instances: Tensor,
    *,
    alpha: float = 0.5,
    max_pixels: int | None = 4000,
    generator: torch.Generator | None = None,
    ignore_mask: Tensor | None = None,
    include_background: bool = True,
    weighting: str = "paper",
) -> dict[str, Tensor]:
    """Eq. (2) on uniformly sampled pixels, averaged over the batch.

    Args:
        embedding: ``[B, D, H, W]`` embeddings (unit norm expected; Eq. 1
            normalises anyway).
        instances: int ``[B, H, W]``, 0 = background.
        alpha: margin for negative pairs.
        max_pixels, generator, ignore_mask, include_background: see
            :func:`sample_pixels`.
        weighting: ``"paper"`` or ``"balanced"``, see :func:`pair_loss`.

    Returns:
        ``{"pos", "neg", "loss"}`` scalars.
    """
    samples = sample_pixels(
        embedding, instances, max_pixels=max_pixels, generator=generator,
        ignore_mask=ignore_mask, include_background=include_background,
    )
    return _batch_mean([pair_loss(s.embedding, s.ids, alpha=alpha, weighting=weighting) for s in samples])


def recurrent_grouping_loss(
    iterates: Sequence[Tensor],
    ids: Tensor,
    *,
    alpha: float = 0.5,
    reduction: str = "sum",
    weighting: str = "paper",
) -> dict[str, Tensor]:
    """The loss ``l^t`` of Sec. 4.2 at every loop of the recurrent mean shift, accumulated.

    Args:
        iterates: ``[X^0, X^1, ..., X^T]``, each ``[N, D]`` or ``[B, N, D]``;
            ``X^0`` should be the initial embedding (the paper includes it).
        ids: instance ids of the pixels, ``[N]`` or ``[B, N]``.
        alpha: margin for negative pairs.
        reduction: ``"sum"`` over loops (the paper) or ``"mean"``.
        weighting: ``"paper"`` or ``"balanced"``, see :func:`pair_loss`.

    Returns:
        ``{"pos", "neg", "loss"}`` reduced over loops, plus ``"loss_t0"``, ...,
        ``"loss_tT"``, the loss at each loop (scalars).
    """
    if reduction not in ("sum", "mean"):
        raise DataError(f"recurrent_grouping_loss: reduction must be 'sum' or 'mean', got {reduction!r}")
    if len(iterates) == 0:
        raise DataError("recurrent_grouping_loss: no iterates given")
    per_loop = []
    for t, x in enumerate(iterates):
        if x.ndim == 2:
            x, batch_ids = x[None], ids[None]
        else:
            batch_ids = ids
        if x.ndim != 3 or batch_ids.shape != x.shape[:2]:
            raise DataError(
                f"recurrent_grouping_loss: iterate {t} has shape {tuple(iterates[t].shape)}, "
                f"ids have shape {tuple(ids.shape)}; expected [N,D] with [N] or [B,N,D] with [B,N]"
            )
        per_loop.append(_batch_mean([
            pair_loss(x[b], batch_ids[b], alpha=alpha, weighting=weighting) for b in range(x.shape[0])
        ]))
    out = {}
    for key in ("pos", "neg", "loss"):
        stacked = torch.stack([loop[key] for loop in per_loop])
        out[key] = stacked.sum() if reduction == "sum" else stacked.mean()
    out.update({f"loss_t{t}": loop["loss"] for t, loop in enumerate(per_loop)})
    return out


class PairwiseEmbeddingLoss(nn.Module):
    """Module form of :func:`pairwise_embedding_loss`."""

    def __init__(
        self, alpha: float = 0.5, max_pixels: int | None = 4000, include_background: bool = True,
        weighting: str = "paper",
    ) -> None:
        super().__init__()
        self.alpha, self.max_pixels, self.include_background = alpha, max_pixels, include_background
        self.weighting = weighting

    def forward(
        self,
        embedding: Tensor,
        instances: Tensor,
        ignore_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        return pairwise_embedding_loss(
            embedding, instances, alpha=self.alpha, max_pixels=self.max_pixels,
            generator=generator, ignore_mask=ignore_mask, include_background=self.include_background,
            weighting=self.weighting,
        )


class RecurrentGroupingLoss(nn.Module):
    """Module form of :func:`recurrent_grouping_loss`."""

    def __init__(self, alpha: float = 0.5, reduction: str = "sum", weighting: str = "paper") -> None:
        super().__init__()
        self.alpha, self.reduction, self.weighting = alpha, reduction, weighting

    def forward(self, iterates: Sequence[Tensor], ids: Tensor) -> dict[str, Tensor]:
        return recurrent_grouping_loss(
            iterates, ids, alpha=self.alpha, reduction=self.reduction, weighting=self.weighting
        )


def _batch_mean(terms: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {key: torch.stack([t[key] for t in terms]).mean() for key in terms[0]}


def _check_shapes(name: str, embedding: Tensor, instances: Tensor, ignore_mask: Tensor | None) -> None:
    if embedding.ndim != 4 or embedding.shape[0] == 0:
        raise DataError(f"{name}: embedding must be [B,D,H,W] with B >= 1, got shape {tuple(embedding.shape)}")
    expected = (embedding.shape[0], *embedding.shape[2:])
    for what, t in (("instances", instances), ("ignore_mask", ignore_mask)):
        if t is not None and tuple(t.shape) != expected:
            raise DataError(
                f"{name}: {what} shape {tuple(t.shape)} does not match embedding "
                f"{tuple(embedding.shape)} (expected {expected})"
            )
