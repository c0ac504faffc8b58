"""COCO JSON reader: polygons, compressed and uncompressed RLE, crowd regions, category mapping."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from labkit.data import CocoDataset, load_dataset
from labkit.errors import DataError

H, W = 24, 32


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _write(tmp_path: Path, images_subdir: str = "images") -> Path:
    root = tmp_path / "coco"
    (root / images_subdir).mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / images_subdir / "first.png")
    Image.fromarray(np.full((H, W), 50, np.uint8)).save(root / images_subdir / "second.jpg")
    big = np.zeros((H, W), bool)
    big[2:20, 2:20] = True
    small = np.zeros((H, W), bool)
    small[5:10, 5:10] = True  # inside big: must stay visible
    crowd = np.zeros((H, W), bool)
    crowd[0:6, 24:32] = True
    grass = np.zeros((H, W), bool)
    grass[18:24, :] = True
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": _rle(big), "area": 324},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0,
         "segmentation": [[5, 5, 10, 5, 10, 10, 5, 10]], "area": 25},  # polygon x,y
        {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1, "segmentation": _uncompressed_rle(crowd), "area": 48},
        {"id": 4, "image_id": 1, "category_id": 10, "iscrowd": 0, "segmentation": _rle(grass), "area": 192},
        {"id": 5, "image_id": 2, "category_id": 3, "iscrowd": 0, "segmentation": _rle(small), "area": 25},
    ]
    data = {
        "images": [{"id": 2, "file_name": "second.jpg", "height": H, "width": W},
                   {"id": 1, "file_name": "first.png", "height": H, "width": W}],
        "categories": [{"id": 10, "name": "grass", "isthing": 0}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": anns,
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_polygons_rle_crowd_and_stuff(tmp_path):
    ds = load_dataset(_write(tmp_path))
    assert isinstance(ds, CocoDataset) and len(ds) == 2 and ds.in_channels == 3
    assert ds.class_names == ["background", "cat", "dog", "grass"]
    assert ds.things == [1, 2] and ds.stuff == [3]
    first = ds[0]
    assert first["name"] == "first"
    inst, sem = first["instances"], first["semantic"]
    dog, cat = inst[15, 15].item(), inst[7, 7].item()
    assert dog > 0 and cat > 0 and dog != cat  # the small cat is drawn over the big dog
    assert sem[15, 15] == 2 and sem[7, 7] == 1
    assert (inst[0:6, 24:32] == 0).all() and (sem[0:6, 24:32] == 255).all()  # crowd ignored
    assert (inst[21:24, 25:32] == 0).all() and (sem[21:24, 25:32] == 3).all()  # stuff: class, no instance
    assert (inst[19, 2:20] == dog).all()  # things win over stuff where they overlap
    assert set(inst.unique().tolist()) == {0, dog, cat}
    second = ds[1]
    assert second["image"].shape == (3, H, W) and (second["instances"] > 0).sum() == 25


def test_image_dir_is_found_or_named(tmp_path):
    path = _write(tmp_path, images_subdir="pictures")
    with pytest.raises(DataError, match="first.png"):
        CocoDataset(path)
    assert len(CocoDataset(path, image_dir=path.parent / "pictures")) == 2


def test_bad_annotation_files(tmp_path):
    with pytest.raises(DataError, match="missing.json"):
        load_dataset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_dataset(bad)
    path = _write(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="99"):
        CocoDataset(path)
