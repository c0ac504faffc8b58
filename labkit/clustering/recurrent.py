"""Recurrent (differentiable) mean shift of Kong & Fowlkes (CVPR 2018), Sec. 4, Eq. 3.

With the stacked embeddings ``X in R^{D x N}`` (unit vectors, Sec. 4.1) every
loop computes the kernel matrix ``K`` (Sec. 4.1: "we recompute K at each
iteration"), the degrees ``D = diag(K^T 1)`` and

    X <- X (eta K D^-1 + (1 - eta) I)                                  (Eq. 3)

i.e. every embedding moves a fraction ``eta`` of the way to the
kernel-weighted mean of all embeddings (``eta = 1``: Gaussian blurring mean
shift, GBMS). The module is unrolled for ``T`` loops and returns every iterate
``[X^0, ..., X^T]`` so that the loss can be accumulated over loops (Sec. 4.2),
e.g. with :func:`labkit.losses.recurrent.recurrent_grouping_loss`.

The kernel and its bandwidth (Sec. 4.1). The paper starts from the Gaussian
``exp(-delta^2 / 2 |x - y|^2)``, whose standard deviation is ``1 / delta``,
and ties it to the margin ``alpha`` of the loss by ``1 / delta = (1 - alpha) / 3``
"so that the cluster separation (margin) in the learned embedding space is
three standard deviations of the kernel" (``delta = 6`` at ``alpha = 0.5``).
On unit vectors ``|x - y|^2 = 2 - 2 x.y``, so that Gaussian is the von
Mises-Fisher kernel ``exp(kappa x.y)`` (up to a constant that ``D^-1``
cancels) with concentration ``kappa = delta^2`` (36 at ``alpha = 0.5``). The
paper then writes ``K = exp(delta X^T X)``; read literally (concentration
``delta = 6``) the kernel has a standard deviation of ``1 / sqrt(6) = 0.41``
instead of ``1 / 6``, wider than the margin, and it merges groups that Eq. 2
already scores as separated (``tests/test_clustering_recurrent.py`` holds such
a case). labkit uses ``kappa = delta^2``: ``K = exp(delta^2 X^T X)``. The
authors' code writes the kernel ``exp((S - 1) / h^2)`` with ``h = 0.1``, i.e.
``delta = 1 / h = 10``; pass ``delta=10`` for their setting.

Re-projection: Eq. 3 as written leaves the sphere (a weighted mean of unit
vectors is shorter than one); the authors' code re-normalises the iterates
after every loop, and so does labkit by default (``normalize=True``; the vMF
mean shift of Kobayashi & Otsu 2010). ``normalize=False`` is Eq. 3 verbatim.

Layout: rows are points, ``[N, D]`` or ``[B, N, D]`` (``X^T`` in the paper's
notation); column ``j`` of ``X K D^-1`` is row ``j`` of
``softmax_i(kappa x_j . x_i) X``, which is how it is computed (the softmax is
the numerically stable form of ``K_ij / d_j``). Memory is ``O(B N^2)``: use it
on sampled pixels (the authors sample at most 4000 per image).

Other choices the paper leaves open: the input is used as given (the
embedding head normalises it); ``eta`` defaults to 1 (GBMS, Sec. 4.1) and
``T`` to 10 (Fig. 4 shows 10 loops).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.errors import DataError


def delta_from_margin(alpha: float) -> float:
    """The paper's ``delta = 3 / (1 - alpha)`` for the loss margin ``alpha`` (Sec. 4.1); the kernel's std is ``1 / delta``."""
    if not -1 <= alpha < 1:
        raise DataError(f"margin alpha must be in [-1, 1), got {alpha}")
    return 3.0 / (1.0 - alpha)


def concentration(delta: float) -> float:
    """The vMF concentration ``kappa = delta^2`` of the paper's Gaussian ``exp(-delta^2 / 2 |x - y|^2)`` on the sphere."""
    if not delta > 0:
        raise DataError(f"delta must be > 0, got {delta}")
    return float(delta) ** 2


def recurrent_mean_shift(
    x: Tensor,
    *,
    alpha: float = 0.5,
    iterations: int = 10,
    eta: float = 1.0,
    delta: float | None = None,
    normalize: bool = True,
    mask: Tensor | None = None,
    kernel: str = "vmf",
) -> list[Tensor]:
    """Unroll Eq. 3 for ``iterations`` loops; returns ``[X^0, X^1, ..., X^T]`` (``X^0`` is ``x`` itself).

    Args:
        x: embeddings ``[N, D]`` or ``[B, N, D]``.
        alpha: the margin of the pairwise loss; sets ``delta = 3 / (1 - alpha)``.
        iterations: ``T``, the number of loops.
        eta: step size in ``(0, 1]``.
        delta: the kernel's inverse standard deviation, overriding ``alpha``
            (the authors' code: ``1 / h = 10``).
        normalize: re-project every iterate onto the unit sphere (authors' code).
        mask: bool ``[N]`` or ``[B, N]``; points where it is False (padding)
            are left out of every kernel-weighted mean. An item without any
            point left is returned unchanged.
        kernel: ``"vmf"``, ``K = exp(delta^2 X^T X)``, or ``"gaussian"``, the
            paper's ``K = exp(-delta^2 / 2 |x_i - x_j|^2)``, also for Euclidean
            embeddings (Gaussian blurring mean shift). On unit vectors the two
            give the same ``K D^-1``: at every loop with ``normalize=True``,
            only at the first without it (the iterates leave the sphere).
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
    kappa = concentration(delta_from_margin(alpha) if delta is None else float(delta))
    batched = x if x.ndim == 3 else x[None]
    bias = empty = None
    if mask is not None:
        mask = mask if mask.ndim == 2 else mask[None]
        if mask.shape != batched.shape[:2]:
            raise DataError(f"recurrent_mean_shift: mask {tuple(mask.shape)} does not match x {tuple(x.shape)}")
        mask = mask.bool()
        empty = ~mask.any(dim=1)  # items without any point: their softmax rows would be all -inf (NaN)
        keep = mask | empty[:, None]
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, float("-inf"))[:, None, :]
    iterates = [x]
    current = batched
    for _ in range(iterations):
        gram = current @ current.transpose(1, 2)  # [B, N, N]: row j holds x_j . x_i
        if kernel == "vmf":
            logits = kappa * gram
        else:  # -kappa/2 |x_j - x_i|^2; the -kappa/2 |x_j|^2 term is constant along the softmax's row
            logits = kappa * (gram - 0.5 * (current * current).sum(-1)[:, None, :])
        if bias is not None:
            logits = logits + bias
        weights = F.softmax(logits, dim=-1)  # (K D^-1)^T
        moved = eta * (weights @ current) + (1 - eta) * current
        if normalize:
            moved = F.normalize(moved, dim=-1)
        if empty is not None and bool(empty.any()):
            moved = torch.where(empty[:, None, None], current, moved)
        current = moved
        iterates.append(current if x.ndim == 3 else current[0])
    return iterates


class RecurrentMeanShift(nn.Module):
    """Module form of :func:`recurrent_mean_shift` (no learnable parameters; the bandwidth is tied to ``alpha``)."""

    def __init__(
        self, alpha: float = 0.5, iterations: int = 10, eta: float = 1.0, delta: float | None = None,
        normalize: bool = True, kernel: str = "vmf",
    ) -> None:
        super().__init__()
        self.delta = delta_from_margin(alpha) if delta is None else float(delta)
        self.alpha, self.iterations, self.eta, self.normalize, self.kernel = alpha, iterations, eta, normalize, kernel

    @property
    def concentration(self) -> float:
        """The vMF concentration ``delta^2``."""
        return concentration(self.delta)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """``[X^0, ..., X^T]`` for embeddings ``x`` ``[N, D]`` or ``[B, N, D]``."""
        return recurrent_mean_shift(
            x, iterations=self.iterations, eta=self.eta, delta=self.delta, normalize=self.normalize, mask=mask,
            kernel=self.kernel,
        )

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, delta={self.delta:g} (concentration {self.concentration:g}), "
                f"iterations={self.iterations}, eta={self.eta}, normalize={self.normalize}, kernel={self.kernel}")
