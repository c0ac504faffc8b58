"""IRNet's class-agnostic instance map from a displacement field (Ahn et al. 2019, Sec. 5.1).

A displacement field ``D [2, H, W]`` holds, per pixel, the ``(dy, dx)`` vector
(in pixels) to its instance's centroid.  :func:`refine_displacement` applies
Eq. 10, ``D_{u+1}(x) = D_u(x) + D(x + D_u(x))``, reading ``D`` at the nearest
pixel of ``x + D_u(x)`` clamped to the image (as the authors' code does);
the paper runs 100 iterations, the authors' code 300.
:func:`detect_centroids` takes the pixels with ``|D| < threshold`` (the
authors' 2.5, in pixels of the map) as centroid candidates and their
4-connected components as centroids; :func:`instance_map` sends every pixel to
the centroid at ``x + D_refined(x)``, or to the nearest centroid (by its mean
position) when that point is not a candidate.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from labkit.errors import LabkitError


def _check_field(displacement: torch.Tensor) -> None:
    if not isinstance(displacement, torch.Tensor) or displacement.ndim != 3 or displacement.shape[0] != 2:
        raise LabkitError(f"a displacement field must be a [2,H,W] tensor, got {getattr(displacement, 'shape', displacement)}")
    if not torch.isfinite(displacement).all():
        raise LabkitError("the displacement field contains NaN or infinite values")


def _grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([ys, xs]).float()


def _read(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``field [2,H,W]`` at the nearest pixel of ``points [2,H,W]``, clamped to the image."""
    height, width = field.shape[-2:]
    y = points[0].round().long().clamp(0, height - 1)
    x = points[1].round().long().clamp(0, width - 1)
    return field[:, y, x]


def refine_displacement(displacement: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """Eq. 10 repeated ``iterations`` times; returns ``D_iterations`` ``[2, H, W]``."""
    _check_field(displacement)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise LabkitError(f"iterations must be an integer >= 0, got {iterations!r}")
    field = displacement.float()
    grid = _grid(*field.shape[-2:], field.device)
    current = field.clone()
    for _ in range(iterations):
        current = current + _read(field, grid + current)
    return current


def detect_centroids(displacement: torch.Tensor, threshold: float = 2.5) -> np.ndarray:
    """``[H, W]`` int labels of the centroid candidates ``|D| < threshold``, one id per 4-connected component."""
    _check_field(displacement)
    if not threshold > 0:
        raise LabkitError(f"the centroid threshold must be > 0, got {threshold}")
    candidates = (displacement.float().norm(dim=0) < threshold).cpu().numpy()
    labels, _ = ndimage.label(candidates)
    return labels.astype(np.int64)


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Index of the nearest of ``centroids [K, 2]`` for each of ``points [N, 2]``.

    Distances are taken for chunks of points, never more than ``max_elements``
    at once: the full N x K matrix of a 512x1024 field with the 29,000
    centroids of an untrained network would take 61 GB.
    """
    chunk = max(1, max_elements // max(len(centroids), 1))
    return torch.cat([torch.cdist(points[i:i + chunk], centroids).argmin(dim=1)
                      for i in range(0, len(points), chunk)]) if len(points) else points.new_zeros(0, dtype=torch.long)


def instance_map(
    displacement: torch.Tensor, iterations: int = 100, threshold: float = 2.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(instances [H,W], centroids [K,2], refined [2,H,W])``: the class-agnostic instance map I of Sec. 5.1.

    Instance ids are ``1..K`` (one per detected centroid, ``centroids`` their
    mean ``(y, x)``); every pixel gets an id.  No centroid (a field with no
    small vector) gives an all-zero map.
    """
    _check_field(displacement)
    refined = refine_displacement(displacement, iterations)
    labels = torch.from_numpy(detect_centroids(displacement, threshold)).to(displacement.device)
    count = int(labels.max()) if labels.numel() else 0
    height, width = labels.shape
    if count == 0:
        return torch.zeros(height, width, dtype=torch.int64), torch.zeros(0, 2), refined
    grid = _grid(height, width, displacement.device)
    flat = labels.flatten()
    sums = torch.zeros(count + 1, 2, device=displacement.device).index_add_(0, flat, grid.flatten(1).T)
    sizes = torch.bincount(flat, minlength=count + 1).clamp(min=1).unsqueeze(1)
    centroids = (sums / sizes)[1:]
    dest = grid + refined
    y = dest[0].round().long().clamp(0, height - 1)
    x = dest[1].round().long().clamp(0, width - 1)
    hit = labels[y, x]
    nearest = nearest_centroid(dest.flatten(1).T, centroids).view(height, width) + 1
    instances = torch.where(hit > 0, hit, nearest)
    return instances.long().cpu(), centroids.cpu(), refined
