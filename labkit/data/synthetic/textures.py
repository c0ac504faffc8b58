"""Textures for synthetic scenes: smooth random fields, stripes, colours.

Backgrounds are smooth random fields (low-resolution noise upsampled) plus
fine pixel noise, so their intensity drifts across the image as much as the
objects differ from it: no global threshold separates objects from
background; texture and colour do.
"""
from __future__ import annotations

import colorsys

import numpy as np

from labkit.data.synthetic.grid import coords, resize


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int = 4, channels: int = 1) -> np.ndarray:
    """float32 ``[channels, H, W]`` in ``[0, 1]``: uniform noise on a ``cells``-grid, upsampled."""
    low = rng.random((channels, cells + 1, cells + 1), dtype=np.float32)
    return resize(low, height, width)


def stripes(
    rng: np.random.Generator, mask: np.ndarray, period: tuple[float, float] = (3.0, 6.0)
) -> np.ndarray:
    """float32 values in ``[-1, 1]`` at the ``True`` pixels of ``mask``: a random sinusoidal grating."""
    yy, xx = coords(*mask.shape)
    theta = rng.uniform(0, np.pi)
    freq = 2 * np.pi / rng.uniform(*period)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(freq * (xx[mask] * np.cos(theta) + yy[mask] * np.sin(theta)) + phase).astype(np.float32)


def random_color(
    rng: np.random.Generator, saturation: tuple[float, float] = (0.6, 1.0), value: tuple[float, float] = (0.45, 0.9)
) -> np.ndarray:
    """float32 RGB ``[3]`` with a random hue and the given saturation/value ranges."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.asarray(rgb, dtype=np.float32)


def textured_background(
    rng: np.random.Generator, height: int, width: int, channels: int = 3,
    low: float = 0.15, high: float = 0.85, tint: float = 0.08,
) -> np.ndarray:
    """float32 ``[channels, H, W]``: a greyish smooth field spanning ``[low, high]`` plus a faint tint.

    The grey level wanders over most of the intensity range (so objects of mid
    intensity are neither all brighter nor all darker than the background),
    while saturation stays low (objects are saturated).
    """
    grey = smooth_field(rng, height, width, cells=int(rng.integers(2, 5)))
    grey = low + (high - low) * (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    tinted = grey + tint * (smooth_field(rng, height, width, cells=2, channels=channels) - 0.5)
    return tinted.astype(np.float32)


def add_noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` plus Gaussian noise, clipped to ``[0, 1]``, float32."""
    noisy = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0, out=noisy)


def paint(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, color: np.ndarray,
    contrast: float = 0.25, period: tuple[float, float] = (3.0, 6.0),
) -> None:
    """Fill ``image[:, mask]`` in place with ``color`` modulated by random stripes of ``contrast``."""
    if not mask.any():
        return
    shade = 1.0 + contrast * stripes(rng, mask, period)
    image[:, mask] = color[: image.shape[0], None] * shade[None, :]
