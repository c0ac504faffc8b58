"""Choosing the margin alpha of the Kong & Fowlkes loss (Sec. 3.2, Proposition 2).

A negative pair pays ``[s_ij - alpha]_+`` with the calibrated similarity
``s = (1 + cos theta) / 2`` (Eq. 1).  Zero loss needs every pair of the ``n``
instance vectors on the unit sphere ``S^{dim-1}`` to satisfy ``s <= alpha``,
i.e. the smallest admissible alpha is ``(1 + cos theta_n) / 2`` with
``theta_n`` the best possible minimum angle between ``n`` points: Tammes's
problem.  A smaller alpha is a wider margin.

Proposition 2 (paper, dim = 3, from Habicht & van der Waerden's asymptotics):
choosing ``alpha <= 1 - 2 pi / (sqrt(3) n)`` guarantees that some pair has
``s_ij > alpha`` (no zero-loss embedding); choosing
``alpha > 1 - ((8 pi / (sqrt(3) n))^(1/2) - C n^(-2/3))^2 / 4`` guarantees that
one exists (``C`` is an unspecified constant).  The paper's examples "if an
image has at most {4, 5, 6, 7} instances, alpha can be set as small as
{0.093, 0.274, 0.395, 0.482}" are the first, necessary, bound:
:func:`tammes_alpha_bound`.  Being asymptotic, it is loose for small ``n``
(four points need ``alpha >= 1/3``, the regular tetrahedron).

For any dimension the paper's "safe (trivial) strategy" is ``alpha = 0.5`` for
up to ``2 dim`` instances, placed antipodally on orthogonal axes.
:func:`max_margin_for_instances` gives the exact smallest alpha for
``n <= 2 dim`` (Rankin 1955: the regular simplex for ``n <= dim + 1``, right
angles for ``dim + 2 <= n <= 2 dim``) and, beyond, the alpha of an explicit
numerical arrangement (:func:`spread_on_sphere`), which is achievable but may
exceed the unknown optimum slightly.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from labkit.errors import DataError


def tammes_alpha_bound(n: int) -> float:
    """Proposition 2's bound ``1 - 2 pi / (sqrt(3) n)`` for ``n`` instances on the 2-sphere.

    With ``alpha`` at or below it, some negative pair must have ``s > alpha``;
    the paper quotes it as how small alpha "can be set".
    """
    _check_n(n)
    return 1 - 2 * math.pi / (math.sqrt(3) * n)


def max_margin_for_instances(n: int, dim: int = 3) -> float:
    """Smallest alpha (widest margin) at which ``n`` instances fit on ``S^{dim-1}`` at zero loss.

    Exact for ``n <= 2 dim``; for more instances, the alpha reached by
    :func:`spread_on_sphere` (an upper bound on the optimum; on the 2-sphere
    within about 0.003 of the best known arrangements for ``n <= 24``).
    """
    _check_n(n)
    if dim < 1:
        raise DataError(f"max_margin_for_instances: dim must be >= 1, got {dim}")
    if n <= 2:
        return 0.0
    if n <= dim + 1:
        return (n - 2) / (2 * (n - 1))  # regular simplex: cos = -1 / (n - 1)
    if n <= 2 * dim:
        return 0.5
    points = spread_on_sphere(n, dim)
    return max_similarity(points)


def max_instances_for_margin(alpha: float, dim: int = 3, limit: int = 256) -> int:
    """Most instances (at most ``limit``) that fit on ``S^{dim-1}`` with every pair ``s <= alpha``.

    Exact when ``alpha < 0.5`` (at most ``dim + 1`` instances, simplex) and
    ``alpha == 0.5`` (``2 dim``); above 0.5 a lower bound from the numerical
    arrangements, searched by bisection (capped by Proposition 2 when dim = 3).
    """
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"max_instances_for_margin: alpha must lie in [0, 1], got {alpha}")
    if alpha >= 1.0:
        return limit
    if alpha < 0.5:
        # (n - 2) / (2 (n - 1)) <= alpha  <=>  n <= (2 - 2 alpha) / (1 - 2 alpha)
        return min(dim + 1, math.floor((2 - 2 * alpha) / (1 - 2 * alpha) + 1e-9), limit)
    low = min(2 * dim, limit)  # always fits
    if alpha == 0.5:
        return low  # more than 2 dim points always have an angle below 90 degrees (Rankin)
    high = limit + 1  # assumed not to fit
    if dim == 3:
        high = min(high, math.floor(2 * math.pi / (math.sqrt(3) * (1 - alpha))) + 1)
    while high - low > 1:
        mid = (low + high) // 2
        if max_margin_for_instances(mid, dim) <= alpha:
            low = mid
        else:
            high = mid
    return low


def max_similarity(points: Tensor) -> float:
    """Largest calibrated similarity ``(1 + cos) / 2`` over pairs of rows of ``points [n, dim]``."""
    unit = torch.nn.functional.normalize(points.double(), dim=1)
    cos = unit @ unit.t()
    cos.fill_diagonal_(-1.0)
    return float((1 + cos.max()) / 2)


def spread_on_sphere(n: int, dim: int, *, steps: int = 400, restarts: int = 4, seed: int = 0) -> Tensor:
    """``n`` unit vectors in ``R^dim`` pushed apart: an approximate solution of Tammes's problem.

    Projected gradient descent (Adam) on a soft maximum of the pairwise cosines
    whose temperature sharpens over the steps, from ``restarts`` seeded random
    starts; the arrangement with the smallest maximum cosine wins.

    Returns:
        float64 ``[n, dim]`` unit vectors.
    """
    _check_n(n)
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(restarts, n, dim, generator=gen, dtype=torch.float64), dim=2)
    x.requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=0.02)
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    for step in range(steps):
        sharpness = 10.0 + 490.0 * step / max(steps - 1, 1)
        unit = torch.nn.functional.normalize(x, dim=2)
        cos = (unit @ unit.transpose(1, 2))[:, off_diagonal]
        loss = torch.logsumexp(sharpness * cos, dim=1).sum() / sharpness
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        unit = torch.nn.functional.normalize(x, dim=2)
        worst = torch.stack([torch.tensor(max_similarity(u)) for u in unit])
        return unit[worst.argmin()].clone()


def _check_n(n: int) -> None:
    if n < 1:
        raise DataError(f"number of instances must be >= 1, got {n}")
