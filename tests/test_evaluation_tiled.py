"""Sliding-window prediction: tiles stitched without seams; equal to whole-image prediction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import label
from torch import nn

from labkit.errors import LabkitError
from labkit.evaluation import (
    image_windows, needs_tiles, predict_dataset, predict_tiled, stitch_tiles, tile_windows,
)
from labkit.methods.base import Method


class Threshold(Method):
    """Connected components of ``outputs["image"] > 0.5`` (a decoder with no global state)."""

    key = "threshold-test"

    class Params:  # no parameters
        pass

    def __init__(self):
        self.defaults = None

    def decode(self, outputs, **params):
        preds = []
        for img in outputs["image"]:
            lab = torch.from_numpy(label(img[0].numpy() > 0.5, connectivity=1).astype(np.int64))
            n = int(lab.max())
            preds.append({"instances": lab, "ids": torch.arange(1, n + 1), "classes": torch.full((n,), 1),
                          "scores": torch.linspace(0.5, 1.0, n) if n else torch.zeros(0)})
        return preds


class Blur(nn.Module):
    """A 5 x 5 box filter with zero padding: the output near a tile border differs from the whole image's."""

    def forward(self, x):
        return {"image": nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal instance maps up to a renaming of the ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def scene(size=96, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(12):  # blobs between the structures below
        cy, cx, r = rng.uniform(14, size - 10), rng.uniform(50, 80), rng.uniform(2, 5)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    if size >= 96:
        img[4:8, 5:90] = 1.0  # a bar across every column of tiles
        img[14:90, 88:92] = 1.0  # and one across every row
        img[70:74, 20:44] = 1.0  # a U whose arms join only low down, out of the upper tiles
        img[30:74, 20:24] = 1.0
        img[30:74, 40:44] = 1.0
    return torch.from_numpy(img)[None]


def test_windows_cover_the_image_with_overlap():
    windows = tile_windows((96, 80), 32, overlap=8)
    cover = np.zeros((96, 80), int)
    for y, x, h, w in windows:
        assert (h, w) == (32, 32)
        cover[y:y + h, x:x + w] += 1
    assert cover.min() >= 1
    ys = sorted({w[0] for w in windows})
    assert ys[0] == 0 and ys[-1] == 96 - 32 and all(b - a <= 32 - 8 for a, b in zip(ys, ys[1:]))
    assert tile_windows((20, 100), 32) == [(0, x, 20, 32) for x in (0, 24, 48, 68)]
    assert needs_tiles((96, 80), 32) and not needs_tiles((32, 32), 32)
    with pytest.raises(LabkitError, match="overlap"):
        tile_windows((96, 96), 32, overlap=32)
    with pytest.raises(LabkitError, match="tile size"):
        tile_windows((96, 96), 0)


@pytest.mark.parametrize("model", [nn.Identity(), Blur()], ids=["pointwise", "blur"])
def test_tiled_equals_whole_image_for_an_image_three_times_the_crop(model):
    wrapped = model if isinstance(model, Blur) else _Wrap()
    image = scene()
    whole = Threshold().decode(wrapped(image[None]))[0]["instances"].numpy()
    tiled = predict_tiled(Threshold(), wrapped, image, 32, overlap=16)
    assert same_partition(tiled["instances"].numpy(), whole)
    # the bars and the U cross tile borders and stay one instance each
    ids = tiled["instances"].numpy()
    assert len(np.unique(ids[6, 8:86])) == 1 and len(np.unique(ids[18:86, 90])) == 1
    assert ids[6, 8] != ids[50, 90] and 0 not in (ids[6, 8], ids[50, 90])
    assert ids[32, 22] == ids[32, 42] != 0
    assert len(np.unique(ids)) >= 6
    assert tiled["ids"].tolist() == sorted(np.unique(ids[ids > 0]).tolist())
    assert len(tiled["classes"]) == len(tiled["scores"]) == len(tiled["ids"])


class _Wrap(nn.Module):
    def forward(self, x):
        return {"image": x}


def test_tiles_that_disagree_at_their_border_stitch_by_ownership():
    """Tile A cuts an object in two near its edge, tile B sees it whole: B's pieces win where B owns them."""
    a = np.zeros((8, 12), np.int64)
    b = np.zeros((8, 12), np.int64)
    a[2:6, 4:8] = 1  # an object in the overlap (columns 4..11 of A = columns 0..7 of B)
    a[2:6, 8:12] = 2  # A splits it (its border region)
    b[2:6, 0:8] = 5  # B sees one object
    preds = [
        {"instances": torch.from_numpy(a), "ids": torch.tensor([1, 2]), "classes": torch.tensor([1, 1]),
         "scores": torch.tensor([0.9, 0.8])},
        {"instances": torch.from_numpy(b), "ids": torch.tensor([5]), "classes": torch.tensor([1]),
         "scores": torch.tensor([0.7])},
    ]
    out = stitch_tiles(preds, [(0, 0, 8, 12), (0, 4, 8, 12)])
    inst = out["instances"].numpy()
    assert inst.shape == (8, 16)
    assert len(np.unique(inst[2:6, 4:12])) == 1 and inst[3, 5] > 0  # one object: both of A's pieces link to B's
    assert out["ids"].tolist() == [1]


def test_link_band_keeps_a_merge_at_one_tiles_border_from_spreading():
    """Objects X (columns 1-5) and Y (6-13) touch; tile B (columns 4-15) merges them at its left border.

    Over the whole overlap (columns 4-11) both of A's instances link to B's merged one; with ``link_band=1``
    only columns 7-8 (around the cut at 8) are compared, where A and B agree on Y.
    """
    a = np.zeros((8, 12), np.int64)
    b = np.zeros((8, 12), np.int64)
    a[2:6, 1:6], a[2:6, 6:12] = 1, 2  # A: X and Y apart
    b[2:6, 0:10] = 7  # B: X's visible columns 4-5 and Y as one
    preds = [
        {"instances": torch.from_numpy(a), "ids": torch.tensor([1, 2]), "classes": torch.tensor([1, 1]),
         "scores": torch.tensor([0.9, 0.8])},
        {"instances": torch.from_numpy(b), "ids": torch.tensor([7]), "classes": torch.tensor([1]),
         "scores": torch.tensor([0.7])},
    ]
    windows = [(0, 0, 8, 12), (0, 4, 8, 12)]
    merged = stitch_tiles(preds, windows, link_band=None)["instances"].numpy()
    assert merged[3, 2] == merged[3, 12] > 0  # the whole overlap: X and Y one instance
    inst = stitch_tiles(preds, windows, link_band=1)["instances"].numpy()
    assert inst[3, 2] > 0 and inst[3, 6] == inst[3, 12] > 0 and inst[3, 2] != inst[3, 6]
    assert len(np.unique(inst[inst > 0])) == 2
    with pytest.raises(LabkitError):
        stitch_tiles(preds, windows, link_band=-1)


def test_predict_dataset_tiles_only_large_images():
    method, model = Threshold(), _Wrap()
    data = [{"image": scene(96)}, {"image": scene(24, seed=1)}]
    tiled, _ = predict_dataset(method, model, data, tile=32, progress=False)
    whole, _ = predict_dataset(method, model, data, progress=False)
    for t, w in zip(tiled, whole):
        assert same_partition(t["instances"].numpy(), w["instances"].numpy())


def test_image_windows_only_for_images_larger_than_the_tile():
    assert image_windows((64, 64), 64) is None and image_windows((300, 200), None) is None
    assert image_windows((300, 200), 128) == tile_windows((300, 200), 128)
    assert image_windows((64, 130), 64, overlap=8) == tile_windows((64, 130), 64, 8)
    with pytest.raises(LabkitError, match="tile size must be positive"):
        image_windows((64, 64), 0)
