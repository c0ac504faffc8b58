"""Embedding maps as point sets, optionally with pixel coordinates at their own bandwidth."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from labkit.clustering._common import check_bandwidth
from labkit.errors import DataError


def embedding_points(embedding: Any, name: str = "embedding") -> Tensor:
    """An embedding map ``[D, H, W]`` (numpy or tensor) as float points ``[H*W, D]`` (row-major pixels)."""
    t = embedding.detach() if isinstance(embedding, Tensor) else torch.as_tensor(np.asarray(embedding))
    if t.ndim != 3:
        raise DataError(f"{name} must be a map [D, H, W], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    return t.reshape(t.shape[0], -1).T


def pixel_coordinates(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """float ``[H*W, 2]``: the (row, column) of every pixel, row-major."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)


def spatial_features(embedding: Any, bandwidth: float, coord_bandwidth: float) -> Tensor:
    """Points ``[H*W, D + 2]``: the embedding of every pixel with its (row, column) appended.

    The coordinates are scaled by ``bandwidth / coord_bandwidth``, so a ball of
    radius ``bandwidth`` in the joint space reaches ``bandwidth`` in embedding
    space and ``coord_bandwidth`` pixels in the image (the joint kernel is
    ``|de|^2 / bandwidth^2 + |dp|^2 / coord_bandwidth^2 <= 1``). Cluster the
    result with the same ``bandwidth``; ``MeanShift(coord_bandwidth=...)`` with
    ``fit(X, coordinates=...)`` does the same scaling internally.
    """
    points = embedding_points(embedding)
    _, height, width = (embedding.shape if hasattr(embedding, "shape") else np.shape(embedding))
    scale = check_bandwidth(bandwidth) / check_bandwidth(coord_bandwidth, "coord_bandwidth")
    coords = pixel_coordinates(height, width, points.device).to(points.dtype) * scale
    return torch.cat([points, coords], 1)
