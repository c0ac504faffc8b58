"""Mean shift in PyTorch with scikit-learn's estimator API, fast enough to drag a bandwidth slider.

See :class:`MeanShift` for the algorithm and the kernels.
"""
from __future__ import annotations

from typing import Any

import torch
from sklearn.base import BaseEstimator, ClusterMixin
from torch import Tensor

from labkit.clustering import _engine
from labkit.clustering._common import (
    DEFAULT_CHUNK, as_points, check_bandwidth, check_kernel, nearest, row_chunks, sq_dist_mm,
)
from labkit.errors import DataError

#: below this many (seed, point) pairs the binned phase is skipped and every step is exact
EXACT_PAIRS = 1 << 22
#: the binned phase stops (and merges seeds) at this fraction of the bandwidth; the exact phase then polishes
BINNED_TOL = 1e-2


class MeanShift(ClusterMixin, BaseEstimator):
    """Mean-shift clustering (Comaniciu & Meer 2002) of points ``[N, D]``, a drop-in for scikit-learn's.

    Parameters are scikit-learn's (``bandwidth``, ``seeds``, ``bin_seeding``,
    ``min_bin_freq``, ``cluster_all``, ``max_iter``) plus:

    * ``kernel``: ``"flat"`` (scikit-learn's: the mean of the points within
      ``bandwidth``), ``"gaussian"`` (weights ``exp(-|x - m|^2 / 2 bandwidth^2)``)
      or ``"vmf"``, von Mises-Fisher for embeddings on the unit sphere: rows are
      normalised, weights are ``exp(kappa (cos - 1))`` with ``kappa =
      1 / bandwidth^2`` and the shifted seeds are projected back onto the
      sphere after every step. Since ``|x - m|^2 = 2 - 2 cos`` for unit
      vectors, vMF with a given bandwidth is the Gaussian of that bandwidth on
      the chord distance, so bandwidths mean the same thing for all kernels;
      Kong & Fowlkes's ``delta`` (Sec. 4.1: the Gaussian ``exp(-delta^2 / 2
      |x - y|^2)``, vMF concentration ``delta^2``) is ``bandwidth = 1 / delta``.
    * ``truncate``: the Gaussian and vMF kernels are cut at ``truncate *
      bandwidth`` (weights below ``exp(-truncate^2 / 2)``, 1.1% at the default 3).
    * ``coord_bandwidth``: with ``fit(X, coordinates=C)``, the pixel
      coordinates ``C [N, 2]`` are appended to the features, scaled by
      ``bandwidth / coord_bandwidth`` so that one ball covers ``bandwidth`` in
      embedding space and ``coord_bandwidth`` pixels in the image (see
      :func:`labkit.clustering.spatial_features`). For vMF only the embedding
      part is normalised.
    * ``chunk_size``: no pairwise block holds more than this many elements, so
      memory is ``O(N D + chunk_size)``, never ``N x N``.
    * ``device``: where to compute (default: where ``X`` lives).

    Inputs may be numpy arrays or CPU/CUDA tensors; results (``labels_``,
    ``cluster_centers_``, ``intensities_``) are numpy arrays for numpy input and
    tensors on the input's device for tensor input. Clusters are ordered by
    decreasing intensity (scikit-learn's order). An empty ``X`` gives no
    clusters and an empty ``labels_``; NaN or infinite values raise
    :class:`labkit.errors.DataError`.

    Algorithm (chosen for speed; memory bounded by chunking). scikit-learn
    moves one seed at a time with a ball-tree query per step; here all seeds
    move together as matrix products, and two grids keep the work local:

    1. Seeds are scikit-learn's: every point, the given ``seeds``, or with
       ``bin_seeding`` the cells of the grid ``round(X / bandwidth)`` holding at
       least ``min_bin_freq`` points (so a 64-pixel object still has a seed
       of its own).
    2. Fine cells: the points grouped into that same grid; each cell keeps
       its count, sum, centroid and radius. A coarse index: a grid of a few
       hundred cells whose connected components (cells that could hold
       points within reach of each other) split the data into independent
       groups; well-separated objects land in different components.
    3. Binned phase: every seed is shifted against the fine cells of its
       component, each cell weighted by its count times the fraction of it
       estimated inside the ball, merging seeds that meet: ``seeds x cells``
       work per component instead of ``seeds x points``. This approximation
       only decides where the exact phase starts (it stops at ``1e-2 *
       bandwidth``); it is skipped when there are few (seed, point) pairs. A
       seed whose ball cannot hold any point is dropped, as in scikit-learn.
    4. Exact phase: the surviving seeds (a few per object) are shifted against
       the points themselves, densely over the coarse cells within reach,
       until each moves by at most ``1e-3 * bandwidth`` (scikit-learn's rule)
       or ``max_iter``; a seed whose ball is empty is dropped.
    5. Post-processing is scikit-learn's: modes sorted by intensity suppress
       the modes within ``bandwidth``; every point goes to the nearest kept
       center (or -1 beyond ``bandwidth`` when ``cluster_all=False``).

    On well-separated data this gives scikit-learn's clusters (same modes to
    ``1e-3 * bandwidth``) much faster; ``benchmarks/bench_meanshift.py``
    measures how much (figures in ``benchmarks/RESULTS.md``). One difference, from the binned phase only: a bin seed whose
    ball is empty but that lies within ``bandwidth`` + a cell's radius of a
    cell is moved towards that cell rather than dropped. In high dimensions a
    tight cluster can have every grid corner farther than ``bandwidth`` from
    all of its points; scikit-learn then drops all its seeds and merges the
    cluster into a neighbour, labkit still finds its mode.
    """

    def __init__(
        self,
        *,
        bandwidth: float | None = None,
        seeds: Any = None,
        bin_seeding: bool = False,
        min_bin_freq: int = 1,
        cluster_all: bool = True,
        max_iter: int = 300,
        kernel: str = "flat",
        truncate: float = 3.0,
        coord_bandwidth: float | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        device: str | torch.device | None = None,
    ) -> None:
        self.bandwidth = bandwidth
        self.seeds = seeds
        self.bin_seeding = bin_seeding
        self.min_bin_freq = min_bin_freq
        self.cluster_all = cluster_all
        self.max_iter = max_iter
        self.kernel = kernel
        self.truncate = truncate
        self.coord_bandwidth = coord_bandwidth
        self.chunk_size = chunk_size
        self.device = device

    def fit(self, X: Any, y: Any = None, coordinates: Any = None) -> "MeanShift":
        """Cluster ``X [N, D]`` (optionally with pixel ``coordinates [N, C]``); ``y`` is ignored."""
        points, back = as_points(X)
        if self.device is not None:
            points = points.to(self.device)
        kernel = check_kernel(self.kernel)
        if int(self.max_iter) < 0 or int(self.min_bin_freq) < 1:
            raise DataError(f"max_iter must be >= 0 and min_bin_freq >= 1, got {self.max_iter}, {self.min_bin_freq}")
        with torch.inference_mode():
            embed = _unit_rows(points, "X") if kernel == "vmf" else points
            bandwidth = self._bandwidth(embed)
            work, scale = self._features(embed, coordinates, bandwidth)
            dims = points.shape[1]
            centers, intensity, labels, n_iter = self._cluster(work, dims, bandwidth)
            centers = centers.clone()
            if scale is not None:
                centers[:, dims:] /= scale
        self.n_features_in_ = points.shape[1]
        self.n_iter_ = n_iter
        self.cluster_centers_ = back(centers[:, : points.shape[1]] if coordinates is None else centers)
        self.intensities_ = back(intensity)
        self.labels_ = back(labels)
        return self

    def fit_predict(self, X: Any, y: Any = None, coordinates: Any = None) -> Any:
        """``fit(X, coordinates=coordinates).labels_``."""
        return self.fit(X, coordinates=coordinates).labels_

    def predict(self, X: Any) -> Any:
        """Index of the nearest cluster center for each row of ``X`` (no coordinates)."""
        if not hasattr(self, "cluster_centers_"):
            raise DataError("MeanShift.predict: call fit first")
        points, back = as_points(X)
        centers = torch.as_tensor(self.cluster_centers_).to(points.device, points.dtype)[:, : points.shape[1]]
        if self.kernel == "vmf":
            points = _unit_rows(points, "X")
        return back(nearest(points, centers, int(self.chunk_size))[0])

    def _features(self, embed: Tensor, coordinates: Any, bandwidth: float) -> tuple[Tensor, float | None]:
        """Working features: the embedding with the scaled coordinates appended, and the scale."""
        if coordinates is None:
            return embed, None
        coords, _ = as_points(coordinates, "coordinates")
        if coords.shape[0] != embed.shape[0]:
            raise DataError(f"coordinates have {coords.shape[0]} rows for {embed.shape[0]} points")
        if self.coord_bandwidth is None:
            raise DataError("coordinates given but coord_bandwidth is None; set MeanShift(coord_bandwidth=...)")
        scale = bandwidth / check_bandwidth(self.coord_bandwidth, "coord_bandwidth")
        return torch.cat([embed, coords.to(embed.device, embed.dtype) * scale], 1), scale

    def _bandwidth(self, embed: Tensor) -> float:
        """The bandwidth, estimated on the embedding (without coordinates) when None."""
        if self.bandwidth is not None:
            return check_bandwidth(self.bandwidth)
        return estimate_bandwidth(embed) if len(embed) else 1.0

    def _cluster(self, work: Tensor, dims: int, bandwidth: float) -> tuple[Tensor, Tensor, Tensor, int]:
        """``(centers, intensities, labels, n_iter)`` in working coordinates."""
        n, d = work.shape
        if n == 0:
            empty = work.new_zeros(0)
            return work.new_zeros(0, d), empty, torch.zeros(0, dtype=torch.int64, device=work.device), 0
        sphere = dims if self.kernel == "vmf" else 0
        shift = work.new_zeros(d) if sphere else work.mean(0)
        centred = work - shift
        tol, budget, max_iter = 1e-3 * bandwidth, int(self.chunk_size), int(self.max_iter)
        reach = bandwidth if self.kernel == "flat" else float(self.truncate) * bandwidth
        cells = _engine.make_cells(centred, work, bandwidth)
        index = _engine.make_index(centred, cells, reach)
        seeds, seed_comp = self._seeds(work, shift, cells, index, bandwidth, budget)
        seeds = _engine.renormalise(seeds, sphere)
        steps = 0
        if len(seeds) * n > EXACT_PAIRS and len(cells.count) < n:
            cell_comp = index.component[index.cells.of_point[cells.first]]
            seeds, steps = _engine.shift_binned(
                seeds, seed_comp, cells, cell_comp, self.kernel, bandwidth, reach, max_iter, BINNED_TOL * bandwidth,
                budget, sphere,
            )
        modes, intensity, n_iter = _engine.shift_exact(
            seeds, index, self.kernel, bandwidth, reach, max_iter, tol, budget, sphere
        )
        if len(modes) == 0:
            raise DataError(
                f"No point was within bandwidth={bandwidth:g} of any seed; increase the bandwidth or change the seeds"
            )
        modes, intensity = _engine.merge_modes(modes, intensity, bandwidth)
        labels = _engine.assign(centred, modes, bandwidth, bool(self.cluster_all), budget)
        return modes + shift, intensity, labels, steps + n_iter

    def _seeds(
        self, work: Tensor, shift: Tensor, cells: _engine.Cells, index: _engine.Index, bandwidth: float, budget: int
    ) -> tuple[Tensor, Tensor]:
        """The seeds, centred like the working points, and the component of the coarse index each is in."""
        point_comp = index.component[index.cells.of_point]
        if self.seeds is not None:
            seeds, _ = as_points(self.seeds, "seeds")
            if seeds.shape[1] != work.shape[1]:
                raise DataError(f"seeds have {seeds.shape[1]} features, X has {work.shape[1]}")
            seeds = seeds.to(work.device, work.dtype) - shift
            return seeds, index.component_of(seeds, budget)
        if self.bin_seeding:
            chosen = cells.count >= int(self.min_bin_freq)
            if int(chosen.sum()) < len(work):  # else binning failed to compress: all points (scikit-learn's rule)
                seeds = cells.key[chosen].to(work.dtype) * bandwidth - shift
                return seeds, point_comp[cells.first[chosen]]
        return work - shift, point_comp


def _unit_rows(x: Tensor, name: str) -> Tensor:
    norms = x.norm(dim=1, keepdim=True)
    if len(x) and bool((norms == 0).any()):
        raise DataError(f"{name}: the vmf kernel needs non-zero rows to normalise; {int((norms == 0).sum())} are zero")
    return x / norms


def estimate_bandwidth(
    X: Any, quantile: float = 0.3, n_samples: int | None = 2000, seed: int = 0
) -> float:
    """scikit-learn's bandwidth heuristic: the mean distance of a point to its ``quantile * n``-th neighbour.

    Unlike scikit-learn (all points by default, quadratic time) it uses a
    random subset of ``n_samples`` points by default; ``n_samples=None`` uses all.
    """
    points, _ = as_points(X)
    if len(points) == 0:
        raise DataError("estimate_bandwidth: X is empty")
    if n_samples is not None and len(points) > n_samples:
        generator = torch.Generator().manual_seed(seed)
        points = points[torch.randperm(len(points), generator=generator)[:n_samples].to(points.device)]
    k = max(1, int(len(points) * quantile))
    total = 0.0
    for rows in row_chunks(len(points), len(points), DEFAULT_CHUNK):
        d2 = sq_dist_mm(points[rows], points)
        total += float(d2.kthvalue(k, dim=1).values.sqrt().sum())
    bandwidth = total / len(points)
    if bandwidth <= 0:
        raise DataError("estimate_bandwidth: the points are (nearly) identical; give the bandwidth explicitly")
    return bandwidth


def mean_shift(X: Any, bandwidth: float | None = None, **params: Any) -> tuple[Any, Any]:
    """Functional form: ``(cluster_centers, labels)`` of :class:`MeanShift` ``(bandwidth=..., **params)``.

    ``coordinates=`` is passed to ``fit``; every other keyword to the estimator.
    """
    coordinates = params.pop("coordinates", None)
    model = MeanShift(bandwidth=bandwidth, **params).fit(X, coordinates=coordinates)
    return model.cluster_centers_, model.labels_
