"""Joint transforms of whole samples that keep instance ids exact.

Every transform maps a sample dict to a new sample dict (the input is not
modified). The ``image`` is resampled bilinearly; ``instances``, ``semantic``
and any other integer ``[..., H, W]`` tensor are resampled by nearest
neighbour (index gathering, never arithmetic on ids), so no new id or class
ever appears and dtypes are kept. Keys that are not spatial (``labels``,
``name``) pass through; a dataset recomputes ``labels`` after its transform.

Padding fills the image with 0, ``instances`` with 0 and ``semantic`` with
255 (ignore: padding is not real background).

Randomness comes from ``generator`` (a ``torch.Generator``) or, when None,
torch's global generator, which ``DataLoader`` seeds per worker.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from labkit.data.contract import IGNORE_INDEX, Sample
from labkit.errors import LabkitError

FILL = {"instances": 0, "semantic": IGNORE_INDEX}


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise LabkitError(f"crop size must be positive, got {size}")
    return int(h), int(w)


def _uniform(generator: Optional[torch.Generator], low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: Optional[torch.Generator], high: int) -> int:
    """A random integer in ``[0, high]`` (inclusive)."""
    return int(torch.randint(high + 1, (), generator=generator))


def _spatial_size(sample: Sample) -> tuple[int, int]:
    return tuple(sample["image"].shape[-2:])


def _is_spatial(value: object, size: tuple[int, int]) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim >= 2 and tuple(value.shape[-2:]) == size


def _map_spatial(sample: Sample, fn) -> Sample:
    """Apply ``fn(key, tensor)`` to every spatial tensor of ``sample``; copy the rest."""
    size = _spatial_size(sample)
    return {key: fn(key, value) if _is_spatial(value, size) else value for key, value in sample.items()}


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def crop_or_pad(x: torch.Tensor, top: int, left: int, height: int, width: int, fill: float | int) -> torch.Tensor:
    """The window ``[top:top+height, left:left+width]`` of ``x[..., H, W]``; outside pixels get ``fill``.

    ``top``/``left`` may be negative and the window may extend past the image.
    """
    H, W = x.shape[-2:]
    out = torch.full((*x.shape[:-2], height, width), fill, dtype=x.dtype, device=x.device)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, H), min(left + width, W)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = x[..., y0:y1, x0:x1]
    return out


class RandomCrop:
    """A random ``size`` window; images smaller than ``size`` are padded at a random offset."""

    def __init__(self, size: int | Sequence[int], generator: Optional[torch.Generator] = None) -> None:
        self.size = _pair(size)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        H, W = _spatial_size(sample)
        h, w = self.size
        top = _randint(self.generator, H - h) if H >= h else -_randint(self.generator, h - H)
        left = _randint(self.generator, W - w) if W >= w else -_randint(self.generator, w - W)
        return _map_spatial(sample, lambda key, x: crop_or_pad(x, top, left, h, w, FILL.get(key, 0)))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class RandomFlip:
    """Flip left-right (``horizontal``) and/or up-down (``vertical``), each with probability ``p``."""

    def __init__(
        self, horizontal: bool = True, vertical: bool = False, p: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        self.horizontal, self.vertical, self.p = horizontal, vertical, p
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        dims = []
        if self.horizontal and _uniform(self.generator) < self.p:
            dims.append(-1)
        if self.vertical and _uniform(self.generator) < self.p:
            dims.append(-2)
        if not dims:
            return dict(sample)
        return _map_spatial(sample, lambda key, x: torch.flip(x, dims))

    def __repr__(self) -> str:
        return f"RandomFlip(horizontal={self.horizontal}, vertical={self.vertical}, p={self.p})"


def resize_nearest(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of ``x[..., H, W]`` by gathering rows and columns (exact for ids)."""
    H, W = x.shape[-2:]
    rows = ((torch.arange(height, device=x.device) + 0.5) * H / height).long().clamp_(max=H - 1)
    cols = ((torch.arange(width, device=x.device) + 0.5) * W / width).long().clamp_(max=W - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def resize_bilinear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a float ``x[..., H, W]`` (antialiased when shrinking), dtype kept."""
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:]).float()
    shrink = height < x.shape[-2] or width < x.shape[-1]
    out = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(*lead, height, width).to(x.dtype)


def resize_sample(sample: Sample, height: int, width: int) -> Sample:
    """Resize every spatial tensor: floats bilinearly, integers (ids, classes) by nearest neighbour."""

    def fn(key: str, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return resize_bilinear(x, height, width)
        return resize_nearest(x, height, width)

    return _map_spatial(sample, fn)


class RandomScale:
    """Rescale by a factor drawn uniformly from ``scale`` (same factor for height and width)."""

    def __init__(self, scale: tuple[float, float] = (0.75, 1.25), generator: Optional[torch.Generator] = None) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise LabkitError(f"scale range must satisfy 0 < low <= high, got {scale}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        s = _uniform(self.generator, *self.scale)
        H, W = _spatial_size(sample)
        return resize_sample(sample, max(1, round(H * s)), max(1, round(W * s)))

    def __repr__(self) -> str:
        return f"RandomScale(scale={self.scale})"


class RandomRot90:
    """Rotate by ``k`` quarter turns, ``k`` uniform in 0..3 (microscopy has no "up")."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        k = _randint(self.generator, 3)
        if k == 0:
            return dict(sample)
        return _map_spatial(sample, lambda key, x: torch.rot90(x, k, dims=(-2, -1)))

    def __repr__(self) -> str:
        return "RandomRot90()"


class RandomIntensity:
    """``image * s + o`` with ``s`` log-uniform in ``scale`` and ``o`` uniform in ``offset``; labels untouched.

    Imitates a brighter or dimmer stain, exposure or lamp and a shifted
    background.  Images normalised to ``[0, 1]`` may leave that range
    slightly; that is intended (a new image normalised the same way may too)
    and nothing is clipped.  ``p`` is the probability of changing a sample.
    """

    def __init__(
        self, scale: tuple[float, float] = (0.7, 1.4), offset: tuple[float, float] = (-0.1, 0.1), p: float = 0.8,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise LabkitError(f"intensity scale range must satisfy 0 < low <= high, got {scale}")
        if not offset[0] <= offset[1]:
            raise LabkitError(f"intensity offset range must satisfy low <= high, got {offset}")
        if not 0.0 <= p <= 1.0:
            raise LabkitError(f"probability p must be in [0, 1], got {p}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.offset = (float(offset[0]), float(offset[1]))
        self.p = float(p)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        if _uniform(self.generator) >= self.p:
            return out
        lo, hi = torch.log(torch.tensor(self.scale)).tolist()
        s = float(torch.exp(torch.tensor(_uniform(self.generator, lo, hi))))
        o = _uniform(self.generator, *self.offset)
        out["image"] = sample["image"] * s + o
        return out

    def __repr__(self) -> str:
        return f"RandomIntensity(scale={self.scale}, offset={self.offset}, p={self.p})"


#: augmentation presets of :func:`augmentation` (``"auto"`` picks one from the number of channels)
AUGMENTATIONS = ("auto", "microscopy", "photo", "none")


def augmentation(
    kind: str = "auto", *, crop: int | Sequence[int] | None = None, in_channels: int = 1,
    scale_jitter: tuple[float, float] | None = None, generator: Optional[torch.Generator] = None,
) -> Compose:
    """A training augmentation for images of ``in_channels`` channels.

    - ``"microscopy"``: a random ``crop`` (padded where the image is smaller),
      flips in both axes and quarter turns (a specimen has no up or left:
      all 8 orientations), intensity scale 0.7-1.4 and offset +-0.1;
    - ``"photo"``: a random crop, left-right flips only (the sky stays up),
      the same intensity jitter;
    - ``"none"``: the crop alone;
    - ``"auto"``: ``"microscopy"`` for 1-channel images, ``"photo"`` otherwise.

    ``scale_jitter=(lo, hi)`` rescales by a random factor before cropping (off
    by default: magnification is fixed within a microscopy data set).
    """
    if kind not in AUGMENTATIONS:
        raise LabkitError(f"unknown augmentation {kind!r}; choices: {', '.join(AUGMENTATIONS)}")
    if kind == "auto":
        kind = "microscopy" if in_channels == 1 else "photo"
    steps: list = []
    if scale_jitter is not None:
        steps.append(RandomScale(scale_jitter, generator=generator))
    if crop is not None:
        steps.append(RandomCrop(crop, generator=generator))
    if kind == "microscopy":
        steps += [RandomFlip(horizontal=True, vertical=True, generator=generator), RandomRot90(generator=generator)]
    elif kind == "photo":
        steps.append(RandomFlip(generator=generator))
    if kind != "none":
        steps.append(RandomIntensity(generator=generator))
    return Compose(steps)
