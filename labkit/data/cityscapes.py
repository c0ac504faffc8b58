"""Cityscapes (fine annotations) through ``torchvision.datasets.Cityscapes``, converted to the contract.

``root`` holds ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
``gtFine/<split>/<city>/*_gtFine_{instanceIds,labelIds}.png``; torchvision
reads them with ``mode="fine", target_type=["instance", "semantic"]``.

Conversion:

- classes: the 19 evaluated classes (torchvision's ``train_id`` 0..18) become
  classes 1..19; ``class_names[0]`` is an unused background; every void or
  non-evaluated label (``train_id`` 255) becomes ``semantic`` 255 (ignore).
- things: person, rider, car, truck, bus, train, motorcycle, bicycle (the
  evaluated classes with instances); the other 11 are stuff.
- ``instanceIds`` encode a thing instance as ``label_id * 1000 + k``; these
  become instance ids ``1..N`` (in increasing order of the raw id). Thing
  pixels without an instance id (crowd "groups", raw id < 1000) are ignored:
  ``semantic`` 255, instance 0.
- samples are sorted by image path (torchvision lists folders in directory order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from labkit.data.base import SegmentationDataset, Transform
from labkit.data.contract import IGNORE_INDEX, Sample
from labkit.data.normalize import image_to_tensor
from labkit.errors import DataError


def _class_tables() -> tuple[list[str], np.ndarray, list[int]]:
    """Class names, a ``label_id -> class`` lookup table (256 entries) and the thing classes."""
    from torchvision.datasets import Cityscapes

    evaluated = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < 255), key=lambda c: c.train_id)
    names = ["background", *(c.name for c in evaluated)]
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for c in evaluated:
        lut[c.id] = c.train_id + 1
    things = [c.train_id + 1 for c in evaluated if c.has_instances]
    return names, lut, things


def convert(
    instance_ids: np.ndarray, label_ids: np.ndarray, lut: np.ndarray, things: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Contract ``(instances, semantic)`` int64 maps from Cityscapes ``instanceIds`` and ``labelIds``."""
    raw = instance_ids.astype(np.int64)
    semantic = lut[np.clip(label_ids.astype(np.int64), 0, 255)]
    is_thing = np.isin(semantic, things)
    has_id = (raw >= 1000) & is_thing
    instances = np.zeros_like(raw)
    if has_id.any():
        _, inverse = np.unique(raw[has_id], return_inverse=True)
        instances[has_id] = inverse.ravel() + 1
    semantic[is_thing & ~has_id] = IGNORE_INDEX
    return instances, semantic


class CityscapesInstances(SegmentationDataset):
    """Cityscapes fine instances and classes; ``split``: train, val, test."""

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None) -> None:
        from torchvision.datasets import Cityscapes

        super().__init__(transform)
        try:
            dataset = Cityscapes(str(root), split=split, mode="fine", target_type=["instance", "semantic"])
        except (RuntimeError, OSError, ValueError) as err:
            raise DataError(f"cannot open Cityscapes split {split!r} under {root}: {err}") from err
        order = sorted(range(len(dataset.images)), key=dataset.images.__getitem__)
        dataset.images = [dataset.images[i] for i in order]
        dataset.targets = [dataset.targets[i] for i in order]
        if not dataset.images:
            raise DataError(f"no Cityscapes images in {Path(root) / 'leftImg8bit' / split}")
        self.dataset = dataset
        self.class_names, self.lut, self.things = _class_tables()
        self.stuff = [c for c in range(1, len(self.class_names)) if c not in self.things]
        self.in_channels = 3

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return Path(self.dataset.images[index]).name.split("_leftImg8bit")[0]

    def load(self, index: int) -> Sample:
        try:
            image, (instance_png, label_png) = self.dataset[index]
            instance_ids, label_ids = np.asarray(instance_png), np.asarray(label_png)
        except OSError as err:
            raise DataError(f"cannot read Cityscapes sample {self.name(index)}: {err}") from err
        where = self.dataset.targets[index][0]
        if instance_ids.shape != label_ids.shape or instance_ids.shape != image.size[::-1]:
            raise DataError(
                f"{where}: image {image.size[::-1]}, instanceIds {instance_ids.shape} and "
                f"labelIds {label_ids.shape} sizes differ"
            )
        instances, semantic = convert(instance_ids, label_ids, self.lut, self.things)
        return {
            "image": image_to_tensor(np.asarray(image), self.dataset.images[index]),
            "instances": torch.from_numpy(instances),
            "semantic": torch.from_numpy(semantic),
            "name": self.name(index),
        }
