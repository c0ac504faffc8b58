"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun, NeurIPS 2011), mean-field inference.

IRNet's authors refine the confident areas of the CAMs with this CRF before
mining inter-pixel relations (their ``imutils.crf_inference_label``, through
``pydensecrf``, which no longer builds on current Python).  This is the same
model in PyTorch.  The energy of a labelling ``x`` is

    E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j),
    k = w_g exp(-|p_i - p_j|^2 / 2 s_g^2) + w_b exp(-|p_i - p_j|^2 / 2 s_xy^2 - |I_i - I_j|^2 / 2 s_rgb^2),

with the Potts compatibility ``mu = [x_i != x_j]``; positions ``p`` in pixels,
colours ``I`` in 0..255.  Mean field repeats
``Q_i(l) ∝ exp(-U_i(l) + sum_{j != i} k(f_i, f_j) Q_j(l))``.  The unary of a
hard labelling is ``-log gt_prob`` for the given label and
``-log((1 - gt_prob) / (L - 1))`` for the others (pydensecrf's
``unary_from_labels``, ``zero_unsure=False``).  Defaults are the authors':
``gt_prob=0.7``, 10 iterations, ``sxy=3, compat=3`` (Gaussian) and
``sxy=50, srgb=5, compat=10`` (bilateral).

Deviation: ``pydensecrf`` filters with a permutohedral lattice (an
approximation, linear in the pixels); here the kernel is summed exactly, a
``pixels x pixels`` matrix, so images larger than ``max_pixels`` are solved
on a copy reduced by an integer factor (area averaging; positions kept in
full-resolution pixels) and the marginals are upsampled bilinearly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from labkit.errors import LabkitError

#: most pixels solved at full resolution (a 64 x 64 image: a 64 MiB kernel matrix in float32)
MAX_PIXELS = 64 * 64


def unary_from_labels(labels: torch.Tensor, n_labels: int, gt_prob: float = 0.7) -> torch.Tensor:
    """Unary energies ``[L, H, W]`` of a hard labelling ``labels [H, W]`` (values ``0..L-1``)."""
    if not 0 < gt_prob < 1:
        raise LabkitError(f"gt_prob must be in (0, 1), got {gt_prob}")
    if n_labels < 2:
        raise LabkitError(f"a CRF needs at least 2 labels, got {n_labels}")
    if labels.dtype.is_floating_point or labels.ndim != 2:
        raise LabkitError(f"labels must be an integer [H,W] map, got {labels.dtype} {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_labels):
        raise LabkitError(f"labels must lie in 0..{n_labels - 1}, got {int(labels.min())}..{int(labels.max())}")
    unary = torch.full((n_labels, *labels.shape), -math.log((1 - gt_prob) / (n_labels - 1)))
    return unary.scatter_(0, labels.long().cpu()[None], -math.log(gt_prob)).to(labels.device)


def dense_crf(
    image: torch.Tensor, unary: torch.Tensor, *, iterations: int = 10,
    gaussian_sxy: float = 3.0, gaussian_weight: float = 3.0,
    bilateral_sxy: float = 50.0, bilateral_srgb: float = 5.0, bilateral_weight: float = 10.0,
    max_pixels: int = MAX_PIXELS,
) -> torch.Tensor:
    """Mean-field marginals ``Q [L, H, W]`` of the CRF on ``image [C, H, W]`` (values 0..1) and ``unary [L, H, W]``.

    ``unary`` may carry a leading batch of labellings of the same image,
    ``[N, L, H, W]`` (solved together, one kernel); the result then has that shape too.
    """
    if image.ndim != 3:
        raise LabkitError(f"image must be [C,H,W], got shape {tuple(image.shape)}")
    batched = unary.ndim == 4
    unaries = unary if batched else unary[None]
    if unaries.ndim != 4 or unaries.shape[-2:] != image.shape[-2:]:
        raise LabkitError(f"unary must be [L,H,W] or [N,L,H,W] of the image's size {tuple(image.shape[-2:])}, "
                          f"got {tuple(unary.shape)}")
    if not (torch.isfinite(image).all() and torch.isfinite(unaries).all()):
        raise LabkitError("dense_crf: the image or the unary has NaN or infinite values")
    if iterations < 0 or min(gaussian_sxy, bilateral_sxy, bilateral_srgb) <= 0 or max_pixels < 1:
        raise LabkitError("dense_crf needs iterations >= 0, positive sxy/srgb and max_pixels >= 1")
    height, width = image.shape[-2:]
    factor = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    image = image.float()
    prior = torch.softmax(-unaries.float(), dim=1)
    if factor > 1:  # solve on a reduced copy; the unary is carried as averaged probabilities
        image = F.avg_pool2d(image[None], factor, ceil_mode=True)[0]
        prior = F.avg_pool2d(prior, factor, ceil_mode=True)
    bilateral = _bilateral_kernel(image, factor, bilateral_sxy, bilateral_srgb / 255.0)
    n, labels = prior.shape[:2]
    size = image.shape[-2:]
    logits = prior.clamp(min=1e-12).log()  # = -unary up to a per-pixel constant at factor 1
    q = prior
    for _ in range(iterations):
        message = bilateral_weight * (q.flatten(2) @ bilateral).view(n, labels, *size)
        message += gaussian_weight * _blur(q, gaussian_sxy / factor)
        q = torch.softmax(logits + message, dim=1)
    if factor > 1:
        q = F.interpolate(q, scale_factor=factor, mode="bilinear", align_corners=False)[..., :height, :width]
        q = q / q.sum(dim=1, keepdim=True)
    return q if batched else q[0]


def _bilateral_kernel(image: torch.Tensor, spacing: int, sxy: float, srgb: float) -> torch.Tensor:
    """``[P, P]``: ``exp(-|p_i - p_j|^2 / 2 sxy^2 - |I_i - I_j|^2 / 2 srgb^2)``, zero on the diagonal (``j != i``)."""
    height, width = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) * (spacing / sxy),
                            torch.arange(width, dtype=torch.float32) * (spacing / sxy), indexing="ij")
    features = torch.cat([ys.flatten()[:, None], xs.flatten()[:, None], image.flatten(1).T / srgb], dim=1)
    norms = features.square().sum(dim=1)
    # -|f_i - f_j|^2 / 2, clamped where exp underflows anyway (denormals are slow)
    exponent = torch.addmm(norms[:, None] + norms[None, :], features, features.T, alpha=-2).mul_(-0.5)
    return exponent.clamp_(-60, 0).exp_().fill_diagonal_(0)


def _blur(q: torch.Tensor, sxy: float) -> torch.Tensor:
    """``sum_{j != i} exp(-|p_i - p_j|^2 / 2 sxy^2) q_j`` per map of ``q [N, L, H, W]`` (separable, zero outside)."""
    radius = max(1, math.ceil(3 * sxy))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=q.dtype).square() / (2 * sxy**2))
    n, labels, height, width = q.shape
    x = q.reshape(n * labels, 1, height, width)
    x = F.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, radius))
    x = F.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))
    return x.view_as(q) - q  # the centre tap is exp(0) = 1: drop j = i


def crf_inference_label(image: torch.Tensor, labels: torch.Tensor, n_labels: int, gt_prob: float = 0.7,
                        **crf: float) -> torch.Tensor:
    """The authors' ``crf_inference_label``: a hard labelling ``[H, W]`` refined by :func:`dense_crf` (arg-max)."""
    return dense_crf(image, unary_from_labels(labels, n_labels, gt_prob), **crf).argmax(dim=0)


__all__ = ["MAX_PIXELS", "crf_inference_label", "dense_crf", "unary_from_labels"]
