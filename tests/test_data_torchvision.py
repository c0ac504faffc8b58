"""Pascal VOC, SBD and Cityscapes through torchvision, on tiny fake trees in their real on-disk layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from labkit.data import CityscapesInstances, SBDInstances, VOCInstances, load_dataset
from labkit.errors import DataError

H, W = 16, 20


def _palette_png(arr: np.ndarray, path: Path) -> None:
    img = Image.fromarray(arr.astype(np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    img.save(path)


def _voc_maps() -> tuple[np.ndarray, np.ndarray]:
    obj = np.zeros((H, W), np.uint8)
    obj[2:8, 2:9] = 1
    obj[9:15, 10:18] = 2
    obj[2:8, 12:18] = 3
    cls = np.zeros((H, W), np.uint8)
    cls[obj == 1], cls[obj == 2], cls[obj == 3] = 15, 15, 12  # two persons, one dog
    border = np.zeros((H, W), bool)
    border[1, 2:9] = border[8, 2:9] = True
    obj[border], cls[border] = 255, 255
    return obj, cls


@pytest.fixture
def voc(tmp_path) -> Path:
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    obj, cls = _voc_maps()
    for name in ("2007_000032", "2007_000039"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        _palette_png(cls, base / "SegmentationClass" / f"{name}.png")
        _palette_png(obj, base / "SegmentationObject" / f"{name}.png")
    (base / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("2007_000039\n")
    return tmp_path


def test_voc_objects_classes_and_void(voc):
    ds = VOCInstances(voc, split="train")
    assert len(ds) == 1 and ds.name(0) == "2007_000032"
    assert ds.num_classes == 21 and ds.class_names[15] == "person" and ds.things == list(range(1, 21))
    s = ds[0]
    obj, cls = _voc_maps()
    assert s["image"].shape == (3, H, W)
    assert torch.equal(s["instances"], torch.from_numpy(np.where(obj == 255, 0, obj).astype(np.int64)))
    assert torch.equal(s["semantic"], torch.from_numpy(cls.astype(np.int64)))
    assert (s["semantic"][1, 2:9] == 255).all() and (s["instances"][1, 2:9] == 0).all()
    assert s["labels"].nonzero().flatten().tolist() == [12, 15]
    # the same tree through load_dataset, from the root, the devkit or the year folder; test -> val
    for path in (voc, voc / "VOCdevkit", voc / "VOCdevkit" / "VOC2012"):
        assert load_dataset(path, split="val").name(0) == "2007_000039"
    assert load_dataset(voc, split="test").name(0) == "2007_000039"


def test_voc_missing_split_is_a_data_error(voc):
    with pytest.raises(DataError, match="trainval"):
        VOCInstances(voc, split="trainval")


@pytest.fixture
def sbd(tmp_path) -> Path:
    root = tmp_path / "sbd"
    for d in ("img", "cls", "inst"):
        (root / d).mkdir(parents=True)
    obj, cls = _voc_maps()
    obj[obj == 255], cls[cls == 255] = 0, 0  # SBD has no void border
    Image.fromarray(np.full((H, W, 3), 30, np.uint8)).save(root / "img" / "2008_000002.jpg")
    savemat(root / "cls" / "2008_000002.mat", {"GTcls": {"Segmentation": cls, "Boundaries": np.zeros((20, 1), object)}})
    categories = np.array([[15], [15], [12]])
    savemat(root / "inst" / "2008_000002.mat", {"GTinst": {"Segmentation": obj, "Categories": categories}})
    (root / "train.txt").write_text("2008_000002\n")
    return root


def test_sbd_instances_from_mat_files(sbd):
    ds = load_dataset(sbd)
    assert isinstance(ds, SBDInstances) and len(ds) == 1
    s = ds[0]
    obj, cls = _voc_maps()
    assert set(s["instances"].unique().tolist()) == {0, 1, 2, 3}
    assert s["semantic"][3, 3] == 15 and s["semantic"][3, 14] == 12 and s["instances"][3, 14] == 3
    assert s["name"] == "2008_000002"


def _cityscapes_tree(root: Path, split: str = "train") -> None:
    img_dir = root / "leftImg8bit" / split / "aachen"
    gt_dir = root / "gtFine" / split / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    labels = np.full((H, W), 7, np.uint8)  # road
    labels[:4] = 23  # sky
    labels[0, :5] = 0  # unlabeled (void)
    labels[6:12, 2:8] = 26  # car
    labels[6:12, 12:18] = 24  # person
    labels[13:16, 0:6] = 26  # a car group (no instance id)
    labels[13:16, 10:14] = 29  # caravan: has instances but is not evaluated
    inst = labels.astype(np.uint16).copy()
    inst[6:12, 2:5] = 26000
    inst[6:12, 5:8] = 26001
    inst[6:12, 12:18] = 24002
    inst[13:16, 10:14] = 29000
    for stem in ("aachen_000001_000019", "aachen_000000_000019"):
        Image.fromarray(np.full((H, W, 3), 60, np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
        Image.fromarray(inst).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
        Image.fromarray(labels).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(gt_dir / f"{stem}_gtFine_color.png")
        (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": H, "imgWidth": W, "objects": []}))


def test_cityscapes_conversion(tmp_path):
    _cityscapes_tree(tmp_path)
    ds = load_dataset(tmp_path)
    assert isinstance(ds, CityscapesInstances) and len(ds) == 2
    assert [ds.name(i) for i in range(2)] == ["aachen_000000_000019", "aachen_000001_000019"]  # sorted
    assert ds.num_classes == 20 and ds.class_names[1] == "road" and ds.class_names[14] == "car"
    assert ds.things == list(range(12, 20)) and ds.stuff == list(range(1, 12))
    s = ds[0]
    inst, sem = s["instances"], s["semantic"]
    assert set(inst.unique().tolist()) == {0, 1, 2, 3}  # 24002, 26000, 26001 -> 1, 2, 3
    assert inst[8, 13] == 1 and inst[8, 3] == 2 and inst[8, 6] == 3
    assert sem[8, 13] == 12 and sem[8, 3] == 14 and sem[10, 10] == 1 and sem[2, 10] == 11
    assert sem[0, 0] == 255  # void
    assert (sem[13:16, 0:6] == 255).all() and (inst[13:16, 0:6] == 0).all()  # crowd group ignored
    assert (sem[13:16, 10:14] == 255).all() and (inst[13:16, 10:14] == 0).all()  # caravan not evaluated


def test_cityscapes_missing_split_is_a_data_error(tmp_path):
    _cityscapes_tree(tmp_path, split="train")
    with pytest.raises(DataError, match="val"):
        CityscapesInstances(tmp_path, split="val")
