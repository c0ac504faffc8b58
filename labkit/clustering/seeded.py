"""The fast seeded mean shift of De Brabandere, Neven & Van Gool (2017), Sec. 2, "Post-processing".

With the discriminative loss at zero every embedding lies within ``delta_v``
of its cluster centre, so a ball of radius ``bandwidth = delta_v`` around the
right centre selects one instance. Since the test loss is not zero, the paper
"applies a fast variant of the mean-shift algorithm to shift to a center pixel
around which to cluster": take an unlabelled pixel, shift it to its mode,
label the ball of radius ``bandwidth`` around the mode, repeat.

The paper gives no stopping rules; these follow the authors' group's
reference post-processing (Neven et al.) and are parameters:

* stop when fewer than ``min_unlabelled`` pixels are left unvisited, or after
  ``max_tries`` seeds;
* reject a ball when more than ``max_overlap`` of it is already labelled
  (the mode belongs to an instance found before), or when it adds fewer than
  ``min_size`` new pixels;
* the pixels of a rejected ball are marked visited (never seeds again) but
  stay unlabelled.

Seeds are drawn uniformly at random among the unvisited pixels from a
``torch.Generator`` seeded by ``seed``, so results are repeatable. A seed is
shifted with the chosen kernel against *all* pixels (labelled or not) until it
moves by less than ``1e-3 * bandwidth``; the ball is always the flat ball of
radius ``bandwidth`` (chord distance for the vMF kernel).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from labkit.clustering._common import DEFAULT_CHUNK, as_points, check_bandwidth, check_kernel, nearest, row_chunks
from labkit.errors import DataError


def seeded_mean_shift(
    X: Any,
    bandwidth: float,
    *,
    kernel: str = "flat",
    min_unlabelled: int = 1,
    max_tries: int = 1000,
    max_overlap: float = 0.5,
    min_size: int = 1,
    max_iter: int = 100,
    cluster_all: bool = False,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Any, Any]:
    """Cluster the rows of ``X [N, D]`` one instance at a time; returns ``(centers [K, D], labels [N])``.

    ``labels`` are ``0..K-1`` in the order the instances were found, ``-1`` for
    pixels no accepted ball covers (assigned to the nearest center instead
    when ``cluster_all``). numpy in, numpy out; tensor in, tensor out (same
    device). Kernels as in :class:`labkit.clustering.MeanShift` (``"flat"``,
    ``"gaussian"``, ``"vmf"``; vMF normalises the rows).
    """
    points, back = as_points(X)
    bandwidth = check_bandwidth(bandwidth)
    kernel = check_kernel(kernel)
    if not 0 <= max_overlap <= 1:
        raise DataError(f"max_overlap must be in [0, 1], got {max_overlap}")
    n = len(points)
    if kernel == "vmf" and n:
        norms = points.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise DataError("seeded_mean_shift: the vmf kernel needs non-zero rows to normalise")
        points = points / norms
    labels = torch.full((n,), -1, dtype=torch.int64, device=points.device)
    visited = torch.zeros(n, dtype=torch.bool, device=points.device)
    centers: list[Tensor] = []
    generator = torch.Generator().manual_seed(seed)
    tries = 0
    with torch.inference_mode():
        while tries < max_tries and int(n - visited.sum()) >= max(1, min_unlabelled):
            tries += 1
            candidates = (~visited).nonzero().squeeze(1)
            start = candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
            mode = _shift(points, points[start], bandwidth, kernel, max_iter, chunk_size)
            ball = ((points - mode) ** 2).sum(1) <= bandwidth * bandwidth
            ball[start] = True
            fresh = ball & (labels < 0)
            overlap = 1.0 - float(fresh.sum()) / float(ball.sum())
            if overlap <= max_overlap and int(fresh.sum()) >= min_size:
                labels[fresh] = len(centers)
                centers.append(mode)
            visited |= ball
        center_tensor = torch.stack(centers) if centers else points.new_zeros(0, points.shape[1])
        if cluster_all and centers:
            missing = (labels < 0).nonzero().squeeze(1)
            labels[missing] = nearest(points[missing], center_tensor, chunk_size)[0]
    return back(center_tensor), back(labels)


def _shift(points: Tensor, start: Tensor, bandwidth: float, kernel: str, max_iter: int, chunk_size: int) -> Tensor:
    """Mean-shift one seed to its mode against all points (chunked)."""
    mode = start.clone()
    for _ in range(max_iter):
        num = torch.zeros_like(mode)
        den = points.new_zeros(())
        for rows in row_chunks(len(points), points.shape[1], chunk_size):
            d2 = ((points[rows] - mode) ** 2).sum(1)
            w = (d2 <= bandwidth * bandwidth).to(points.dtype) if kernel == "flat" else torch.exp(
                d2 * (-0.5 / bandwidth**2)
            )
            num += w @ points[rows]
            den += w.sum()
        new = num / den
        if kernel == "vmf":
            new = new / new.norm().clamp_min(1e-12)
        moved = float((new - mode).norm())
        mode = new
        if moved <= 1e-3 * bandwidth:
            break
    return mode
