"""COCO-style instance annotations (a JSON file + an image folder) via pycocotools.

- Segmentations may be polygons, uncompressed RLE or compressed RLE.
- Category ids (any integers) map to contiguous classes ``1..K`` in
  ascending id order; ``class_names[k]`` is the category's ``name``.
- Categories with ``"isthing": 0`` (COCO panoptic style) are stuff: their
  pixels get the class in ``semantic`` and no instance. All others are things.
- ``iscrowd`` regions are ignored: ``semantic`` 255 (unless a regular
  instance covers the pixel), instance id 0.
- Overlapping instances: larger ones are drawn first, so smaller ones stay visible.
- Images are read as 3 channels (grey images repeated).

The image folder defaults to the first of ``JSON_DIR``, ``JSON_DIR/images``,
``JSON_DIR/../images`` and ``JSON_DIR/../<split>`` (``<split>`` from a name
like ``instances_val2017.json``) that holds the first image; pass
``image_dir`` to choose.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from labkit.data.base import SegmentationDataset, Transform
from labkit.data.contract import IGNORE_INDEX, Sample
from labkit.data.folder import image_channels
from labkit.data.imread import read_image
from labkit.data.normalize import image_to_tensor
from labkit.errors import DataError


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"COCO annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read COCO annotation file {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO annotation file (no 'images' list)")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DataError(f"{path}: no 'categories' in the COCO annotation file")
    data.setdefault("annotations", [])
    return data


def _image_dir_candidates(annotation_file: Path) -> list[Path]:
    parent = annotation_file.parent
    split = annotation_file.stem.split("_")[-1]
    return [parent, parent / "images", parent.parent / "images", parent.parent / split]


class CocoDataset(SegmentationDataset):
    """Instances from a COCO JSON file (see the module docstring)."""

    def __init__(
        self, annotation_file: str | Path, image_dir: Optional[str | Path] = None,
        transform: Optional[Transform] = None,
    ) -> None:
        from pycocotools.coco import COCO

        super().__init__(transform)
        self.annotation_file = Path(annotation_file)
        data = _load_json(self.annotation_file)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_to_class = {c["id"]: k + 1 for k, c in enumerate(categories)}
        self.class_names = ["background", *(str(c.get("name", c["id"])) for c in categories)]
        self.things = [self.category_to_class[c["id"]] for c in categories if c.get("isthing", 1)]
        self.stuff = [self.category_to_class[c["id"]] for c in categories if not c.get("isthing", 1)]
        self.in_channels = 3
        self.image_ids = [img["id"] for img in sorted(data["images"], key=lambda i: i["id"])]
        if not self.image_ids:
            raise DataError(f"{self.annotation_file}: the COCO file lists no images")
        unknown = {a["category_id"] for a in data["annotations"]} - set(self.category_to_class)
        if unknown:
            raise DataError(f"{self.annotation_file}: annotations use unknown category ids {sorted(unknown)}")
        self.image_dir = self._find_image_dir(image_dir)

    def _find_image_dir(self, image_dir: Optional[str | Path]) -> Path:
        first = self.coco.imgs[self.image_ids[0]]["file_name"]
        if image_dir is not None:
            image_dir = Path(image_dir)
            if not (image_dir / first).is_file():
                raise DataError(f"COCO image {first} not found in {image_dir}")
            return image_dir
        candidates = _image_dir_candidates(self.annotation_file)
        for folder in candidates:
            if (folder / first).is_file():
                return folder
        raise DataError(
            f"COCO image {first} (listed in {self.annotation_file.name}) not found in "
            f"{', '.join(str(c) for c in candidates)}; pass image_dir="
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def name(self, index: int) -> str:
        return Path(self.coco.imgs[self.image_ids[index]]["file_name"]).stem

    def load(self, index: int) -> Sample:
        info = self.coco.imgs[self.image_ids[index]]
        path = self.image_dir / info["file_name"]
        image = image_channels(image_to_tensor(read_image(path), str(path)), 3)
        height, width = info["height"], info["width"]
        if tuple(image.shape[1:]) != (height, width):
            raise DataError(
                f"{path}: image is {tuple(image.shape[1:])} but {self.annotation_file.name} says {(height, width)}"
            )
        instances, semantic = self.rasterize(self.coco.imgToAnns[info["id"]], height, width)
        return {
            "image": image,
            "instances": torch.from_numpy(instances),
            "semantic": torch.from_numpy(semantic),
            "name": self.name(index),
        }

    def rasterize(self, annotations: list[dict], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """int64 instance and semantic maps of one image's annotations."""
        instances = np.zeros((height, width), dtype=np.int64)
        semantic = np.zeros((height, width), dtype=np.int64)
        crowd = np.zeros((height, width), dtype=bool)
        with warnings.catch_warnings():  # pycocotools' decode warns about numpy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = [(ann, self.coco.annToMask(ann).astype(bool)) for ann in annotations]

        def order(item: tuple[dict, np.ndarray]) -> tuple[bool, int]:
            # stuff first, then things from the largest down, so small things stay on top
            is_thing = self.category_to_class[item[0]["category_id"]] not in self.stuff
            return is_thing, -int(item[1].sum())

        next_id = 1
        for ann, mask in sorted(masks, key=order):
            cls = self.category_to_class[ann["category_id"]]
            if ann.get("iscrowd", 0):
                crowd |= mask
            elif cls in self.stuff:
                semantic[mask] = cls
            else:
                instances[mask] = next_id
                semantic[mask] = cls
                next_id += 1
        semantic[crowd & (instances == 0)] = IGNORE_INDEX
        return instances, semantic
