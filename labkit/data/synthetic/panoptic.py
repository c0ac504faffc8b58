"""``panoptic``: things (disk, square, triangle) on 2-3 textured stuff regions.

Stuff classes carry semantic labels but no instances (instance id 0):
water 4 (blue, horizontal waves), grass 5 (green, fine noise), sand 6 (ochre,
checkerboard). The regions are a warped Voronoi partition of the whole image,
so every pixel is a thing or a stuff class. Things are flat saturated
colours with faint stripes.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synthetic.family import Family, Scene
from labkit.data.synthetic.grid import coords
from labkit.data.synthetic.layout import Canvas
from labkit.data.synthetic.shapes import place_things
from labkit.data.synthetic.textures import add_noise, paint, random_color, smooth_field

THINGS = (1, 2, 3)
STUFF = (4, 5, 6)
STUFF_COLORS = {
    4: np.array([0.15, 0.35, 0.75], np.float32),
    5: np.array([0.25, 0.6, 0.2], np.float32),
    6: np.array([0.8, 0.65, 0.4], np.float32),
}


def stuff_regions(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """int64 ``[H,W]`` stuff class map: a Voronoi partition with wavy borders."""
    yy, xx = coords(height, width)
    count = int(rng.integers(2, 4))
    classes = rng.choice(STUFF, size=count, replace=False)
    warp = (smooth_field(rng, height, width, cells=3, channels=count) - 0.5) * 0.6 * min(height, width)
    dist = np.stack([
        np.hypot(yy - rng.uniform(0, height), xx - rng.uniform(0, width)) + warp[k] for k in range(count)
    ])
    return classes[np.argmin(dist, axis=0)].astype(np.int64)


def stuff_texture(rng: np.random.Generator, cls: int, mask: np.ndarray) -> np.ndarray:
    """float32 shading ``[n]`` (around 1) of stuff class ``cls`` at the ``mask`` pixels."""
    yy, xx = coords(*mask.shape)
    y, x = yy[mask], xx[mask]
    if cls == 4:
        phase = rng.uniform(0, 2 * np.pi)
        return 1.0 + 0.2 * np.sin(2 * np.pi * y / 5.0 + 1.5 * np.sin(x / 6.0 + phase))
    if cls == 5:
        return 1.0 + 0.3 * rng.uniform(-1, 1, size=y.shape).astype(np.float32)
    offset = rng.integers(0, 8, size=2)
    return 1.0 + 0.15 * np.where(((y + offset[0]) // 4 + (x + offset[1]) // 4) % 2 == 0, 1.0, -1.0)


def generate(rng: np.random.Generator, height: int, width: int, split: str) -> Scene:
    scale = min(height, width) / 64
    stuff = stuff_regions(rng, height, width)
    image = np.empty((3, height, width), dtype=np.float32)
    for cls in np.unique(stuff).tolist():
        mask = stuff == cls
        image[:, mask] = STUFF_COLORS[cls][:, None] * stuff_texture(rng, cls, mask)[None, :]
    image *= 0.8 + 0.35 * smooth_field(rng, height, width, cells=2)  # uneven illumination
    canvas = Canvas(height, width, min_visible=0.5, min_area=int(16 * scale**2))
    place_things(rng, canvas, int(rng.integers(2, 6)), THINGS, (5.0 * scale, 10.0 * scale))
    for i in canvas.classes:
        paint(rng, image, canvas.instances == i, random_color(rng), contrast=0.08)
    image = add_noise(rng, image, 0.03)
    return Scene(image, canvas.instances, canvas.semantic(stuff))


FAMILY = Family(
    name="panoptic",
    description="things (disk, square, triangle) on 2-3 textured stuff regions (water, grass, sand)",
    class_names=("background", "disk", "square", "triangle", "water", "grass", "sand"),
    things=THINGS,
    stuff=STUFF,
    in_channels=3,
    generate=generate,
)
