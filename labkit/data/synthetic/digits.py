"""``digits``: several handwritten digits per scene, like Kong & Fowlkes' (2018) MNIST toy.

Digits come from scikit-learn's bundled 8x8 digits (``load_digits``, no
download), are upscaled bilinearly to 18-26 px (at 64 px scenes) and placed
with occlusion on a dark, uneven, noisy background. One channel. Class =
digit + 1 (class names ``"0"`` .. ``"9"``). The 1797 source digits are split
once (fixed permutation) into disjoint pools: 70 % train, 15 % val, 15 % test,
so no handwritten digit appears in two splits.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from labkit.data.synthetic.family import Family, Scene
from labkit.data.synthetic.grid import resize
from labkit.data.synthetic.layout import Canvas
from labkit.data.synthetic.textures import add_noise, smooth_field

POOL_FRACTIONS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
INK_THRESHOLD = 0.35  # upscaled intensity (0-1) above which a pixel belongs to the digit


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    return images, data.target.astype(np.int64)


@lru_cache(maxsize=3)
def pool(split: str) -> np.ndarray:
    """Indices of the source digits reserved for ``split``."""
    n = len(_digits()[1])
    order = np.random.default_rng(0).permutation(n)
    lo, hi = POOL_FRACTIONS[split]
    return order[int(lo * n): int(hi * n)]


def generate(rng: np.random.Generator, height: int, width: int, split: str) -> Scene:
    images, targets = _digits()
    indices = pool(split)
    scale = min(height, width) / 64
    canvas = Canvas(height, width, min_visible=0.6, min_area=int(20 * scale**2))
    ink = np.zeros((height, width), dtype=np.float32)
    count = int(rng.integers(2, 6))
    for _ in range(4 * count):
        if len(canvas) == count:
            break
        k = int(rng.choice(indices))
        side = min(int(round(rng.uniform(18, 26) * scale)), height, width)
        patch = resize(images[k], side, side)
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        mask = np.zeros((height, width), dtype=bool)
        mask[y:y + side, x:x + side] = patch > INK_THRESHOLD
        i = canvas.add(mask, int(targets[k]) + 1, (y + side / 2, x + side / 2, side / 2))
        if i:
            ink[y:y + side, x:x + side][mask[y:y + side, x:x + side]] = patch[patch > INK_THRESHOLD]
    background = 0.05 + 0.4 * smooth_field(rng, height, width, cells=3)
    image = np.where(canvas.instances > 0, 0.45 + 0.55 * ink, background)
    image = add_noise(rng, image.astype(np.float32), 0.05)
    return Scene(image, canvas.instances, canvas.semantic())


FAMILY = Family(
    name="digits",
    description="handwritten digits (scikit-learn's 8x8 set, upscaled), several per scene; class = digit + 1",
    class_names=("background", *(str(d) for d in range(10))),
    things=tuple(range(1, 11)),
    stuff=(),
    in_channels=1,
    generate=generate,
    mirror_symmetric=False,  # a mirrored 2 or 7 is no digit
)
