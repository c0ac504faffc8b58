"""Cached pixel grids and linear resampling matrices (the cheap building blocks of scenes).

Everything here is cached per size and returned read-only, so drawing a scene
allocates only its own arrays.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each float32 ``[H,W]``."""
    yy, xx = np.meshgrid(
        np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij"
    )
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@lru_cache(maxsize=64)
def resize_matrix(n_out: int, n_in: int) -> np.ndarray:
    """float32 ``[n_out, n_in]`` linear interpolation matrix (pixel centres aligned).

    ``M @ a @ N.T`` resizes a 2-D array ``a`` bilinearly from ``[h, w]`` to
    ``[H, W]`` with ``M = resize_matrix(H, h)`` and ``N = resize_matrix(W, w)``.
    """
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


def resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of the last two axes of ``a`` to ``[height, width]``."""
    return resize_matrix(height, a.shape[-2]) @ a @ resize_matrix(width, a.shape[-1]).T
