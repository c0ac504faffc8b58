"""The instance-folder reader on real files (PNG 8/16-bit, TIFF, JPEG, 1/3/4 channels).

Every bad input raises DataError naming its file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from labkit.data import ImageFolder, InstanceFolder, load_dataset, load_images
from labkit.data.classes import parse_classes
from labkit.errors import DataError

H, W = 20, 24


def _mask(ids=(1, 2)) -> np.ndarray:
    m = np.zeros((H, W), np.int64)
    m[2:8, 3:10] = ids[0]
    m[10:18, 12:22] = ids[1]
    return m


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


@pytest.fixture
def mixed(tmp_path) -> Path:
    """One file per supported kind: 8/16-bit PNG, JPEG, RGBA, TIFF (uint16 grey, uint16 RGB, float)."""
    root = _folder(tmp_path)
    rng = np.random.default_rng(0)
    img, msk = root / "images", root / "masks"
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(img / "a_png8.png")
    Image.fromarray(_mask().astype(np.uint8)).save(msk / "a_png8.png")
    g16 = (rng.random((H, W)) * 4000 + 1000).astype(np.uint16)
    Image.fromarray(g16).save(img / "b_png16.png")
    Image.fromarray(_mask((300, 70000 % 65536)).astype(np.uint16)).save(msk / "b_png16.png")
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(img / "c_rgb.jpg", quality=95)
    Image.fromarray(_mask().astype(np.uint8)).save(msk / "c_rgb.png")
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(img / "d_rgba.png")
    Image.fromarray(_mask().astype(np.uint8)).save(msk / "d_rgba.png")
    tifffile.imwrite(img / "e_tif16.tif", g16)
    tifffile.imwrite(msk / "e_tif16.tiff", _mask((5, 9)).astype(np.int32))
    tifffile.imwrite(
        img / "f_rgb16.tiff", (rng.random((3, H, W)) * 60000).astype(np.uint16),
        photometric="rgb", planarconfig="separate",
    )
    tifffile.imwrite(msk / "f_rgb16.tif", _mask().astype(np.float32))  # integer-valued float mask is fine
    tifffile.imwrite(img / "g_float.tif", rng.random((H, W)).astype(np.float32))
    tifffile.imwrite(msk / "g_float.tif", _mask().astype(np.uint16))
    Image.fromarray((rng.random((H, W)) * 255).astype(np.uint8)).save(img / "h_grey.jpeg")
    Image.fromarray(_mask().astype(np.uint8)).save(msk / "h_grey.png")
    return root


def test_reads_every_kind_of_file(mixed):
    ds = InstanceFolder(mixed)
    assert ds.names == ["a_png8", "b_png16", "c_rgb", "d_rgba", "e_tif16", "f_rgb16", "g_float", "h_grey"]
    assert ds.in_channels == 3 and ds.class_names == ["background", "object"] and ds.things == [1]
    samples = {ds.name(i): ds[i] for i in range(len(ds))}
    for name, s in samples.items():
        assert s["name"] == name and s["image"].shape == (3, H, W) and s["image"].dtype == torch.float32
        assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert s["instances"].dtype == torch.int64 and s["instances"].shape == (H, W)
        assert torch.equal(s["semantic"], (s["instances"] > 0).long())
    assert torch.all(samples["a_png8"]["image"] == 1.0)  # uint8 / 255, grey repeated to 3 channels
    assert set(samples["b_png16"]["instances"].unique().tolist()) == {0, 300, 70000 % 65536}  # ids kept
    assert set(samples["e_tif16"]["instances"].unique().tolist()) == {0, 5, 9}
    b = samples["b_png16"]["image"][0]
    assert b.min() == 0.0 and b.max() == 1.0 and (b == 1.0).float().mean() < 0.02  # percentiles 1-99.8
    assert torch.equal(samples["b_png16"]["image"], samples["e_tif16"]["image"])  # PNG16 == TIFF16
    d = samples["d_rgba"]["image"]
    assert torch.allclose(d[0], torch.tensor(200 / 255)) and torch.all(d[1:] == 0)  # alpha dropped
    f = samples["f_rgb16"]["image"]
    assert not torch.equal(f[0], f[1])  # channels-first TIFF read as 3 real channels
    g = tifffile.imread(mixed / "images" / "g_float.tif")
    assert torch.allclose(samples["g_float"]["image"][0], torch.from_numpy(g))  # [0,1] floats kept


def test_grey_only_folder_has_one_channel(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "images" / "x.png")
    Image.fromarray(_mask().astype(np.uint8)).save(root / "masks" / "x.png")
    ds = load_dataset(root)
    assert isinstance(ds, InstanceFolder) and ds.in_channels == 1 and ds[0]["image"].shape == (1, H, W)


def test_semantic_folder_and_classes_json(tmp_path):
    root = _folder(tmp_path)
    (root / "semantic").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "x.png")
    Image.fromarray(_mask().astype(np.uint8)).save(root / "masks" / "x.png")
    sem = np.where(_mask() == 1, 1, np.where(_mask() == 2, 2, 3)).astype(np.uint8)
    sem[0, 0] = 255
    Image.fromarray(sem).save(root / "semantic" / "x.png")
    (root / "classes.json").write_text(json.dumps({"classes": ["cell", "nucleus", "medium"], "stuff": ["medium"]}))
    ds = InstanceFolder(root)
    assert ds.class_names == ["background", "cell", "nucleus", "medium"]
    assert ds.things == [1, 2] and ds.stuff == [3]
    s = ds[0]
    assert s["semantic"][0, 0] == 255 and s["semantic"][5, 5] == 1 and s["semantic"][15, 15] == 2
    assert s["labels"].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_classes_json_forms():
    p = Path("classes.json")
    assert parse_classes(["cell"], p).names == ["background", "cell"]
    info = parse_classes(["Background", "a", "b"], p)
    assert info.names == ["Background", "a", "b"] and info.things == [1, 2] and info.stuff == []
    info = parse_classes({"classes": ["a", "b", "c"], "things": [1], "stuff": ["b"]}, p)
    assert info.things == [1] and info.stuff == [2]
    bad_specs = ({"classes": []}, {"classes": ["a"], "stuff": ["zz"]}, ["a", "a"],
                 {"classes": ["a"], "things": [1], "stuff": [1]})
    for bad in bad_specs:
        with pytest.raises(DataError, match="classes.json"):
            parse_classes(bad, p)


def _simple(root: Path, names=("x",)) -> None:
    for n in names:
        Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "images" / f"{n}.png")
        Image.fromarray(_mask().astype(np.uint8)).save(root / "masks" / f"{n}.png")


def test_image_without_mask_names_it(tmp_path):
    root = _folder(tmp_path)
    _simple(root)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "images" / "lonely.tif")
    with pytest.raises(DataError, match="lonely"):
        InstanceFolder(root)


def test_fractional_float_mask_names_the_file(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "images" / "soft.png")
    tifffile.imwrite(root / "masks" / "soft.tif", (_mask() * 0.5).astype(np.float32))
    ds = InstanceFolder(root)
    with pytest.raises(DataError, match=r"soft\.tif.*non-integer value 0\.5"):
        ds[0]


def test_size_mismatch_names_both_files(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "images" / "big.png")
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(root / "masks" / "big.png")
    with pytest.raises(DataError, match=r"big\.png.*20x24.*masks/big\.png is 21x24"):
        InstanceFolder(root)


def test_empty_and_missing_folders(tmp_path):
    root = _folder(tmp_path)
    (root / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="contains no images"):
        InstanceFolder(root)
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="unrecognised dataset layout"):
        load_dataset(tmp_path / "flat")
    (tmp_path / "only_images" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="missing folder masks"):
        InstanceFolder(tmp_path / "only_images")


def test_unreadable_file_names_it(tmp_path):
    root = _folder(tmp_path)
    _simple(root)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG garbage")
    Image.fromarray(_mask().astype(np.uint8)).save(root / "masks" / "broken.png")
    with pytest.raises(DataError, match=r"broken\.png"):
        InstanceFolder(root)


def test_colour_mask_and_bad_semantic_are_rejected(tmp_path):
    root = _folder(tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "images" / "rgbmask.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "masks" / "rgbmask.png")
    with pytest.raises(DataError, match=r"rgbmask\.png.*single-channel"):
        InstanceFolder(root)[0]
    root2 = _folder(tmp_path / "two")
    _simple(root2)
    (root2 / "semantic").mkdir()
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(root2 / "semantic" / "x.png")
    with pytest.raises(DataError, match=r"semantic/x\.png: class 7"):
        InstanceFolder(root2)[0]


def test_split_subfolder_and_image_folder(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        _simple(root / split, names=(f"{split}_a", f"{split}_b"))
    assert load_dataset(root, split="test").names == ["test_a", "test_b"]
    images = load_images(root / "train")
    assert isinstance(images, ImageFolder) and len(images) == 2 and images.name(1) == "train_b"
    s = images[0]
    assert set(s) == {"image", "name"} and s["image"].shape == (1, H, W)
