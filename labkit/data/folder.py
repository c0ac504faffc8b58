"""The instance-folder reader (DESIGN.md, "User data on disk") and a plain image folder.

Layout::

    DIR/images/NAME.(png|tif|tiff|jpg|jpeg)   any size, 1 or 3 channels (RGBA: alpha dropped),
                                              uint8 (/255), uint16 (percentiles 1-99.8), float
    DIR/masks/NAME.(png|tif|tiff)             same stem, integer instance ids, 0 = background;
                                              ids need not be consecutive
    DIR/semantic/NAME.(png|tif|tiff)          optional: class per pixel, 255 = ignore
    DIR/classes.json                          optional: see ``labkit.data.classes``

Every file is checked when the dataset is opened (names, sizes, readable
headers), so a broken folder fails at once with a :class:`DataError` naming
the file, not halfway through training. Samples carry ``name`` = the stem.
Without ``semantic/`` every instance is class 1 (``semantic = instances > 0``).
In a folder mixing grey and colour images, grey images are repeated to 3 channels.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from labkit.data.base import SegmentationDataset, Transform
from labkit.data.classes import read_classes
from labkit.data.contract import IGNORE_INDEX, Sample
from labkit.data.imread import IMAGE_SUFFIXES, MASK_SUFFIXES, probe_image, probe_size, read_image, read_labels
from labkit.data.normalize import image_to_tensor, labels_to_tensor
from labkit.errors import DataError

log = logging.getLogger(__name__)


def list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` with one of ``suffixes``; duplicate stems are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(f"{folder}: two files share the name {path.stem!r}: {found[path.stem].name}, {path.name}")
        found[path.stem] = path
    return found


def _expected(stem: str, suffixes: tuple[str, ...]) -> str:
    return " or ".join(f"{stem}{s}" for s in suffixes)


def image_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat a 1-channel image to ``channels`` (3) when the dataset mixes grey and colour."""
    return image.expand(channels, -1, -1).contiguous() if image.shape[0] < channels else image


class InstanceFolder(SegmentationDataset):
    """Images with instance masks (and optionally semantic masks) from ``DIR`` (layout above)."""

    def __init__(self, root: str | Path, transform: Optional[Transform] = None) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dataset folder {self.root} does not exist")
        images_dir, masks_dir, semantic_dir = (self.root / d for d in ("images", "masks", "semantic"))
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise DataError(f"{self.root}: missing folder {d.name}/ (expected DIR/images and DIR/masks)")
        images = list_files(images_dir, IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{images_dir} contains no images ({', '.join(IMAGE_SUFFIXES)})")
        masks = list_files(masks_dir, MASK_SUFFIXES)
        missing = [images[s].name for s in images if s not in masks]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) without a mask in {masks_dir}: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} (expected {_expected(Path(missing[0]).stem, MASK_SUFFIXES)})"
            )
        orphans = sorted(set(masks) - set(images))
        if orphans:
            log.warning("%s: %d mask(s) without an image are ignored: %s", masks_dir, len(orphans), orphans[:5])
        semantic = list_files(semantic_dir, MASK_SUFFIXES) if semantic_dir.is_dir() else None
        if semantic is not None:
            lacking = [images[s].name for s in images if s not in semantic]
            if lacking:
                raise DataError(
                    f"{len(lacking)} image(s) without a semantic mask in {semantic_dir}: {', '.join(lacking[:5])}"
                )

        info = read_classes(self.root / "classes.json")
        if semantic is None and len(info.names) > 2:
            raise DataError(
                f"{self.root / 'classes.json'} names {len(info.names) - 1} classes but {semantic_dir} is missing: "
                "per-pixel classes are needed to tell them apart"
            )
        self.class_names, self.things, self.stuff = info.names, info.things, info.stuff
        self.names = list(images)
        self.image_paths = [images[s] for s in self.names]
        self.mask_paths = [masks[s] for s in self.names]
        self.semantic_paths = [semantic[s] for s in self.names] if semantic is not None else None
        self.in_channels = self._check_headers()

    def _check_headers(self) -> int:
        """Check every file's header (readable, matching sizes); return the channel count."""
        channels = 1
        for k, image_path in enumerate(self.image_paths):
            height, width, c = probe_image(image_path)
            channels = max(channels, c)
            others = [self.mask_paths[k]] + ([self.semantic_paths[k]] if self.semantic_paths else [])
            for other in others:
                size = probe_size(other)
                if size != (height, width):
                    raise DataError(
                        f"{self.names[k]}: image {image_path.name} is {height}x{width} but "
                        f"{other.parent.name}/{other.name} is {size[0]}x{size[1]}"
                    )
        return channels

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int) -> Sample:
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = image_channels(image_to_tensor(read_image(image_path), str(image_path)), self.in_channels)
        instances = labels_to_tensor(read_labels(mask_path), str(mask_path))
        if tuple(image.shape[1:]) != tuple(instances.shape):
            raise DataError(
                f"{self.names[index]}: image {image_path.name} is {tuple(image.shape[1:])} "
                f"but mask {mask_path.name} is {tuple(instances.shape)}"
            )
        if self.semantic_paths is None:
            semantic = (instances > 0).long()
        else:
            semantic = self._read_semantic(self.semantic_paths[index], tuple(instances.shape))
        return {"image": image, "instances": instances, "semantic": semantic, "name": self.names[index]}

    def _read_semantic(self, path: Path, shape: tuple[int, int]) -> torch.Tensor:
        semantic = labels_to_tensor(read_labels(path), str(path))
        if tuple(semantic.shape) != shape:
            raise DataError(f"{path}: semantic mask is {tuple(semantic.shape)} but the image is {shape}")
        bad = (semantic >= self.num_classes) & (semantic != IGNORE_INDEX)
        if bad.any():
            raise DataError(
                f"{path}: class {int(semantic[bad][0])} is not in 0..{self.num_classes - 1} or {IGNORE_INDEX} "
                f"(classes: {self.class_names})"
            )
        return semantic


class ImageFolder(SegmentationDataset):
    """Images without masks, for prediction: ``DIR/images/*`` if that folder exists, else ``DIR/*``.

    Samples hold ``image`` and ``name`` only (no ground truth), so they are not
    checked against the sample contract.
    """

    def __init__(self, root: str | Path, transform: Optional[Transform] = None) -> None:
        super().__init__(transform)
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist")
        self.root = root / "images" if (root / "images").is_dir() else root
        images = list_files(self.root, IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{self.root} contains no images ({', '.join(IMAGE_SUFFIXES)})")
        self.names = list(images)
        self.image_paths = [images[s] for s in self.names]
        self.in_channels = max(probe_image(p)[2] for p in self.image_paths)
        self.class_names, self.things, self.stuff = ["background", "object"], [1], []

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int) -> Sample:
        path = self.image_paths[index]
        image = image_channels(image_to_tensor(read_image(path), str(path)), self.in_channels)
        return {"image": image, "name": self.names[index]}

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(range(len(self))[index])
        return self.transform(sample) if self.transform is not None else sample
