"""The dataset base class every labkit dataset derives from.

A dataset is a ``torch.utils.data.Dataset`` of samples (``contract.py``) that
also describes its classes: ``class_names`` (``[0] == "background"``),
``num_classes``, ``things`` and ``stuff`` (class ids), and ``in_channels``.
Subclasses implement :meth:`load` (the raw sample); :meth:`__getitem__`
applies the joint transform, adds the image-level ``labels`` and checks the
result against the contract.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.data import Dataset

from labkit.data.contract import IGNORE_INDEX, Sample, check_sample

Transform = Callable[[Sample], Sample]


def image_labels(semantic: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Multi-hot float ``[num_classes]``: 1 for every class ``c >= 1`` present in ``semantic``.

    Background (index 0) and ignored pixels (255) never set a label, so
    ``labels[1:]`` are the image-level labels a weakly supervised method (IRNet)
    trains from.
    """
    present = torch.unique(semantic)
    present = present[(present > 0) & (present != IGNORE_INDEX) & (present < num_classes)]
    labels = torch.zeros(num_classes, dtype=torch.float32)
    labels[present] = 1.0
    return labels


class SegmentationDataset(Dataset):
    """Base class: class metadata + transform + labels + contract check.

    Subclasses set ``class_names``, ``things``, ``stuff``, ``in_channels`` and
    implement ``__len__`` and :meth:`load`.
    """

    class_names: list[str]
    things: list[int]
    stuff: list[int]
    in_channels: int

    def __init__(self, transform: Optional[Transform] = None) -> None:
        self.transform = transform

    @property
    def num_classes(self) -> int:
        """Number of classes including background (index 0)."""
        return len(self.class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """The untransformed sample ``index`` (``image``, ``instances``, ``semantic``, ``name``)."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """The name of sample ``index`` (file stem for readers)."""
        return str(self.load(index)["name"])

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        index = index % len(self)
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample)
        if "semantic" in sample:
            sample["labels"] = image_labels(sample["semantic"], self.num_classes)
        return check_sample(sample, where=f"{type(self).__name__} sample {sample.get('name', index)!r}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, in_channels={self.in_channels}, "
            f"classes={self.class_names})"
        )
