"""A stored-looking embedding map for teaching bandwidths: deterministic, no training needed.

It imitates what a network trained with the discriminative loss produces: every
instance has its own centre in embedding space, pixels scatter around it
(noise), drift slowly across the object (an imperfect fit, so a too-small
bandwidth splits objects) and blend towards the neighbouring instance near
shared boundaries; a few pairs of instances have nearby centres (so a
too-large bandwidth merges them). Background pixels have an embedding of their
own and a ``foreground`` mask plays the role of the semantic prediction.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def synthetic_embedding_map(
    size: int = 96,
    n_objects: int = 9,
    dim: int = 8,
    noise: float = 0.06,
    drift: float = 0.35,
    spacing: float = 2.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A scene of ``n_objects`` ellipses (on a jittered grid) with an embedding map.

    Returns ``image`` float32 ``[1, H, W]`` in ``[0, 1]``, ``instances`` int64
    ``[H, W]`` (0 = background), ``foreground`` bool ``[H, W]``, ``embedding``
    float32 ``[dim, H, W]`` and ``centers`` float32 ``[n_objects + 1, dim]``
    (row 0: background). Centres are about ``spacing`` apart, with every third
    object placed at ``spacing / 2.5`` from another one; per-pixel noise has
    standard deviation ``noise`` per dimension and the drift across an object
    spans about ``drift``.
    """
    rng = np.random.default_rng(seed)
    instances = _ellipses(size, n_objects, rng)
    present = np.unique(instances)
    present = present[present > 0]
    centers = np.zeros((n_objects + 1, dim), dtype=np.float64)
    for k in range(1, n_objects + 1):
        if k % 3 == 0:  # a near twin of the previous object: merges first as the bandwidth grows
            step = rng.normal(size=dim)
            centers[k] = centers[k - 1] + spacing / 2.5 * step / np.linalg.norm(step)
        else:
            centers[k] = _far_point(centers[:k], spacing, dim, rng)
    yy, xx = np.mgrid[0:size, 0:size] / size
    embedding = np.zeros((size, size, dim))
    for k in present.tolist():
        direction = rng.normal(size=(2, dim))
        direction *= drift / np.linalg.norm(direction, axis=1, keepdims=True)
        inside = instances == k
        cy, cx = yy[inside].mean(), xx[inside].mean()
        span = max(np.ptp(yy[inside]), np.ptp(xx[inside]), 1.0 / size)
        ramp = np.stack([(yy - cy) / span, (xx - cx) / span], -1)
        embedding[inside] = centers[k] + (ramp @ direction)[inside]
    embedding[instances == 0] = centers[0]
    blurred = np.stack([ndimage.gaussian_filter(embedding[..., d], 0.4) for d in range(dim)], -1)
    embedding = blurred + rng.normal(scale=noise, size=embedding.shape)
    image = 0.25 + 0.5 * (instances > 0) + rng.normal(scale=0.05, size=instances.shape)
    return {
        "image": np.clip(image, 0, 1).astype(np.float32)[None],
        "instances": instances.astype(np.int64),
        "foreground": instances > 0,
        "embedding": np.ascontiguousarray(np.moveaxis(embedding, -1, 0), dtype=np.float32),
        "centers": centers.astype(np.float32),
    }


def _far_point(existing: np.ndarray, spacing: float, dim: int, rng: np.random.Generator) -> np.ndarray:
    """A random point at least ``spacing`` from all ``existing`` ones (on a growing shell)."""
    radius = spacing
    while True:
        for _ in range(200):
            step = rng.normal(size=dim)
            candidate = existing[rng.integers(len(existing))] + radius * step / np.linalg.norm(step)
            if np.linalg.norm(existing - candidate, axis=1).min() >= spacing * 0.999:
                return candidate
        radius *= 1.25


def _ellipses(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` ellipses on a jittered grid (neighbours may touch), ids ``1..n``."""
    side = int(np.ceil(np.sqrt(n)))
    pitch = size / side
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((size, size), dtype=np.int64)
    for k, cell in enumerate(rng.permutation(side * side)[:n], start=1):
        cy = (cell // side + 0.5 + rng.uniform(-0.12, 0.12)) * pitch
        cx = (cell % side + 0.5 + rng.uniform(-0.12, 0.12)) * pitch
        ry, rx = rng.uniform(0.3, 0.55, size=2) * pitch
        angle = rng.uniform(0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        u = ((yy - cy) * c + (xx - cx) * s) / ry
        v = (-(yy - cy) * s + (xx - cx) * c) / rx
        out[u**2 + v**2 <= 1] = k
    return out
