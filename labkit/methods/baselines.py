"""Two methods that need no training, so every comparison has an anchor.

``components``: the foreground (Otsu threshold of the channel-mean intensity)
split into connected components.  ``watershed``: the same foreground split by
a watershed of the negated distance transform, seeded at its local maxima
(the classic recipe for touching round objects such as nuclei).

The foreground polarity is a parameter: ``"bright"`` (objects above the
threshold), ``"dark"`` (at or below it) or ``"auto"``, which takes the
minority phase as the objects.  Objects smaller than ``min_size`` pixels are
dropped.  Every object gets class 1 and a score equal to its contrast,
``|mean intensity inside - threshold| / (max - min intensity of the image)``
in [0, 1], so objects that stand out clearly rank first in AP; objects of
equal contrast tie.

The "model" is a parameter-free module passing the image through as the
``"image"`` output; :meth:`loss` refuses to train.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage import feature, filters, measure, segmentation
from torch import nn

from labkit.errors import LabkitError
from labkit.methods import register
from labkit.methods.base import Batch, Method, Outputs, Prediction

POLARITIES = ("auto", "bright", "dark")


class PassThrough(nn.Module):
    """A model without parameters: ``forward(image) -> {"image": image}``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "heads": {}, "backbone": "identity"}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": image}


@dataclasses.dataclass
class ComponentsParams:
    polarity: str = "auto"  # "auto" | "bright" | "dark"
    min_size: int = 10  # pixels; smaller objects are dropped
    connectivity: int = 1  # 1 = 4-neighbourhood, 2 = 8-neighbourhood


@dataclasses.dataclass
class WatershedParams(ComponentsParams):
    min_distance: int = 4  # pixels between watershed seeds (peak_local_max)


class _Untrained(Method):
    """Shared machinery: pass-through model, Otsu foreground, scoring, decode loop."""

    task = "instance"
    trainable = False

    def heads(self, num_classes: int) -> dict[str, int]:
        """No learned heads: the output is the image itself."""
        return {}

    def build_model(
        self, in_channels: int, num_classes: int, backbone: str = "unet", **backbone_kwargs: Any
    ) -> nn.Module:
        """A :class:`PassThrough` module; ``num_classes`` and the backbone are ignored."""
        return PassThrough(in_channels)

    def loss(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        raise LabkitError(f"method {self.key!r} needs no training; evaluate it directly")

    def decode(self, outputs: Outputs, **params: Any) -> list[Prediction]:
        """One scored prediction per image of ``outputs["image"]`` ``[B,C,H,W]``."""
        try:
            p = dataclasses.replace(self.defaults, **params)
        except TypeError:
            known = sorted(f.name for f in dataclasses.fields(self.defaults))
            raise LabkitError(
                f"unknown decode parameter(s) {sorted(params)} for {self.key!r}; known: {known}"
            ) from None
        if p.polarity not in POLARITIES:
            raise LabkitError(f"polarity must be one of {POLARITIES}, got {p.polarity!r}")
        images = outputs["image"].detach().float().cpu().numpy()
        return [self._predict(image.mean(0), p) for image in images]

    def _predict(self, gray: np.ndarray, p: ComponentsParams) -> Prediction:
        fg, threshold = foreground(gray, p.polarity)
        labels = self._split(fg, p) if fg.any() else np.zeros(gray.shape, dtype=np.int64)
        sizes = np.bincount(labels.reshape(-1), minlength=1)
        keep = sizes >= p.min_size
        keep[0] = False
        lut = np.zeros(len(sizes), dtype=np.int64)
        lut[keep] = np.arange(1, keep.sum() + 1)
        labels = lut[labels]
        n = int(keep.sum())
        sums = np.bincount(labels.reshape(-1), weights=gray.reshape(-1), minlength=n + 1)[1:]
        spread = float(gray.max() - gray.min())
        contrast = np.abs(sums / np.maximum(sizes[keep], 1) - threshold) / spread if spread else np.zeros(n)
        return {
            "instances": torch.from_numpy(labels),
            "ids": torch.arange(1, n + 1, dtype=torch.int64),
            "classes": torch.ones(n, dtype=torch.int64),
            "scores": torch.from_numpy(np.clip(contrast, 0.0, 1.0).astype(np.float32)),
        }

    def _split(self, fg: np.ndarray, p: Any) -> np.ndarray:
        raise NotImplementedError


def foreground(gray: np.ndarray, polarity: str = "auto") -> tuple[np.ndarray, float]:
    """Otsu foreground mask of a 2-D image and the threshold; empty for a constant image."""
    if gray.max() == gray.min():
        return np.zeros(gray.shape, dtype=bool), float(gray.min())
    threshold = float(filters.threshold_otsu(gray))
    bright = gray > threshold
    if polarity == "dark" or (polarity == "auto" and bright.mean() > 0.5):
        return ~bright, threshold
    return bright, threshold


@register
class Components(_Untrained):
    """Connected components of the Otsu foreground."""

    key = "components"
    Params = ComponentsParams

    def _split(self, fg: np.ndarray, p: ComponentsParams) -> np.ndarray:
        return measure.label(fg, connectivity=p.connectivity).astype(np.int64)


@register
class Watershed(_Untrained):
    """Distance-transform watershed of the Otsu foreground, seeded at distance maxima."""

    key = "watershed"
    Params = WatershedParams

    def _split(self, fg: np.ndarray, p: WatershedParams) -> np.ndarray:
        components = measure.label(fg, connectivity=p.connectivity)
        distance = ndimage.distance_transform_edt(fg)
        peaks = feature.peak_local_max(
            distance, min_distance=max(int(p.min_distance), 1), labels=components, exclude_border=False
        )
        seeds = np.zeros(fg.shape, dtype=bool)
        seeds[tuple(peaks.T)] = True
        markers = measure.label(seeds, connectivity=2)  # a plateau of maxima is one seed
        seeded = np.zeros(components.max() + 1, dtype=bool)
        seeded[components[markers > 0]] = True
        unseeded = fg & ~seeded[components]  # components without a peak keep one seed each
        markers[unseeded] = components[unseeded] + markers.max()
        return segmentation.watershed(
            -distance, markers, mask=fg, connectivity=p.connectivity
        ).astype(np.int64)
