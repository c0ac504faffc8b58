"""The generalised Thomson problem: ``K`` points spread evenly over the unit sphere ``S^{D-1}``.

HLE (Kerola et al. 2021, Eq. 17) initialises its class means as

    ``argmin_{mu_1..mu_K on the sphere} sum_{i != j} 1 / d_cos(mu_i, mu_j)``,  ``d_cos(a, b) = 1 - a.b``,

"a local minimum via gradient descent".  :func:`thomson_points` does exactly
that: Riemannian gradient descent on the sphere (the Euclidean gradient
projected onto the tangent space, a step of at most ``lr`` per point, then
renormalisation), with backtracking so that the energy never increases, from
random points; it returns the unit vectors and the energy after every step.  Known minima it reaches: 2 points antipodal, 3 on a great
circle 120 degrees apart, 4 at a regular tetrahedron (pairwise cosine -1/3),
6 at an octahedron.  For ``K <= D + 1`` the minimum is a regular simplex
(pairwise cosine ``-1/(K-1)``).

The energy uses the cosine distance (the paper's choice), not the Euclidean
distance of Thomson's original problem; both have the same minimisers for
``K <= D + 1``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from labkit.errors import LabkitError


def thomson_energy(points: Tensor, eps: float = 1e-9) -> Tensor:
    """Eq. 17's energy ``sum_{i != j} 1 / d_cos(p_i, p_j)`` of unit vectors ``points [K, D]``."""
    if points.ndim != 2:
        raise LabkitError(f"thomson_energy: points must be [K, D], got {tuple(points.shape)}")
    k = points.shape[0]
    if k < 2:
        return points.sum() * 0.0
    dist = 1.0 - points @ points.t()
    off = ~torch.eye(k, dtype=torch.bool, device=points.device)
    return (1.0 / dist[off].clamp(min=eps)).sum()


def thomson_points(
    num_points: int,
    dim: int,
    *,
    steps: int = 500,
    lr: float = 0.05,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(points [K, D], energies [steps + 1])``: a local minimum of Eq. 17 by gradient descent.

    Starts from ``K`` random unit vectors (``seed`` or ``generator``), then
    ``steps`` projected gradient steps (the largest point move ``lr``, halved
    until the energy does not increase, grown by 1.2 after a success).  ``energies[0]`` is the start, ``energies[t]`` the energy
    after step ``t`` (float64 throughout).
    """
    if int(num_points) < 1 or int(dim) < 1:
        raise LabkitError(f"thomson_points: need num_points >= 1 and dim >= 1, got {num_points}, {dim}")
    if int(dim) == 1 and int(num_points) > 2:
        raise LabkitError(f"thomson_points: a 1-dim sphere holds only 2 points, asked for {num_points}")
    if int(steps) < 0 or not lr > 0:
        raise LabkitError(f"thomson_points: need steps >= 0 and lr > 0, got {steps}, {lr}")
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    points = torch.randn(int(num_points), int(dim), generator=gen, dtype=torch.float64)
    points = points / points.norm(dim=1, keepdim=True)
    step = float(lr)
    energy, grad = _energy_and_tangent_grad(points)
    energies = [energy]
    for _ in range(int(steps)):
        scale = grad.norm(dim=1).max().clamp(min=1e-12)
        while True:  # backtracking: accept only a step that lowers the energy
            trial = points - step * grad / scale
            trial = trial / trial.norm(dim=1, keepdim=True)  # retraction onto the sphere
            trial_energy, trial_grad = _energy_and_tangent_grad(trial)
            if trial_energy <= energy or step < 1e-12:
                break
            step *= 0.5
        if trial_energy <= energy:
            points, energy, grad = trial, trial_energy, trial_grad
            step *= 1.2
        energies.append(energy)
    return points, torch.tensor(energies, dtype=torch.float64)


def _energy_and_tangent_grad(points: Tensor) -> tuple[float, Tensor]:
    """Energy and its gradient projected onto the sphere's tangent space at ``points``."""
    free = points.detach().clone().requires_grad_(True)
    energy = thomson_energy(free)
    (grad,) = torch.autograd.grad(energy, free)
    grad = grad - (grad * points).sum(dim=1, keepdim=True) * points
    return float(energy.detach()), grad


__all__ = ["thomson_energy", "thomson_points"]
