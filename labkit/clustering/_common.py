"""Shared plumbing for the clustering modules: input checks, conversions, chunked distances."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from labkit.errors import DataError

KERNELS = ("flat", "gaussian", "vmf")

#: default bound on the number of elements of any pairwise block (64 MiB of float32)
DEFAULT_CHUNK = 1 << 24


def as_points(X: Any, name: str = "X") -> tuple[Tensor, Callable[[Tensor], Any]]:
    """``X`` (numpy array, nested list or tensor) as a float tensor ``[N, D]`` plus a converter back.

    The converter returns numpy arrays for numpy/list input and tensors (on the
    input's device) for tensor input. Integer input becomes float32; float64
    stays float64. Raises :class:`DataError` for a wrong shape or NaN/inf values.
    """
    if isinstance(X, Tensor):
        t = X.detach()
        back: Callable[[Tensor], Any] = lambda y: y
    else:
        t = torch.as_tensor(np.asarray(X))
        back = lambda y: y.cpu().numpy()
    if t.ndim != 2:
        raise DataError(f"{name} must have shape [N, D] (points x features), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(1).sum())
        raise DataError(f"{name} contains NaN or infinite values ({bad} of {t.shape[0]} rows); clean them first")
    return t, back


def check_bandwidth(bandwidth: Any, name: str = "bandwidth") -> float:
    """``bandwidth`` as a positive finite float, or :class:`DataError`."""
    try:
        value = float(bandwidth)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a positive number, got {bandwidth!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive finite number, got {bandwidth!r}")
    return value


def check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise DataError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return kernel


def row_chunks(n_rows: int, n_cols: int, budget: int) -> Iterator[slice]:
    """Row slices such that each ``rows x n_cols`` block holds at most ``budget`` elements (>= 1 row)."""
    step = max(1, budget // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def sq_dist_mm(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]`` by the matmul expansion (fast, ~1e-6 relative error)."""
    d = torch.addmm((b * b).sum(1)[None, :], a, b.T, alpha=-2.0)
    d += (a * a).sum(1)[:, None]
    return d.clamp_min_(0)


def nearest(points: Tensor, centers: Tensor, budget: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Index of and squared distance to the nearest center for every point, chunked over points."""
    idx = torch.empty(len(points), dtype=torch.int64, device=points.device)
    dist = torch.empty(len(points), dtype=points.dtype, device=points.device)
    c2 = (centers * centers).sum(1)[None, :]
    for rows in row_chunks(len(points), len(centers), budget):
        p = points[rows]
        partial, idx[rows] = torch.addmm(c2, p, centers.T, alpha=-2.0).min(1)  # |c|^2 - 2 p.c
        dist[rows] = (partial + (p * p).sum(1)).clamp_min_(0)
    return idx, dist


def unique_rows(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, inverse)`` for the distinct rows of an int64 matrix ``[N, D]``.

    ``first[j]`` is the smallest index of a row equal to distinct row ``j`` and
    ``inverse[i]`` the distinct row of row ``i`` (distinct rows in an arbitrary
    but deterministic order). Rows are hashed to one int64 each (fixed random
    odd multipliers, wrap-around arithmetic) and deduplicated with a 1-D sort,
    far faster than ``torch.unique(dim=0)``; a hash collision is detected and
    falls back to the exact ``torch.unique(dim=0)``.
    """
    n = keys.shape[0]
    arange = torch.arange(n, device=keys.device)
    if n == 0:
        return arange, arange
    mult = _hash_multipliers(keys.shape[1], keys.device)
    h = (keys * mult).sum(1)
    _, inverse = torch.unique(h, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, arange, reduce="amin")
    if not bool((keys[first][inverse] == keys).all()):  # a collision: do it exactly
        _, inverse = torch.unique(keys, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=keys.device)
        first.scatter_reduce_(0, inverse, arange, reduce="amin")
    return first, inverse


@functools.lru_cache(maxsize=64)
def _hash_multipliers(d: int, device: torch.device) -> Tensor:
    rng = np.random.default_rng(0x5EED)
    values = rng.integers(1, 2**62, size=d, dtype=np.int64) | 1
    return torch.as_tensor(values, device=device)


def dedupe(positions: Tensor, tol: float) -> Tensor:
    """Indices of one representative per group of rows that agree after rounding to a grid of step ``tol``."""
    if len(positions) <= 1:
        return torch.arange(len(positions), device=positions.device)
    first, _ = unique_rows(torch.round(positions / tol).to(torch.int64))
    return torch.sort(first).values
