"""Deterministic synthetic scene families, generated on the fly per index.

``SyntheticScenes(family, split)`` is a dataset of ``num_samples`` scenes;
scene ``i`` is drawn from a random generator seeded by ``(family, split, i,
seed)`` alone, so it is identical on every call, in every process and worker,
and the ``train`` / ``val`` / ``test`` splits never share a scene.

Families (:data:`FAMILIES`): ``shapes``, ``sticks``, ``digits``, ``panoptic``, ``nuclei``.
Defaults: 64 x 64 scenes; 400 train, 50 val, 50 test samples.
"""
from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import torch

from labkit.data.base import SegmentationDataset, Transform
from labkit.data.contract import Sample
from labkit.data.synthetic import digits, nuclei, panoptic, shapes, sticks
from labkit.data.synthetic.family import Family, Scene
from labkit.errors import DataError, UnknownKeyError

FAMILIES: dict[str, Family] = {
    f.name: f for f in (shapes.FAMILY, sticks.FAMILY, digits.FAMILY, panoptic.FAMILY, nuclei.FAMILY)
}
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = 64
DEFAULT_NUM_SAMPLES = {"train": 400, "val": 50, "test": 50}


def get_family(name: str) -> Family:
    """The family called ``name``; :class:`UnknownKeyError` lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownKeyError(
            f"unknown synthetic family {name!r}; known families: {', '.join(FAMILIES)}"
        ) from None


def scene_rng(family: str, split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of scene ``index``: a stable hash of ``(family, split)``, the index and ``seed``."""
    key = zlib.crc32(f"{family}/{split}".encode())
    return np.random.default_rng([key, index, seed])


class SyntheticScenes(SegmentationDataset):
    """A split of a synthetic family as a dataset of contract samples.

    Args:
        family: one of :data:`FAMILIES`.
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint seeds).
        num_samples: scenes in the split (default 400 train, 50 val/test).
        size: side ``S`` or ``(H, W)`` of every scene (default 64).
        transform: a joint transform applied to every sample.
        seed: a different ``seed`` gives a different (equally deterministic) dataset.
    """

    def __init__(
        self,
        family: str = "shapes",
        split: str = "train",
        num_samples: Optional[int] = None,
        size: Optional[int | tuple[int, int]] = None,
        transform: Optional[Transform] = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transform)
        self.family = get_family(family)
        if split not in SPLITS:
            raise UnknownKeyError(f"unknown split {split!r} for synthetic:{family}; known splits: {', '.join(SPLITS)}")
        self.split = split
        self.num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else int(num_samples)
        if self.num_samples < 0:
            raise DataError(f"num_samples must be >= 0, got {num_samples}")
        size = DEFAULT_SIZE if size is None else size
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        if min(self.height, self.width) < 16:
            raise DataError(f"synthetic scenes must be at least 16 x 16 pixels, got {size}")
        self.seed = seed
        self.class_names = list(self.family.class_names)
        self.things = list(self.family.things)
        self.stuff = list(self.family.stuff)
        self.in_channels = self.family.in_channels

    def __len__(self) -> int:
        return self.num_samples

    def scene(self, index: int) -> Scene:
        """The raw numpy scene ``index`` (no transform)."""
        rng = scene_rng(self.family.name, self.split, index, self.seed)
        return self.family.generate(rng, self.height, self.width, self.split)

    def name(self, index: int) -> str:
        return f"{self.family.name}_{self.split}_{index:05d}"

    def load(self, index: int) -> Sample:
        scene = self.scene(index)
        return {
            "image": torch.from_numpy(scene.image),
            "instances": torch.from_numpy(scene.instances),
            "semantic": torch.from_numpy(scene.semantic),
            "name": self.name(index),
        }

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes({self.family.name!r}, split={self.split!r}, num_samples={self.num_samples}, "
            f"size=({self.height}, {self.width}))"
        )


__all__ = ["FAMILIES", "SPLITS", "Family", "Scene", "SyntheticScenes", "get_family", "scene_rng"]
