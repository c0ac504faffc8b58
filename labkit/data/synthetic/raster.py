"""Rasterise simple shapes into boolean masks ``[H,W]`` (pixel centres inside the shape).

Angles are in radians; ``(cy, cx)`` is the centre in pixel coordinates.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synthetic.grid import coords


def _rotated(shape: tuple[int, int], cy: float, cx: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(u, v)`` in a frame centred on ``(cy, cx)`` and rotated by ``theta``."""
    yy, xx = coords(*shape)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(theta), np.sin(theta)
    return dx * c + dy * s, -dx * s + dy * c


def disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = coords(*shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def ellipse(shape: tuple[int, int], cy: float, cx: float, a: float, b: float, theta: float) -> np.ndarray:
    """Semi-axes ``a`` (along ``theta``) and ``b``."""
    u, v = _rotated(shape, cy, cx, theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def rectangle(
    shape: tuple[int, int], cy: float, cx: float, half_length: float, half_width: float, theta: float
) -> np.ndarray:
    """A rotated rectangle; ``half_length`` along ``theta``. Squares and sticks are rectangles."""
    u, v = _rotated(shape, cy, cx, theta)
    return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)


def regular_polygon(
    shape: tuple[int, int], cy: float, cx: float, r: float, sides: int, theta: float
) -> np.ndarray:
    """A regular convex polygon with circumradius ``r`` (intersection of half-planes)."""
    u, v = _rotated(shape, cy, cx, theta)
    apothem = r * np.cos(np.pi / sides)
    inside = np.ones(shape, dtype=bool)
    for k in range(sides):
        phi = 2 * np.pi * (k + 0.5) / sides
        inside &= u * np.cos(phi) + v * np.sin(phi) <= apothem
    return inside
