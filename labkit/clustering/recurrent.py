"""Recurrent (differentiable) mean shift of Kong & Fowlkes (CVPR 2018), Sec. 4, Eq. 3.

With the stacked embeddings ``X in R^{D x N}`` (unit vectors, Sec. 4.1) every
loop computes the von Mises-Fisher kernel matrix ``K = exp(delta X^T X)`` (Sec.
4.1: "we recompute K at each iteration"), the degrees ``D = diag(K^T 1)`` and

    X <- X (eta K D^-1 + (1 - eta) I)                                  (Eq. 3)

i.e. every embedding moves a fraction ``eta`` of the way to the
kernel-weighted mean of all embeddings (``eta = 1``: Gaussian blurring mean
shift, GBMS). The bandwidth is tied to the margin ``alpha`` of the pairwise
loss by ``1 / delta = (1 - alpha) / 3`` (Sec. 4.1), so the separation of two
instances is three kernel standard deviations. The module is unrolled for
``T`` loops and returns every iterate ``[X^0, ..., X^T]`` so that the loss can be
accumulated over loops (Sec. 4.2), e.g. with
:func:`labkit.losses.recurrent.recurrent_grouping_loss`.

Layout: rows are points, ``[N, D]`` or ``[B, N, D]`` (``X^T`` in the paper's
notation); column ``j`` of ``X K D^-1`` is row ``j`` of ``softmax_i(delta x_j . x_i) X``,
which is how it is computed (the softmax is the numerically stable form of
``K_ij / d_j``). Memory is ``O(B N^2)``: use it on sampled pixels (the
authors sample at most 4000 per image).

Choices the paper leaves open: the input is used as given (the embedding
head normalises it); the iterates are not re-projected onto the sphere
(Eq. 3 as written; ``normalize=True`` re-projects after every loop, the vMF
mean-shift variant of Kobayashi & Otsu 2010); ``eta`` defaults to 1 (GBMS,
Sec. 4.1) and ``T`` to 10 (Fig. 4 shows 10 loops).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.errors import DataError


def delta_from_margin(alpha: float) -> float:
    """Kernel concentration ``delta = 3 / (1 - alpha)`` for the loss margin ``alpha`` (Sec. 4.1)."""
    if not -1 <= alpha < 1:
        raise DataError(f"margin alpha must be in [-1, 1), got {alpha}")
    return 3.0 / (1.0 - alpha)


def recurrent_mean_shift(
    x: Tensor,
    *,
    alpha: float = 0.5,
    iterations: int = 10,
    eta: float = 1.0,
    delta: float | None = None,
    normalize: bool = False,
    mask: Tensor | None = None,
    kernel: str = "vmf",
) -> list[Tensor]:
    """Unroll Eq. 3 for ``iterations`` loops; returns ``[X^0, X^1, ..., X^T]`` (``X^0`` is ``x`` itself).

    Args:
        x: embeddings ``[N, D]`` or ``[B, N, D]``.
        alpha: the margin of the pairwise loss; sets ``delta = 3 / (1 - alpha)``.
        iterations: ``T``, the number of loops.
        eta: step size in ``(0, 1]``.
        delta: the kernel concentration, overriding ``alpha``.
        normalize: re-project every iterate onto the unit sphere.
        mask: bool ``[N]`` or ``[B, N]``; points where it is False (padding)
            are left out of every kernel-weighted mean.
        kernel: ``"vmf"`` (the paper's ``K = exp(delta X^T X)``) or
            ``"gaussian"``, ``K = exp(-delta |x_i - x_j|^2 / 2)`` for Euclidean
            embeddings (bandwidth ``delta ** -0.5``; Gaussian blurring mean shift).
            On unit vectors the two give the same ``K D^-1``.
    """
    if x.ndim not in (2, 3):
        raise DataError(f"recurrent_mean_shift: x must be [N, D] or [B, N, D], got shape {tuple(x.shape)}")
    if not 0 < eta <= 1:
        raise DataError(f"recurrent_mean_shift: eta must be in (0, 1], got {eta}")
    if iterations < 0:
        raise DataError(f"recurrent_mean_shift: iterations must be >= 0, got {iterations}")
    if kernel not in ("vmf", "gaussian"):
        raise DataError(f"recurrent_mean_shift: kernel must be 'vmf' or 'gaussian', got {kernel!r}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("recurrent_mean_shift: x contains NaN or infinite values")
    concentration = delta_from_margin(alpha) if delta is None else float(delta)
    batched = x if x.ndim == 3 else x[None]
    bias = None
    if mask is not None:
        mask = mask if mask.ndim == 2 else mask[None]
        if mask.shape != batched.shape[:2]:
            raise DataError(f"recurrent_mean_shift: mask {tuple(mask.shape)} does not match x {tuple(x.shape)}")
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))[:, None, :]
    iterates = [x]
    current = batched
    for _ in range(iterations):
        gram = current @ current.transpose(1, 2)  # [B, N, N]: row j holds x_j . x_i
        if kernel == "vmf":
            logits = concentration * gram
        else:  # -delta/2 |x_j - x_i|^2; the -delta/2 |x_j|^2 term is constant along the softmax's row
            logits = concentration * (gram - 0.5 * (current * current).sum(-1)[:, None, :])
        if bias is not None:
            logits = logits + bias
        weights = F.softmax(logits, dim=-1)  # (K D^-1)^T
        current = eta * (weights @ current) + (1 - eta) * current
        if normalize:
            current = F.normalize(current, dim=-1)
        iterates.append(current if x.ndim == 3 else current[0])
    return iterates


class RecurrentMeanShift(nn.Module):
    """Module form of :func:`recurrent_mean_shift` (no learnable parameters; the bandwidth is tied to ``alpha``)."""

    def __init__(
        self, alpha: float = 0.5, iterations: int = 10, eta: float = 1.0, delta: float | None = None,
        normalize: bool = False, kernel: str = "vmf",
    ) -> None:
        super().__init__()
        self.delta = delta_from_margin(alpha) if delta is None else float(delta)
        self.alpha, self.iterations, self.eta, self.normalize, self.kernel = alpha, iterations, eta, normalize, kernel

    def forward(self, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """``[X^0, ..., X^T]`` for embeddings ``x`` ``[N, D]`` or ``[B, N, D]``."""
        return recurrent_mean_shift(
            x, iterations=self.iterations, eta=self.eta, delta=self.delta, normalize=self.normalize, mask=mask,
            kernel=self.kernel,
        )

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, delta={self.delta:g}, iterations={self.iterations}, eta={self.eta}, "
                f"kernel={self.kernel}")
