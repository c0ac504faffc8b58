"""``shapes``: disks, squares, triangles and ellipses on a textured, uneven background.

Objects touch and occlude each other. Each object is a saturated colour with
a stripe texture; the background is a low-saturation smooth field whose grey
level spans most of ``[0, 1]``, so a global intensity threshold cannot
separate objects from background (colour and texture can). Class ids:
disk 1, square 2, triangle 3, ellipse 4.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synthetic import raster
from labkit.data.synthetic.family import Family, Scene
from labkit.data.synthetic.layout import Canvas
from labkit.data.synthetic.textures import add_noise, paint, random_color, textured_background

THING_NAMES = ("disk", "square", "triangle", "ellipse")


def draw_thing(
    rng: np.random.Generator, shape: tuple[int, int], cls: int, cy: float, cx: float, r: float
) -> np.ndarray:
    """Mask of a thing of class ``cls`` (1..4) with nominal radius ``r`` (similar areas per class)."""
    theta = rng.uniform(0, np.pi)
    if cls == 1:
        return raster.disk(shape, cy, cx, r)
    if cls == 2:
        return raster.rectangle(shape, cy, cx, 0.85 * r, 0.85 * r, theta)
    if cls == 3:
        return raster.regular_polygon(shape, cy, cx, 1.3 * r, 3, theta)
    return raster.ellipse(shape, cy, cx, 1.3 * r, 0.6 * r, theta)


def place_things(
    rng: np.random.Generator, canvas: Canvas, count: int, classes: tuple[int, ...], radius: tuple[float, float]
) -> None:
    """Add up to ``count`` things of random ``classes`` to ``canvas`` (a few tries each)."""
    shape = canvas.instances.shape
    for _ in range(4 * count):
        if len(canvas) == count:
            break
        cls = int(rng.choice(classes))
        r = rng.uniform(*radius)
        cy, cx = canvas.sample_centre(rng, r)
        canvas.add(draw_thing(rng, shape, cls, cy, cx, r), cls, (cy, cx, r))


def generate(rng: np.random.Generator, height: int, width: int, split: str) -> Scene:
    scale = min(height, width) / 64
    canvas = Canvas(height, width, min_visible=0.5, min_area=int(16 * scale**2))
    place_things(rng, canvas, int(rng.integers(3, 8)), (1, 2, 3, 4), (5.0 * scale, 10.0 * scale))
    image = textured_background(rng, height, width)
    for i in canvas.classes:
        paint(rng, image, canvas.instances == i, random_color(rng), contrast=0.25)
    image = add_noise(rng, image, 0.04)
    return Scene(image, canvas.instances, canvas.semantic())


FAMILY = Family(
    name="shapes",
    description="disks, squares, triangles, ellipses; touching, occluding; textured uneven background",
    class_names=("background", *THING_NAMES),
    things=(1, 2, 3, 4),
    stuff=(),
    in_channels=3,
    generate=generate,
)
