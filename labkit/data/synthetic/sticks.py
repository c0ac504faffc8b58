"""``sticks``: thin crossed bars whose bounding boxes overlap heavily (class-agnostic).

The occlusion case of De Brabandere et al. 2017 (Sec. 3, "crossed swords"):
all sticks pass near one common point at well-separated angles, so their
boxes nearly coincide and a box-then-segment method cannot tell them apart.
Semantic class 1 on every stick.
"""
from __future__ import annotations

import numpy as np

from labkit.data.synthetic import raster
from labkit.data.synthetic.family import Family, Scene
from labkit.data.synthetic.layout import Canvas
from labkit.data.synthetic.textures import add_noise, paint, random_color, textured_background

MIN_ANGLE = np.pi / 7  # smallest angle between two sticks


def generate(rng: np.random.Generator, height: int, width: int, split: str) -> Scene:
    size = min(height, width)
    scale = size / 64
    canvas = Canvas(height, width, min_visible=0.6, min_area=int(20 * scale**2))
    cy = height / 2 + rng.uniform(-0.12, 0.12) * size
    cx = width / 2 + rng.uniform(-0.12, 0.12) * size
    count = int(rng.integers(2, 6))
    angles: list[float] = []
    for _ in range(12 * count):
        if len(canvas) == count:
            break
        theta = rng.uniform(0, np.pi)
        if any(min(abs(theta - a), np.pi - abs(theta - a)) < MIN_ANGLE for a in angles):
            continue
        half_length = rng.uniform(0.28, 0.42) * size
        shift = rng.uniform(-0.3, 0.3) * half_length  # cross off the stick's middle
        sy = cy + shift * np.sin(theta) + rng.uniform(-2, 2) * scale
        sx = cx + shift * np.cos(theta) + rng.uniform(-2, 2) * scale
        mask = raster.rectangle((height, width), sy, sx, half_length, rng.uniform(1.2, 2.2) * scale, theta)
        if canvas.add(mask, 1):
            angles.append(theta)
    image = textured_background(rng, height, width, low=0.2, high=0.7)
    for i in canvas.classes:
        paint(rng, image, canvas.instances == i, random_color(rng), contrast=0.1)
    image = add_noise(rng, image, 0.03)
    return Scene(image, canvas.instances, canvas.semantic())


FAMILY = Family(
    name="sticks",
    description="thin crossed bars with heavily overlapping boxes (De Brabandere et al. 2017); class-agnostic",
    class_names=("background", "stick"),
    things=(1,),
    stuff=(),
    in_channels=3,
    generate=generate,
)
