"""``nuclei``: fluorescence-microscopy nuclei, touching ellipses in 16-bit photon counts (class-agnostic).

Imitates a widefield image of stained nuclei (the data a cell biologist brings
to labkit; real data cannot be shipped), one channel:

- **objects**: ellipses of varied size, elongation and orientation, packed
  so that many touch (a new nucleus is placed against a placed one with
  probability 0.6) and barely overlap (each keeps 85 % of its area visible);
- **brightness**: each nucleus has its own stain level (log-normal, a factor
  of about 3 between dim and bright ones), a smooth chromatin texture, and a
  slightly darker rim;
- **optics**: a Gaussian blur (point-spread function, sigma 1 to 2 px) and
  uneven illumination (a smooth field scaling everything by 0.55 to 1);
- **camera**: a background of diffuse autofluorescence, Poisson shot noise
  on the expected photon counts and Gaussian read noise on a camera offset
  of 100 counts, rounded and clipped to ``uint16``.

:func:`raw_scene` gives the ``uint16`` counts (what a microscope writes, used
for ``data/example/``); the family's scenes are those counts normalised the
way the instance-folder reader normalises a 16-bit image (percentiles 1 and
99.8 to ``[0, 1]``), so synthetic scenes and a folder written from them look
the same to a model.

Sizes are in fixed pixel units, as under one microscope objective: semi-axes
of 8 to 14 px at 128 x 128 and larger, about 30 to 40 nuclei on 256 x 256.
Smaller canvases shrink the nuclei (down to half size at 64 x 64, the
synthetic default) so that a small scene still holds several.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from skimage.segmentation import find_boundaries

from labkit.data.normalize import percentile_normalize
from labkit.data.synthetic import raster
from labkit.data.synthetic.family import Family, Scene
from labkit.data.synthetic.layout import Canvas
from labkit.data.synthetic.textures import smooth_field

CAMERA_OFFSET = 100.0  # counts the camera adds to every pixel
READ_NOISE = 6.0  # Gaussian read noise, counts
NUCLEI_PER_PIXEL = (30 / 65536, 40 / 65536)  # density at full size (30-40 on 256 x 256)


def _scale(height: int, width: int) -> float:
    """Size factor of the nuclei: 1 from 128 px up, down to 0.5 at 64 px."""
    return float(np.clip(min(height, width) / 128, 0.5, 1.0))


def place_nuclei(rng: np.random.Generator, height: int, width: int) -> Canvas:
    """A canvas of touching, nearly non-overlapping ellipses (``Canvas.instances`` ids 1..N, class 1)."""
    scale = _scale(height, width)
    density = rng.uniform(*NUCLEI_PER_PIXEL) / scale**2
    count = max(1, int(round(density * height * width)))
    canvas = Canvas(height, width, min_visible=0.85, min_area=int(40 * scale**2))
    shape = (height, width)
    for _ in range(6 * count):
        if len(canvas) == count:
            break
        a = rng.uniform(8.0, 14.0) * scale
        b = a * rng.uniform(0.6, 0.95)
        r = 0.5 * (a + b)
        cy, cx = canvas.sample_centre(rng, r, p_touch=0.6)
        canvas.add(raster.ellipse(shape, cy, cx, a, b, rng.uniform(0, np.pi)), 1, (cy, cx, r))
    return canvas


def expected_counts(rng: np.random.Generator, instances: np.ndarray) -> np.ndarray:
    """float32 ``[H,W]`` expected photon counts (before noise and offset) of an instance map."""
    height, width = instances.shape
    stain = np.zeros((height, width), dtype=np.float32)
    ids = np.unique(instances[instances > 0])
    texture = 0.75 + 0.5 * smooth_field(rng, height, width, cells=max(4, min(height, width) // 8))[0]
    for i in ids.tolist():
        mask = instances == i
        level = 900.0 * float(np.exp(rng.normal(0.0, 0.35)))
        stain[mask] = level * texture[mask]
    # a slightly darker rim: dim each nucleus near its edge (distance inside the mask, in px)
    edge = find_boundaries(instances, mode="inner") | (instances == 0)
    inside = distance_transform_edt(~edge).astype(np.float32)
    stain *= 0.7 + 0.3 * np.clip(inside / 3.0, 0.0, 1.0)
    sigma = rng.uniform(1.0, 2.0)
    blurred = gaussian_filter(stain, sigma)
    background = 60.0 + 60.0 * smooth_field(rng, height, width, cells=3)[0]
    illumination = 0.55 + 0.45 * smooth_field(rng, height, width, cells=2)[0]
    return ((blurred + background) * illumination).astype(np.float32)


def camera(rng: np.random.Generator, expected: np.ndarray) -> np.ndarray:
    """``uint16`` counts: Poisson shot noise on ``expected``, plus offset and Gaussian read noise."""
    photons = rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)
    counts = photons + CAMERA_OFFSET + rng.normal(0.0, READ_NOISE, size=expected.shape).astype(np.float32)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def raw_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene as a microscope writes it: ``uint16`` counts ``[H,W]`` and int64 instances ``[H,W]``."""
    canvas = place_nuclei(rng, height, width)
    return camera(rng, expected_counts(rng, canvas.instances)), canvas.instances


def generate(rng: np.random.Generator, height: int, width: int, split: str) -> Scene:
    counts, instances = raw_scene(rng, height, width)
    image = percentile_normalize(counts)[None]
    return Scene(image, instances, (instances > 0).astype(np.int64))


FAMILY = Family(
    name="nuclei",
    description="fluorescence nuclei: touching ellipses, varied brightness, blur, uneven background, "
    "Poisson-Gaussian noise, 16-bit counts; class-agnostic",
    class_names=("background", "nucleus"),
    things=(1,),
    stuff=(),
    in_channels=1,
    generate=generate,
)


def write_folder(
    root: str | os.PathLike, count: int, size: int | tuple[int, int] = 256, split: str = "train", seed: int = 0,
    prefix: str | None = None,
) -> list[str]:
    """Write ``count`` scenes as an instance folder: ``root/images/NAME.tif`` (uint16 counts) + ``root/masks/NAME.png``.

    Scene ``i`` is the family's scene ``i`` of ``split`` (the same random
    generator as ``synthetic:nuclei:SPLIT``), so folders written for
    different splits share no image.  Masks are 16-bit PNGs of instance ids.
    Returns the names written.
    """
    import tifffile
    from PIL import Image

    from labkit.data.synthetic import scene_rng
    from labkit.io import atomic_open

    height, width = (size, size) if isinstance(size, int) else size
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(int(count)):
        counts, instances = raw_scene(scene_rng("nuclei", split, i, seed), height, width)
        name = f"{prefix or 'nuclei_' + split}_{i:03d}"
        buffer = io.BytesIO()  # tifffile wants a named file; write to memory, then atomically to disk
        tifffile.imwrite(buffer, counts, compression="zlib")
        with atomic_open(root / "images" / f"{name}.tif", "wb") as f:
            f.write(buffer.getvalue())
        with atomic_open(root / "masks" / f"{name}.png", "wb") as f:
            Image.fromarray(instances.astype(np.uint16)).save(f, format="PNG", optimize=True)
        names.append(name)
    return names
