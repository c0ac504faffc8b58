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


def check_labels_vary(dataset: Any) -> None:
    """:class:`DataError` when every image of ``dataset`` has the same foreground labels.

    A classifier of image-level labels learns where a class is only from
    images that lack it; with identical labels everywhere (one class present
    in every image, as in most microscopy folders) it can fit them with a
    bias and its class activation maps locate nothing.
    """
    weak = dataset if isinstance(dataset, ImageLabels) else ImageLabels(dataset, augment=False)
    first = weak[0]["labels"][1:]
    if any(not torch.equal(weak[i]["labels"][1:], first) for i in range(1, len(weak))):
        return
    names = getattr(weak, "class_names", None)
    present = [names[c + 1] if names and c + 1 < len(names) else str(c + 1) for c in first.nonzero().flatten().tolist()]
    raise DataError(
        f"all {len(weak)} training images have the same image-level labels ({', '.join(present) or 'none'} in "
        "every image): a weakly supervised method learns where a class is from images without it; add images "
        "that lack some class, or train a method that uses the masks (discriminative, recurrent, dvis, hle)"
    )
