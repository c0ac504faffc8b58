"""The mean-shift engine behind :class:`labkit.clustering.MeanShift` (its docstring gives the algorithm).

Everything here works on a "working copy" of the points: float ``[N, D]``,
centred, coordinates already scaled, unit-normalised for the vMF kernel.
Two grids organise the points:

* fine :class:`Cells` of side ``bandwidth`` (scikit-learn's seeding grid): the
  weighted cells of the binned phase;
* a coarse :class:`Index` (a few hundred blocks of fine cells): it prunes the
  exact kernel sums and its connected components split the work into
  independent groups.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torch import Tensor

from labkit.clustering._common import dedupe, nearest, row_chunks, sq_dist_mm, unique_rows

#: work groups are packed up to about this many (seed, cell or point) pairs
GROUP_PAIRS = 1 << 18
#: the coarse index aims at no more than this many cells
COARSE_CELLS = 512


@dataclass
class Cells:
    """Points grouped into the grid cells ``round(grid / side)``.

    ``radius[b]`` bounds the distance of any point of cell ``b`` to
    ``centroid[b]`` (the max, inflated by a rounding margin).
    """

    side: float
    key: Tensor  # [B, D] int64 cell index
    first: Tensor  # [B] index of one point of the cell
    count: Tensor  # [B] int64 points per cell
    weight: Tensor  # [B] the count as a float
    sums: Tensor  # [B, D] sum of the cell's points
    centroid: Tensor  # [B, D]
    radius: Tensor  # [B]
    of_point: Tensor  # [N] int64 cell of every point


def make_cells(work: Tensor, grid: Tensor, side: float) -> Cells:
    """Cells ``round(grid / side)`` holding the rows of ``work``."""
    keys = torch.round(grid / side).to(torch.int64)
    first, inverse = unique_rows(keys)
    count = torch.bincount(inverse, minlength=len(first))
    weight = count.to(work.dtype)
    sums = torch.zeros(len(first), work.shape[1], dtype=work.dtype, device=work.device).index_add_(0, inverse, work)
    centroid = sums / weight[:, None]
    spread = (work - centroid[inverse]).norm(dim=1)
    radius = torch.zeros(len(first), dtype=work.dtype, device=work.device).scatter_reduce_(0, inverse, spread, "amax")
    radius = radius * (1 + 1e-5) + 1e-6 * side
    return Cells(side, keys[first], first, count, weight, sums, centroid, radius, inverse)


@dataclass
class Index:
    """Coarse cells with their points stored contiguously, and the connected components of the cells.

    Two coarse cells are linked when some point of one can be within ``reach``
    of some point of the other (``|c_i - c_j| <= r_i + r_j + reach``), so
    points of different components are always farther apart than ``reach``.
    """

    cells: Cells
    points: Tensor  # [N, D] sorted by cell
    start: Tensor  # [Bc] offset of each cell's points
    component: Tensor  # [Bc] int64

    def gather(self, cells: Tensor) -> Tensor:
        """The points of the given (sorted) cells; a view when they are one contiguous run."""
        count = self.cells.count[cells]
        if len(cells) == 0 or int(cells[-1] - cells[0]) + 1 == len(cells):
            lo = int(self.start[cells[0]]) if len(cells) else 0
            return self.points[lo : lo + int(count.sum())]
        offset = torch.cumsum(count, 0) - count
        begin = (self.start[cells] - offset).repeat_interleave(count)
        return self.points[begin + torch.arange(len(begin), device=begin.device)]

    def component_of(self, positions: Tensor, budget: int) -> Tensor:
        """The component of the nearest coarse cell of each position."""
        return self.component[nearest(positions, self.cells.centroid, budget)[0]]


def make_index(work: Tensor, fine: Cells, reach: float) -> Index:
    """Coarse cells: blocks of ``m^D`` fine cells, ``m`` the smallest power of two with ``m * side >= 2 reach``
    that gives at most ``COARSE_CELLS`` cells (doubled as needed).

    Built from the fine cells' statistics (no second pass over the points
    but one sort); a coarse radius is the bound ``max |c_fine - c| + r_fine``.
    """
    m = 1
    while m * fine.side < 2 * reach:
        m *= 2
    while True:
        keys = torch.div(fine.key, m, rounding_mode="floor")
        first, coarse_of_fine = unique_rows(keys)
        if len(first) <= COARSE_CELLS or len(first) == 1:
            break
        m *= 2
    n = len(first)
    dtype, device = work.dtype, work.device
    count = torch.zeros(n, dtype=torch.int64, device=device).index_add_(0, coarse_of_fine, fine.count)
    weight = count.to(dtype)
    sums = torch.zeros(n, work.shape[1], dtype=dtype, device=device).index_add_(0, coarse_of_fine, fine.sums)
    centroid = sums / weight[:, None]
    reach_of_fine = (fine.centroid - centroid[coarse_of_fine]).norm(dim=1) + fine.radius
    radius = torch.zeros(n, dtype=dtype, device=device).scatter_reduce_(0, coarse_of_fine, reach_of_fine, "amax")
    radius = radius * (1 + 1e-5) + 1e-6 * fine.side
    of_point = coarse_of_fine[fine.of_point]
    cells = Cells(m * fine.side, keys[first], fine.first[first], count, weight, sums, centroid, radius, of_point)
    order = torch.argsort(of_point, stable=True)
    start = torch.cumsum(count, 0) - count
    d2 = sq_dist_mm(centroid, centroid)
    scale = float((centroid**2).sum(1).max())
    limit = (radius[:, None] + radius[None, :] + reach) ** 2 * (1 + 1e-4) + 1e-5 * scale
    rows, cols = (d2 <= limit).nonzero(as_tuple=True)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return Index(cells, work[order], start, torch.as_tensor(component, dtype=torch.int64, device=device))


def renormalise(x: Tensor, sphere: int) -> Tensor:
    """Project the first ``sphere`` columns back onto the unit sphere (vMF kernel)."""
    if sphere:
        x = x.clone()
        x[:, :sphere] = x[:, :sphere] / x[:, :sphere].norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x


def _kernel(seeds: Tensor, points: Tensor, kernel: str, bandwidth: float, reach: float) -> Tensor:
    """Kernel weights ``[len(seeds), len(points)]``; gaussian and vMF are cut at ``reach``."""
    if kernel == "flat":  # d^2 <= h^2  <=>  |p|^2 - 2 s.p <= h^2 - |s|^2, one pass fewer
        partial = torch.addmm((points * points).sum(1)[None, :], seeds, points.T, alpha=-2.0)
        return partial.le_((bandwidth * bandwidth - (seeds * seeds).sum(1))[:, None])  # 1.0 / 0.0 in place
    d2 = sq_dist_mm(seeds, points)
    return torch.where(d2 <= reach * reach, torch.exp(d2 * (-0.5 / bandwidth**2)), 0.0)


def _cell_kernel(seeds: Tensor, centroid: Tensor, radius: Tensor, kernel: str, bandwidth: float, reach: float) -> Tensor:
    """Binned-phase weight of each cell for each seed, to be multiplied by the cell's count.

    Flat kernel: the fraction of the cell inside the ball, approximated by a
    linear ramp from 1 (``d <= bandwidth - radius``, the whole cell is inside)
    to 0 (``d >= bandwidth + radius``, none of it is), ``d`` the distance to
    the centroid. Gaussian and vMF: the weight at the centroid, for cells
    within ``reach + radius``. A zero row means that no point is in reach.
    """
    d = sq_dist_mm(seeds, centroid).sqrt_()
    if kernel == "flat":
        return d.sub_(bandwidth + radius).div_(-2 * radius.clamp_min(1e-6 * bandwidth)).clamp_(0, 1)
    return torch.where(d <= reach + radius, torch.exp(d * d * (-0.5 / bandwidth**2)), 0.0)


def pack(labels: np.ndarray, seeds_per: np.ndarray, cost_per: np.ndarray) -> np.ndarray:
    """Group of every label: consecutive labels packed while ``seeds x cost`` stays under ``GROUP_PAIRS``."""
    group = np.empty(len(labels), dtype=np.int64)
    current, n_seeds, cost = -1, 0, 0
    for i in range(len(labels)):
        if current < 0 or (n_seeds + seeds_per[i]) * (cost + cost_per[i]) > GROUP_PAIRS:
            current, n_seeds, cost = current + 1, 0, 0
        group[i] = current
        n_seeds, cost = n_seeds + seeds_per[i], cost + cost_per[i]
    return group


def shift_binned(
    seeds: Tensor, seed_comp: Tensor, cells: Cells, cell_comp: Tensor, kernel: str, bandwidth: float,
    reach: float, max_iter: int, tol: float, budget: int, sphere: int,
) -> tuple[Tensor, int]:
    """Phase 1: move all seeds against the fine cells' centroids, weighted by their counts.

    Approximate (a cell counts by the fraction of it estimated inside the
    ball, see :func:`_cell_kernel`) but cheap: each seed only meets the cells
    of its component of the coarse index, ``seeds_c x cells_c`` per component
    (small components packed together). Seeds that agree to ``tol`` are merged
    after every step; a seed with no cell in reach has an empty ball and is
    dropped, as scikit-learn drops it. Returns the positions and the number of
    steps taken.
    """
    comps, seed_label = torch.unique(seed_comp, return_inverse=True)
    seeds_per = torch.bincount(seed_label, minlength=len(comps)).cpu().numpy()
    cell_label = torch.searchsorted(comps, cell_comp).clamp(max=len(comps) - 1)
    cell_label[comps[cell_label] != cell_comp] = -1  # cells of components without seeds
    cells_per = torch.bincount(cell_label[cell_label >= 0], minlength=len(comps)).cpu().numpy()
    group_of = torch.as_tensor(pack(np.arange(len(comps)), seeds_per, cells_per), device=seeds.device)
    seed_group = group_of[seed_label]
    cell_group = torch.where(cell_label >= 0, group_of[cell_label.clamp(min=0)], -1)
    order = torch.argsort(torch.where(cell_group < 0, len(comps), cell_group), stable=True)
    bounds = torch.searchsorted(cell_group[order], torch.arange(int(group_of.max()) + 2, device=seeds.device))
    bounds = bounds.tolist()
    centroid, radius = cells.centroid[order], cells.radius[order]
    sums, weight = cells.sums[order], cells.weight[order]
    pos, active = seeds.clone(), torch.ones(len(seeds), dtype=torch.bool, device=seeds.device)
    steps = 0
    for steps in range(1, max_iter + 1):
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            return pos, steps - 1
        old = pos[idx]
        num, den = torch.zeros_like(old), torch.zeros(len(idx), dtype=old.dtype, device=old.device)
        groups = seed_group[idx]
        by_group = torch.argsort(groups, stable=True)
        present, counts = torch.unique_consecutive(groups[by_group], return_counts=True)
        for g, rows in zip(present.tolist(), torch.split(by_group, counts.tolist())):
            lo, hi = bounds[g], bounds[g + 1]
            for part in row_chunks(len(rows), hi - lo, budget):
                k = _cell_kernel(old[rows[part]], centroid[lo:hi], radius[lo:hi], kernel, bandwidth, reach)
                num[rows[part]], den[rows[part]] = k @ sums[lo:hi], k @ weight[lo:hi]
        found = den > 0
        new = renormalise(num / den.clamp_min(1e-30)[:, None], sphere)
        pos[idx] = new
        active[idx] = found & ((new - old).norm(dim=1) > tol)
        alive = torch.ones(len(pos), dtype=torch.bool, device=pos.device)
        alive[idx[~found]] = False
        kept = alive.nonzero().squeeze(1)
        kept = kept[dedupe(pos[kept], tol)]
        pos, active, seed_group = pos[kept], active[kept], seed_group[kept]
    return pos, steps


def kernel_sums(
    seeds: Tensor, index: Index, kernel: str, bandwidth: float, reach: float, budget: int
) -> tuple[Tensor, Tensor]:
    """Exact ``(sum_i w_i x_i, sum_i w_i)`` over all points for every seed.

    Only points of coarse cells within ``reach + radius`` of a seed can have a
    non-zero weight. Seeds are grouped by the component of their nearest
    coarse cell (components packed while cheap); each group is summed densely
    over the union of its seeds' cells, in chunks of at most ``budget`` pairs.
    """
    num = torch.zeros_like(seeds)
    den = torch.zeros(len(seeds), dtype=seeds.dtype, device=seeds.device)
    if len(seeds) == 0:
        return num, den
    cells = index.cells
    n_cells = len(cells.count)
    scale = float((cells.centroid**2).sum(1).max() + (seeds**2).sum(1).max())
    limit = (reach + cells.radius) ** 2 * (1 + 1e-4) + 1e-5 * scale  # covers the matmul's rounding
    near = torch.zeros(len(seeds), n_cells, dtype=torch.bool, device=seeds.device)
    closest = torch.empty(len(seeds), dtype=torch.int64, device=seeds.device)
    for part in row_chunks(len(seeds), n_cells, budget):
        d2 = sq_dist_mm(seeds[part], cells.centroid)
        near[part] = d2 <= limit
        closest[part] = d2.argmin(1)
    comps, label = torch.unique(index.component[closest], return_inverse=True)
    reached = torch.zeros(len(comps), n_cells, dtype=seeds.dtype, device=seeds.device)
    reached.index_add_(0, label, near.to(seeds.dtype))
    reached_np = reached.cpu().numpy() > 0
    seeds_per = np.bincount(label.cpu().numpy(), minlength=len(comps))
    points_per = reached_np @ cells.count.cpu().numpy()
    group = torch.as_tensor(pack(np.arange(len(comps)), seeds_per, points_per), device=seeds.device)
    for g in range(int(group.max()) + 1):
        members = (group == g).nonzero().squeeze(1)
        rows = torch.isin(label, members).nonzero().squeeze(1)
        union = torch.as_tensor(np.flatnonzero(reached_np[members.cpu().numpy()].any(0)), device=seeds.device)
        num[rows], den[rows] = _dense_sums(seeds[rows], index.gather(union), kernel, bandwidth, reach, budget)
    return num, den


def _dense_sums(
    seeds: Tensor, points: Tensor, kernel: str, bandwidth: float, reach: float, budget: int
) -> tuple[Tensor, Tensor]:
    """Kernel sums of the given points for every seed, chunked over points."""
    num = torch.zeros_like(seeds)
    den = torch.zeros(len(seeds), dtype=seeds.dtype, device=seeds.device)
    for cols in row_chunks(len(points), len(seeds), budget):
        p = points[cols]
        k = _kernel(seeds, p, kernel, bandwidth, reach)
        num += k @ p
        den += k.sum(1)
    return num, den


def shift_exact(
    seeds: Tensor, index: Index, kernel: str, bandwidth: float, reach: float, max_iter: int, tol: float,
    budget: int, sphere: int,
) -> tuple[Tensor, Tensor, int]:
    """Phase 2: scikit-learn's per-seed loop, all seeds at once, against every point.

    A seed moves to the kernel-weighted mean of the points around it until it
    moves by at most ``tol`` or has taken ``max_iter`` steps; a seed with an
    empty ball is dropped. Seeds that agree to ``tol / 10`` are merged.
    Returns the modes, their intensity (the kernel mass of the last ball: the
    number of points within ``bandwidth`` for the flat kernel) and the largest
    number of completed iterations (scikit-learn's ``n_iter_``).
    """
    pos = seeds.clone()
    intensity = torch.zeros(len(pos), dtype=pos.dtype, device=pos.device)
    active = torch.ones(len(pos), dtype=torch.bool, device=pos.device)
    n_iter = 0
    for it in range(max_iter + 1):
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        n_iter = it
        old = pos[idx]
        num, den = kernel_sums(old, index, kernel, bandwidth, reach, budget)
        empty = den <= 0
        new = renormalise(num / den.clamp_min(1e-30)[:, None], sphere)
        pos[idx] = torch.where(empty[:, None], old, new)
        intensity[idx] = den
        active[idx[empty | ((new - old).norm(dim=1) <= tol) | (it == max_iter)]] = False
        kept = torch.ones(len(pos), dtype=torch.bool, device=pos.device)
        kept[idx[empty]] = False
        kept = kept.nonzero().squeeze(1)
        kept = kept[dedupe(pos[kept], tol / 10)]
        pos, intensity, active = pos[kept], intensity[kept], active[kept]
    return pos, intensity, n_iter


def merge_modes(modes: Tensor, intensity: Tensor, bandwidth: float) -> tuple[Tensor, Tensor]:
    """scikit-learn's post-processing: by decreasing intensity, a mode suppresses the modes within ``bandwidth``.

    Ties in intensity are broken by the mode's coordinates, as scikit-learn
    sorts ``(intensity, tuple(center))``. Returns the kept modes and their
    intensities, strongest first.
    """
    m = modes.detach().cpu().double().numpy()
    s = intensity.detach().cpu().double().numpy()
    order = np.lexsort(tuple(m[:, j] for j in range(m.shape[1] - 1, -1, -1)) + (s,))[::-1]
    neighbours = cKDTree(m[order]).query_ball_point(m[order], r=bandwidth * (1 + 1e-9))
    keep = np.ones(len(m), dtype=bool)
    for i, near in enumerate(neighbours):
        if keep[i]:
            keep[near] = False
            keep[i] = True
    chosen = torch.as_tensor(order[keep].copy(), device=modes.device)
    return modes[chosen], intensity[chosen]


def assign(points: Tensor, centers: Tensor, bandwidth: float, cluster_all: bool, budget: int) -> Tensor:
    """Label of the nearest center for every point; -1 beyond ``bandwidth`` unless ``cluster_all``."""
    idx, d2 = nearest(points, centers, budget)
    if not cluster_all:
        idx[d2 > bandwidth * bandwidth] = -1
    return idx
