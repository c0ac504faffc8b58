"""Pascal VOC and SBD instance segmentation through torchvision's dataset classes (no download).

**VOC** (``torchvision.datasets.VOCSegmentation``): ``root`` holds
``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationObject,
ImageSets/Segmentation/<split>.txt}``. torchvision reads the image and the
``SegmentationClass`` PNG; the instance ids come from the
``SegmentationObject`` PNG of the same name. The 255 "void" border becomes
``semantic`` 255 (ignore) and instance 0.

**SBD** (``torchvision.datasets.SBDataset``, ``mode="segmentation"``):
``root`` holds ``img/*.jpg``, ``cls/*.mat``, ``inst/*.mat`` and
``<split>.txt``; the instance ids are ``GTinst.Segmentation`` of
``inst/NAME.mat``.

Classes: background + the 20 VOC classes, all things.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from labkit.data.base import SegmentationDataset, Transform
from labkit.data.contract import IGNORE_INDEX, Sample
from labkit.data.normalize import image_to_tensor, labels_to_tensor
from labkit.errors import DataError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def to_contract(image, semantic: np.ndarray, instances: np.ndarray, where: str) -> Sample:
    """A sample from a PIL image and VOC-coded class / object maps (255 = void)."""
    semantic = labels_to_tensor(semantic, where)
    instances = labels_to_tensor(instances, where)
    if semantic.shape != instances.shape:
        raise DataError(f"{where}: class mask {tuple(semantic.shape)} and object mask {tuple(instances.shape)} differ")
    void = (instances == IGNORE_INDEX) | (semantic == IGNORE_INDEX)
    instances[void] = 0
    semantic[void] = IGNORE_INDEX
    bad = (semantic >= len(VOC_CLASSES)) & ~void
    if bad.any():
        raise DataError(f"{where}: class {int(semantic[bad][0])} is not a VOC class (0..20 or 255)")
    return {"image": image_to_tensor(np.asarray(image), where), "instances": instances, "semantic": semantic}


class _VOCFamily(SegmentationDataset):
    class_names = list(VOC_CLASSES)
    things = list(range(1, len(VOC_CLASSES)))
    stuff: list[int] = []
    in_channels = 3

    def __init__(self, dataset, transform: Optional[Transform]) -> None:
        super().__init__(transform)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        return Path(self.dataset.images[index]).stem


class VOCInstances(_VOCFamily):
    """VOC ``SegmentationObject`` instances with ``SegmentationClass`` classes; ``split``: train, val, trainval."""

    def __init__(
        self, root: str | Path, split: str = "train", year: str = "2012", transform: Optional[Transform] = None,
    ) -> None:
        from torchvision.datasets import VOCSegmentation

        try:
            dataset = VOCSegmentation(str(root), year=year, image_set=split, download=False)
        except (RuntimeError, OSError, ValueError) as err:
            raise DataError(f"cannot open Pascal VOC {year} split {split!r} under {root}: {err}") from err
        super().__init__(dataset, transform)

    def object_path(self, index: int) -> Path:
        class_png = Path(self.dataset.masks[index])
        return class_png.parent.parent / "SegmentationObject" / class_png.name

    def load(self, index: int) -> Sample:
        from PIL import Image

        path = self.object_path(index)
        try:
            image, target = self.dataset[index]
            with Image.open(path) as obj:
                instances = np.asarray(obj)
        except OSError as err:
            raise DataError(f"cannot read VOC sample {self.name(index)}: {err}") from err
        sample = to_contract(image, np.asarray(target), instances, str(path))
        return {**sample, "name": self.name(index)}


class SBDInstances(_VOCFamily):
    """SBD instances (``inst/*.mat``) with classes (``cls/*.mat``); ``split``: train, val, train_noval."""

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None) -> None:
        from torchvision.datasets import SBDataset

        try:
            dataset = SBDataset(str(root), image_set=split, mode="segmentation", download=False)
        except (RuntimeError, OSError, ValueError) as err:
            raise DataError(f"cannot open SBD split {split!r} under {root}: {err}") from err
        super().__init__(dataset, transform)

    def load(self, index: int) -> Sample:
        from scipy.io import loadmat

        path = Path(self.dataset.masks[index]).parent.parent / "inst" / f"{self.name(index)}.mat"
        try:
            image, target = self.dataset[index]
            instances = loadmat(str(path))["GTinst"][0]["Segmentation"][0]
        except (OSError, ValueError, KeyError, IndexError) as err:
            raise DataError(f"cannot read SBD sample {self.name(index)} ({path}): {err}") from err
        sample = to_contract(image, np.asarray(target), instances, str(path))
        return {**sample, "name": self.name(index)}

