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

Speed (ours, not the paper's): seeds are drawn ``batch_size`` at a time
(distinct unvisited pixels) and shifted together as matrix products, then
taken in their drawn order exactly as one-at-a-time seeds would be; a seed
that a ball taken before it in the same batch has covered is discarded and
does not count as a try (one drawn alone would never have been drawn from
there).  So the result is that of the sequential algorithm for another,
equally random seed sequence.  The batch grows from 4 (the first seeds
usually find the large objects) to ``batch_size``.  ``batch_size=1`` is the
plain sequential loop.
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
    batch_size: int = 64,
    max_shift_points: int | None = None,
) -> tuple[Any, Any]:
    """Cluster the rows of ``X [N, D]`` one instance at a time; returns ``(centers [K, D], labels [N])``.

    ``labels`` are ``0..K-1`` in the order the instances were found, ``-1`` for
    pixels no accepted ball covers (assigned to the nearest center instead
    when ``cluster_all``). numpy in, numpy out; tensor in, tensor out (same
    device). Kernels as in :class:`labkit.clustering.MeanShift` (``"flat"``,
    ``"gaussian"``, ``"vmf"``; vMF normalises the rows).

    ``max_shift_points``: when there are more points, seeds are shifted
    against a fixed random subset of that many (drawn once from ``seed``), an
    unbiased estimate of each mean; balls, labels and the stopping rules still
    use every point.  None (default): shift against all points.
    """
    points, back = as_points(X)
    bandwidth = check_bandwidth(bandwidth)
    kernel = check_kernel(kernel)
    if not 0 <= max_overlap <= 1:
        raise DataError(f"max_overlap must be in [0, 1], got {max_overlap}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if max_shift_points is not None and (isinstance(max_shift_points, bool) or int(max_shift_points) < 1):
        raise DataError(f"max_shift_points must be a positive integer or None, got {max_shift_points!r}")
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
    batch = min(4, batch_size)
    r2 = bandwidth * bandwidth
    sq_points = (points * points).sum(1)
    shift_points = points
    if max_shift_points is not None and n > int(max_shift_points):
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[: int(max_shift_points)]
        shift_points = points[subset.to(points.device)]
    with torch.inference_mode():
        while tries < max_tries and int(n - visited.sum()) >= max(1, min_unlabelled):
            candidates = (~visited).nonzero().squeeze(1)
            draw = min(batch, max_tries - tries, len(candidates))
            pick = torch.randperm(len(candidates), generator=generator)[:draw]
            starts = candidates[pick.to(candidates.device)]
            modes = _shift_many(shift_points, points[starts], bandwidth, kernel, max_iter, chunk_size)
            balls = _balls(points, sq_points, modes, r2, chunk_size)
            for start, mode, ball in zip(starts.tolist(), modes, balls):
                if visited[start]:  # covered by a ball of this batch: not drawn
                    continue
                if tries >= max_tries or int(n - visited.sum()) < max(1, min_unlabelled):
                    break
                tries += 1
                ball[start] = True
                fresh = ball & (labels < 0)
                n_fresh = int(fresh.sum())
                overlap = 1.0 - n_fresh / float(ball.sum())
                if overlap <= max_overlap and n_fresh >= min_size:
                    labels[fresh] = len(centers)
                    centers.append(mode)
                visited |= ball
            batch = min(2 * batch, batch_size)
        center_tensor = torch.stack(centers) if centers else points.new_zeros(0, points.shape[1])
        if cluster_all and centers:
            missing = (labels < 0).nonzero().squeeze(1)
            labels[missing] = nearest(points[missing], center_tensor, chunk_size)[0]
    return back(center_tensor), back(labels)


def _balls(points: Tensor, sq_points: Tensor, modes: Tensor, r2: float, chunk_size: int) -> Tensor:
    """bool ``[S, N]``: the points within ``sqrt(r2)`` of each mode.

    Distances by the matmul expansion, in blocks of at most ``chunk_size``
    elements; points whose expanded distance lies within a relative ``1e-4``
    of the radius are decided by exact differences.
    """
    balls = torch.empty(len(modes), len(points), dtype=torch.bool, device=points.device)
    sq_modes = (modes * modes).sum(1)
    largest = float(sq_points.max()) if len(points) else 0.0
    for rows in row_chunks(len(modes), len(points), chunk_size):
        d2 = torch.addmm(sq_points[None, :], modes[rows], points.T, alpha=-2.0).add_(sq_modes[rows, None])
        balls[rows] = d2 <= r2
        scale = (r2 + largest + sq_modes[rows, None]).mul_(1e-4)  # per row: a band at least as wide as each point's
        unsure = (d2.sub_(r2).abs_() <= scale).nonzero()
        if len(unsure):
            s, j = unsure[:, 0] + rows.start, unsure[:, 1]
            balls[s, j] = ((points[j] - modes[s]) ** 2).sum(1) <= r2
    return balls


def _shift_many(
    points: Tensor, starts: Tensor, bandwidth: float, kernel: str, max_iter: int, chunk_size: int
) -> Tensor:
    """Mean-shift every row of ``starts [S, D]`` to its mode against all points; seeds stop one by one.

    Distances by the matmul expansion (:func:`sq_dist_mm`), chunked so that no
    ``seeds x points`` block exceeds ``chunk_size`` elements.  A seed stops once
    it moves by less than ``1e-3 * bandwidth`` (or after ``max_iter`` steps); a
    seed whose flat ball became empty stays where it is.
    """
    modes = starts.clone()
    active = torch.arange(len(modes), device=points.device)
    sq_points = (points * points).sum(1)
    with_ones = torch.cat([points, points.new_ones(len(points), 1)], dim=1)  # one product gives sums and counts
    for _ in range(max_iter):
        if len(active) == 0:
            break
        current = modes[active]
        total = current.new_zeros(len(current), current.shape[1] + 1)
        sq_current = (current * current).sum(1)[:, None]
        for rows in row_chunks(len(points), len(current), chunk_size):
            d2 = torch.addmm(sq_points[rows][None, :], current, points[rows].T, alpha=-2.0).add_(sq_current)
            if kernel == "flat":
                w = d2.le_(bandwidth * bandwidth)  # in place: 1.0 inside the ball, 0.0 outside
            else:
                w = d2.clamp_min_(0).mul_(-0.5 / bandwidth**2).exp_()
            total += w @ with_ones[rows]
        num, den = total[:, :-1], total[:, -1]
        new = torch.where(den[:, None] > 0, num / den.clamp_min(1e-30)[:, None], current)
        if kernel == "vmf":
            new = new / new.norm(dim=1, keepdim=True).clamp_min(1e-12)
        moved = (new - current).norm(dim=1)
        modes[active] = new
        active = active[moved > 1e-3 * bandwidth]
    return modes
