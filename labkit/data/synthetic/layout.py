"""Place objects on a canvas with controlled occlusion.

Objects are added front-most; an object is accepted only if every object it
covers keeps at least ``min_visible`` of its own area (and ``min_area``
pixels), so occlusion is frequent but no instance degenerates into a sliver.
"""
from __future__ import annotations

import numpy as np


class Canvas:
    """An instance map being filled: ``instances`` int64 ``[H,W]`` and each id's class."""

    def __init__(self, height: int, width: int, min_visible: float = 0.5, min_area: int = 12) -> None:
        self.instances = np.zeros((height, width), dtype=np.int64)
        self.min_visible = min_visible
        self.min_area = min_area
        self.classes: dict[int, int] = {}
        self.full_area: dict[int, int] = {}
        self.visible_area: dict[int, int] = {}
        self.circles: list[tuple[float, float, float]] = []  # (cy, cx, radius) of placed objects

    def __len__(self) -> int:
        return len(self.classes)

    def sample_centre(self, rng: np.random.Generator, radius: float, p_touch: float = 0.4) -> tuple[float, float]:
        """A centre for an object of ``radius``: touching a placed object with probability ``p_touch``."""
        height, width = self.instances.shape
        if self.circles and rng.random() < p_touch:
            cy, cx, r = self.circles[rng.integers(len(self.circles))]
            angle = rng.uniform(0, 2 * np.pi)
            dist = (r + radius) * rng.uniform(0.85, 1.0)
            return cy + dist * np.sin(angle), cx + dist * np.cos(angle)
        margin = min(radius * 0.5, height / 4, width / 4)
        return rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)

    def add(self, mask: np.ndarray, cls: int, circle: tuple[float, float, float] | None = None) -> int:
        """Put ``mask`` in front with class ``cls``; return its id, or 0 if it was rejected."""
        area = int(mask.sum())
        if area < self.min_area:
            return 0
        covered = self.instances[mask]
        ids, lost = np.unique(covered[covered > 0], return_counts=True)
        for i, n in zip(ids.tolist(), lost.tolist()):
            left = self.visible_area[i] - n
            if left < self.min_visible * self.full_area[i] or left < self.min_area:
                return 0
        for i, n in zip(ids.tolist(), lost.tolist()):
            self.visible_area[i] -= n
        new = len(self.classes) + 1
        self.instances[mask] = new
        self.classes[new] = cls
        self.full_area[new] = self.visible_area[new] = area
        if circle is not None:
            self.circles.append(circle)
        return new

    def semantic(self, background: np.ndarray | int = 0) -> np.ndarray:
        """int64 ``[H,W]`` class map: each instance's class over ``background`` (a map or a constant)."""
        lut = np.zeros(len(self.classes) + 1, dtype=np.int64)
        for i, c in self.classes.items():
            lut[i] = c
        sem = lut[self.instances]
        fg = self.instances > 0
        return np.where(fg, sem, background).astype(np.int64)
