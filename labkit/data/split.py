"""Hold out validation images from a training folder, deterministically.

``labkit train`` on an instance folder without a ``val`` folder beside it
validates on a few of its own images: :func:`validation_split` picks them
from the sorted image names with a fixed generator, so the same folder
always gives the same split (whatever the training seed), and the two parts
never share an image.  :class:`Subset` is a view of some samples of a
dataset that keeps its class metadata (``torch.utils.data.Subset`` drops it).
"""
from __future__ import annotations

import zlib
from typing import Optional, Sequence

import numpy as np

from labkit.data.base import SegmentationDataset, Transform
from labkit.data.contract import Sample
from labkit.errors import DataError

#: fraction of a folder's images held out for validation
VAL_FRACTION = 0.15
#: folders with fewer images keep every image for training (one held out of two halves the data)
MIN_IMAGES_FOR_SPLIT = 3


def validation_split(
    names: Sequence[str], fraction: float = VAL_FRACTION, min_images: int = MIN_IMAGES_FOR_SPLIT
) -> tuple[list[int], list[int]]:
    """``(train indices, val indices)`` of ``names``, both sorted, disjoint, together all of them.

    ``round(fraction * n)`` images (at least one) are held out when there are
    at least ``min_images``; none below that.  The choice depends on the set
    of names alone (not their order, not any seed).
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    n = len(names)
    if len(set(names)) != n:
        raise DataError("validation_split: image names must be unique")
    n_val = 0 if n < min_images or fraction == 0.0 else min(n - 1, max(1, round(fraction * n)))
    order = sorted(range(n), key=lambda i: names[i])
    key = zlib.crc32("\n".join(names[i] for i in order).encode())
    picked = np.random.default_rng([key, 0]).permutation(n)[:n_val]
    val = sorted(order[i] for i in picked.tolist())
    chosen = set(val)
    return [i for i in range(n) if i not in chosen], val


class Subset(SegmentationDataset):
    """Samples ``indices`` of ``dataset``, with its class metadata; ``transform`` replaces the dataset's."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int], transform: Optional[Transform] = None):
        super().__init__(transform)
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(dataset)]
        if bad:
            raise DataError(f"subset indices {bad[:5]} out of range for a dataset of {len(dataset)} samples")
        for attr in ("class_names", "things", "stuff", "in_channels"):
            setattr(self, attr, getattr(dataset, attr))

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Sample:
        return self.dataset.load(self.indices[index])

    def name(self, index: int) -> str:
        return self.dataset.name(self.indices[index])

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]
