"""IRNet's random-walk propagation (Ahn et al. 2019, Eq. 12-13) on a sparse pixel graph.

The pixels of an ``H x W`` map are the nodes; node ``i`` is linked to itself
(``a_ii = 1``) and to every pixel within the radius of
:func:`labkit.losses.irnet.pair_offsets` (both directions, ``a_ij = a_ji``
from Eq. 7).  The transition matrix is ``T = S^-1 A^beta`` (Eq. 12; ``A^beta``
element-wise, ``S`` the row sums) and a score map is propagated by
``vec(M*) = T^t vec(M)`` (Eq. 13).

The authors' code builds ``T`` as a dense ``HW x HW`` matrix and squares it
eight times (``T^256``): ``O((HW)^2)`` memory, about 16 GiB for a 1024 x 1024
image at stride 4.  Here ``T`` is a ``torch.sparse_csr`` matrix with
``HW x (2P + 1)`` non-zeros (``P`` offsets; 69 per row at radius 5) and the
walk is ``t`` sparse products ``v <- T v``: memory ``O(HW x neighbours)``,
never the dense matrix.  :func:`dense_random_walk` is the authors'
squaring, kept as the reference for tests and benchmarks.
"""
from __future__ import annotations

import warnings

import torch

from labkit.errors import LabkitError
from labkit.losses.irnet import pair_affinity, pair_offsets, valid_pairs


def affinity_graph(boundary: torch.Tensor, radius: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, a)``: the symmetric pixel-affinity graph of one boundary map ``[H, W]`` (Eq. 7).

    Every pair within ``radius`` appears in both directions, plus the self
    loops ``a_ii = 1``; indices are flat pixel indices ``y * W + x``.
    """
    if boundary.ndim != 2:
        raise LabkitError(f"boundary must be one [H,W] map, got shape {tuple(boundary.shape)}")
    if not torch.isfinite(boundary).all():
        raise LabkitError("boundary contains NaN or infinite values")
    height, width = boundary.shape
    offsets = pair_offsets(radius).to(boundary.device)
    aff = pair_affinity(boundary[None], offsets)[0]  # [P, H, W]
    valid = valid_pairs(height, width, offsets, boundary.device)
    index = torch.arange(height * width, device=boundary.device).view(height, width)
    p, ys, xs = valid.nonzero(as_tuple=True)
    src = index[ys, xs]
    dst = (ys + offsets[p, 0]) * width + xs + offsets[p, 1]
    a = aff[p, ys, xs]
    self_loops = index.flatten()
    rows = torch.cat([src, dst, self_loops])
    cols = torch.cat([dst, src, self_loops])
    values = torch.cat([a, a, torch.ones(height * width, dtype=a.dtype, device=a.device)])
    return rows, cols, values


def transition_matrix(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0) -> torch.Tensor:
    """Eq. 12 as a sparse CSR ``[HW, HW]`` matrix: ``T = S^-1 A^beta``, rows summing to one."""
    if not beta > 0:
        raise LabkitError(f"beta must be > 0, got {beta}")
    rows, cols, values = affinity_graph(boundary, radius)
    values = values.clamp(min=0) ** beta
    n = boundary.numel()
    row_sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, rows, values)
    values = values / row_sums[rows]
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def random_walk(transition: torch.Tensor, scores: torch.Tensor, steps: int = 256) -> torch.Tensor:
    """Eq. 13: ``T^steps`` applied to score maps ``[C, H, W]`` (or ``[C, N]``), by ``steps`` sparse products."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise LabkitError(f"steps must be an integer >= 0, got {steps!r}")
    n = transition.shape[0]
    shape = scores.shape
    if scores.ndim < 2 or scores[0].numel() != n:
        raise LabkitError(f"scores {tuple(shape)} do not match a transition matrix over {n} pixels")
    v = scores.reshape(shape[0], n).T.contiguous().to(transition.dtype)
    for _ in range(steps):
        v = transition @ v
    return v.T.reshape(shape)


def dense_random_walk(transition: torch.Tensor, scores: torch.Tensor, squarings: int = 8) -> torch.Tensor:
    """The authors' reference: a dense ``T`` squared ``squarings`` times (``T^(2^squarings)``), then applied.

    ``O((HW)^2)`` memory: for small graphs (tests, the benchmark's reference).
    """
    dense = transition.to_dense() if transition.layout != torch.strided else transition
    for _ in range(squarings):
        dense = dense @ dense
    n = dense.shape[0]
    shape = scores.shape
    v = scores.reshape(shape[0], n).T.to(dense.dtype)
    return (dense @ v).T.reshape(shape)


def propagate(
    scores: torch.Tensor, boundary: torch.Tensor, *, radius: int = 5, beta: float = 10.0, steps: int = 256
) -> torch.Tensor:
    """Eq. 13 in full: ``T^steps vec(scores * (1 - B))`` for score maps ``[C, H, W]`` and a boundary map ``[H, W]``."""
    if scores.ndim != 3 or scores.shape[-2:] != boundary.shape:
        raise LabkitError(f"scores must be [C,H,W] over the boundary map {tuple(boundary.shape)}, got {tuple(scores.shape)}")
    if scores.shape[0] == 0:
        return scores.clone()
    transition = transition_matrix(boundary, radius, beta)
    return random_walk(transition, scores * (1 - boundary), steps).to(scores.dtype)
