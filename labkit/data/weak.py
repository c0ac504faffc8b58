"""Weak supervision: a dataset view that keeps only the image and its image-level labels.

:class:`ImageLabels` wraps any labkit dataset and returns samples holding
``image``, ``labels`` (multi-hot ``[K]``) and ``name`` only: ``instances`` and
``semantic`` never leave it, so a weakly supervised method (IRNet) trained on
it cannot see a mask.  The labels are read from the wrapped sample (labkit
datasets derive them from the semantic map, :func:`labkit.data.base.image_labels`);
a dataset without them raises :class:`~labkit.errors.DataError`.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
from torch.utils.data import Dataset

from labkit.errors import DataError

KEPT = ("image", "labels", "name")


class ImageLabels(Dataset):
    """``dataset`` seen through image-level labels only.

    ``augment=False`` drops the wrapped dataset's own ``transform`` (for
    inference on the training images: CAMs, pseudo labels); ``transform`` is
    applied to the weak sample (image + any extra spatial maps the caller adds).
    Class metadata (``class_names``, ``num_classes``, ``things``, ``stuff``,
    ``in_channels``) is forwarded.
    """

    def __init__(
        self, dataset: Any, *, augment: bool = True, transform: Optional[Callable[[dict], dict]] = None
    ) -> None:
        if not augment and getattr(dataset, "transform", None) is not None:
            dataset = copy.copy(dataset)
            dataset.transform = None
        self.dataset = dataset
        self.transform = transform
        for name in ("class_names", "things", "stuff", "in_channels"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))
        if len(dataset) == 0:
            raise DataError("the dataset is empty (0 samples)")
        self[0]  # fail early on data without labels

    @property
    def num_classes(self) -> int:
        if hasattr(self.dataset, "num_classes"):
            return int(self.dataset.num_classes)
        return int(self[0]["labels"].numel())

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        if hasattr(self.dataset, "name"):
            return str(self.dataset.name(index))
        return str(self[index].get("name", index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        labels = sample.get("labels")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise DataError(
                f"sample {sample.get('name', index)!r} has no image-level 'labels' (a multi-hot [K] tensor): "
                "a weakly supervised method needs them; labkit datasets derive them from a semantic map, "
                "so give the data semantic masks (DIR/semantic/) or class labels"
            )
        if labels.numel() < 2:
            raise DataError(f"sample {sample.get('name', index)!r}: 'labels' has no foreground class (K < 2)")
        weak = {key: sample[key] for key in KEPT if key in sample}
        weak["labels"] = labels.float()
        if self.transform is not None:
            weak = self.transform(weak)
        return weak
